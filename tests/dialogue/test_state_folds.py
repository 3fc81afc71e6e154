"""The folds of long conversations' states that cut-off turns left running, kept."""

from __future__ import annotations

import asyncio

from server.dialogue.policies.featurization import DetachedStates
from server.dialogue.state_folds import CutOffFolds
from server.trackers.tracker import Tracker
from tests.dialogue.test_processor_fold import DOMAIN, greetings


def folded(sender_id: str, turns: int) -> DetachedStates:
    states = DetachedStates(Tracker(sender_id, DOMAIN.slot_defaults(), greetings(turns)), DOMAIN)
    states.fold()
    return states


async def test_cut_off_folds_past_the_events_they_may_keep_let_the_oldest_go() -> None:
    # Each kept fold holds its session's states and events (those of a conversation no
    # longer hot too): 8 conversations of 100,000 events kept some 530 MB, for as long as
    # no turn of theirs came. Past the events bound the oldest go; the newest stays.
    ended = asyncio.get_running_loop().create_future()
    ended.set_result(None)
    kept = CutOffFolds(most=8, most_events=5_000)
    for sender_id in ("a", "b", "c"):
        kept.keep(sender_id, folded(sender_id, 700), ended, 2_100)
    assert [await kept.take(s) is not None for s in ("a", "b", "c")] == [False, True, True]
    assert kept.events == 0
    kept.keep("huge", folded("huge", 2_000), ended, 6_000)
    assert len(kept) == 1 and kept.events == 6_000
