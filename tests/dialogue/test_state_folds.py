"""The folds of long conversations' states that cut-off turns left running, kept."""

from __future__ import annotations

import asyncio

import pytest

from server.dialogue import state_folds
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


async def test_a_conversations_fold_kept_again_lets_the_earlier_one_go_off_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The one it replaces is freed in the releasing thread, not dropped on the loop (a
    # session of 100,000 events freed at once held the loop 40 ms).
    released: list[object] = []
    monkeypatch.setattr(state_folds, "release_off_loop", released.append)
    ended = asyncio.get_running_loop().create_future()
    ended.set_result(None)
    kept = CutOffFolds()
    first, second = folded("a", 10), folded("a", 20)
    kept.keep("a", first, ended, 30)
    kept.keep("a", second, ended, 60)
    assert released == [first]
    assert await kept.take("a") is second and kept.events == 0
