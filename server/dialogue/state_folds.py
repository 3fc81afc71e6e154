"""The folds of a long conversation's states that a cut-off turn left running in a thread,
kept for the conversation's next turn to go on from rather than fold the session again."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from functools import partial

from server.dialogue.policies.featurization import DetachedStates
from server.trackers.freeing import release_off_loop

# Conversations whose cut-off fold is kept at most (each a cache of its session's states,
# and its events: those of a conversation no longer hot are kept alive too), and the events
# they folded in all (100,000 events of greetings folded weigh some 66 MB): past either the
# oldest is let go of. The newest stays (its fold is going on anyway).
MOST_KEPT = 8
MOST_KEPT_EVENTS = 100_000


class CutOffFolds:
    """By conversation, the fold a turn cut off left running (`DetachedStates`, and the
    future of its thread). The conversation's next fold takes it once it ended, and goes on
    from the events it folded when the tracker still starts with them (`continue_on`)."""

    def __init__(self, most: int = MOST_KEPT, most_events: int = MOST_KEPT_EVENTS) -> None:
        self.most, self.most_events = most, most_events
        self._folds: OrderedDict[str, tuple[DetachedStates, asyncio.Future[None]]] = OrderedDict()
        self._events: dict[str, int] = {}  # by conversation, the events its fold reads
        self.events = 0  # their sum

    def __len__(self) -> int:
        return len(self._folds)

    def keep(
        self, sender_id: str, states: DetachedStates, folding: asyncio.Future[None], events: int
    ) -> None:
        """Keeps the fold of a turn just cut off (it runs on in its thread), of `events`."""
        _let_go(self._pop(sender_id))
        self._folds[sender_id] = (states, folding)
        self._events[sender_id] = events
        self.events += events
        while len(self._folds) > 1 and (
            len(self._folds) > self.most or self.events > self.most_events
        ):
            _let_go(self._pop(next(iter(self._folds))))

    def _pop(self, sender_id: str) -> tuple[DetachedStates, asyncio.Future[None]] | None:
        self.events -= self._events.pop(sender_id, 0)
        return self._folds.pop(sender_id, None)

    async def take(self, sender_id: str) -> DetachedStates | None:
        """The conversation's kept fold, once its thread ended (awaited here; a caller cut
        off meanwhile leaves it kept); None when there is none or it failed."""
        entry = self._folds.get(sender_id)
        if entry is None:
            return None
        states, folding = entry
        if not folding.done():
            await asyncio.wait([folding])
        if self._folds.get(sender_id) is not entry:
            return None  # let go of meanwhile (the bound), or taken by another caller
        self._pop(sender_id)
        if folding.cancelled() or folding.exception() is not None:
            release_off_loop(states)
            return None
        return states

    def forget_domain(self, domain: object) -> None:
        """Lets go of the folds made for `domain` (a model replaced): none can go on."""
        for sender_id in [s for s, (states, _) in self._folds.items() if states.domain is domain]:
            _let_go(self._pop(sender_id))


def _let_go(entry: tuple[DetachedStates, asyncio.Future[None]] | None) -> None:
    if entry is None:
        return
    states, folding = entry
    if folding.done():
        let_go_of_fold(states, folding)
    else:
        folding.add_done_callback(partial(let_go_of_fold, states))


def let_go_of_fold(states: DetachedStates, folding: asyncio.Future[None]) -> None:
    """Once the fold of a cancelled caller ended: what it folded, nobody's, is freed off the
    loop. What it raised is taken here (nobody awaits it): the next turn folds afresh."""
    if not folding.cancelled():
        folding.exception()
    release_off_loop(states)
