"""Long lists a cache lets go of are freed in a thread only when nobody else holds them."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from server.trackers import freeing
from server.trackers.events import ActionExecuted
from server.trackers.tracker import Tracker


class _StateCache:
    """Stands for what policies keep on a tracker."""

    def __init__(self, events: list[Any]) -> None:
        self.events = list(events)
        self.collapsed = self.events  # one list under two names


def _long_tracker() -> Tracker:
    tracker = Tracker("long")
    tracker.update_many(ActionExecuted(action_name="action_listen") for _ in range(5_000))
    tracker._states = _StateCache(tracker.events)  # type: ignore[attr-defined]
    return tracker


@pytest.fixture
def emptied(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The lengths of the lists emptied (the lists themselves are not kept)."""
    freeing._RELEASER.submit(lambda: None).result()  # what earlier tests let go of
    lengths: list[int] = []
    empty = freeing.empty_in_pieces

    def recording(*lists: list[Any]) -> None:
        lengths.extend(len(items) for items in lists)
        empty(*lists)

    monkeypatch.setattr(freeing, "empty_in_pieces", recording)
    return lengths


async def _settled() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


async def test_a_tracker_nobody_else_holds_has_its_lists_and_its_caches_emptied(
    emptied: list[int],
) -> None:
    freeing.release_off_loop(_long_tracker())
    await _settled()
    assert emptied == [5_000, 5_000]  # its events, its state cache's (under two names)


async def test_a_tracker_or_a_list_still_held_elsewhere_is_not_emptied(
    emptied: list[int],
) -> None:
    """A request still reading the tracker, its events or its cache sees them whole."""
    read = _long_tracker()
    freeing.release_off_loop(read)
    await _settled()
    assert emptied == [] and len(read.events) == 5_000

    tracker = _long_tracker()
    events, cache = tracker.events, tracker._states  # type: ignore[attr-defined]
    freeing.release_off_loop(tracker)
    del tracker
    await _settled()
    assert emptied == []
    assert len(events) == 5_000 and len(cache.events) == 5_000

    tracker = _long_tracker()
    cache_events = tracker._states.events  # type: ignore[attr-defined]
    freeing.release_off_loop(tracker)
    del tracker
    await _settled()
    assert emptied == [5_000]  # the tracker's events only
    assert len(cache_events) == 5_000


async def test_a_list_nobody_else_holds_is_emptied(emptied: list[int]) -> None:
    freeing.release_off_loop([{"event": "action"}] * 2_000)
    await _settled()
    assert emptied == [2_000]


class _Session:
    def __init__(self, events: list[Any]) -> None:
        self.events = events


async def test_what_waits_for_the_thread_is_bounded(emptied: list[int]) -> None:
    """Caches that let go of long sessions faster than the one freeing thread empties them
    (a loaded loop, conversations evicted and reloaded every turn) keep a bounded backlog:
    the rest is freed where it is dropped. Before, every session waited, and a server's RSS
    grew past 1 GB in a few thousand turns."""
    busy = threading.Event()
    freeing._RELEASER.submit(busy.wait)  # the thread behind on other work
    released = []
    try:
        for _ in range(200):  # 2,000 events each: 400,000 in all
            session = _Session([{"event": "action"}] * 2_000)
            released.append(weakref.ref(session))
            freeing.release_off_loop(session)
            del session
        await _settled()
        waiting = sum(ref() is not None for ref in released)
    finally:
        busy.set()
    assert waiting <= 26  # 50,000 events, about 75 MB of event dicts, and one (was 200)
    freeing._RELEASER.submit(lambda: None).result()
    await _settled()
    assert all(ref() is None for ref in released)
    assert 1 <= len(emptied) <= 26


async def test_a_long_conversation_let_go_of_goes_to_the_thread_whatever_its_size(
    emptied: list[int],
) -> None:
    """Its hot tracker, cached session and rows, let go of together: none on the loop."""
    for _ in range(3):
        freeing.release_off_loop(_Session([{"event": "action"}] * 120_000))
    await _settled()
    assert emptied == [120_000] * 3


async def test_a_long_conversation_goes_to_the_thread_while_a_few_shorter_ones_wait(
    emptied: list[int],
) -> None:
    """Sessions of 1,500 events evicted now and then keep a few waiting for the thread; a
    conversation of 100,000 let go of meanwhile still goes to it (freed on the loop, it held
    it about 30 ms), as the thread is far from its bound."""
    busy = threading.Event()
    freeing._RELEASER.submit(busy.wait)
    try:
        for _ in range(4):
            freeing.release_off_loop(_Session([{"event": "action"}] * 1_500))
        freeing.release_off_loop(_Session([{"event": "action"}] * 100_000))
        await asyncio.sleep(0)
    finally:
        busy.set()
    await _settled()
    freeing._RELEASER.submit(lambda: None).result()
    assert sorted(emptied) == [1_500] * 4 + [100_000]  # (was: the four only)


async def test_a_release_that_fails_or_finds_the_thread_gone_is_no_longer_counted(
    emptied: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted as waiting for ever, a few such sessions would have every long one after
    them freed on the loop."""

    def failing(*lists: list[Any]) -> None:
        raise MemoryError

    monkeypatch.setattr(freeing, "empty_in_pieces", failing)
    for _ in range(4):
        freeing.release_off_loop(_Session([{"event": "action"}] * 30_000))
    await _settled()
    freeing._RELEASER.submit(lambda: None).result()
    assert (freeing._waiting, freeing._waiting_owners) == (0, 0)

    gone = ThreadPoolExecutor(max_workers=1)
    gone.shutdown()
    monkeypatch.setattr(freeing, "_RELEASER", gone)  # as at the interpreter's exit
    for _ in range(4):
        freeing.release_off_loop(_Session([{"event": "action"}] * 30_000))
    await _settled()
    assert (freeing._waiting, freeing._waiting_owners) == (0, 0)


async def test_a_forked_child_has_nothing_waiting_and_a_free_count(emptied: list[int]) -> None:
    """A worker forked while the parent's thread had sessions to free (and may have held the
    count's lock) starts with none: it has no such thread, and would otherwise free every
    session on its loop, or wait for the lock for ever."""
    busy = threading.Event()
    freeing._RELEASER.submit(busy.wait)
    try:
        freeing.release_off_loop(_Session([{"event": "action"}] * 45_000))
        await asyncio.sleep(0)
        held = threading.Event()
        holder = threading.Thread(target=_hold_a_while, args=(freeing._waiting_lock, held))
        holder.start()
        held.wait()
        pid = os.fork()
        if pid == 0:  # the child: exit code 0 if it can count a release of its own
            code = 1
            try:
                acquired = freeing._waiting_lock.acquire(timeout=2)
                if acquired:
                    freeing._waiting_lock.release()
                    code = 0 if freeing._waiting == 0 else 2
            finally:
                os._exit(code)
        holder.join()
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    finally:
        busy.set()
    assert os.waitstatus_to_exitcode(status) == 0


def _hold_a_while(lock: Any, held: threading.Event) -> None:
    with lock:
        held.set()
        time.sleep(0.3)


async def test_a_parsed_document_is_emptied_but_for_what_is_held_elsewhere() -> None:
    """What an event kept from a big answer (a slot's value) stays whole; the rest of the
    answer, at any depth, is emptied in the releasing thread."""
    kept = [f"value {i}" for i in range(3_000)]
    events: list[Any] = [
        {"event": "bot", "data": {"custom": {"k": [i, [i]]}}} for i in range(3_000)
    ]
    document: dict[str, Any] = {
        "events": [*events, {"event": "slot", "value": kept}],
        "responses": [[1, 2]],
    }
    inner = events[5]["data"]["custom"]["k"]
    del events
    freeing.release_json_off_loop(document)
    del document
    await _settled()
    freeing._RELEASER.submit(lambda: None).result()
    assert len(kept) == 3_000 and kept[-1] == "value 2999"
    assert inner == [5, [5]]  # held here: whole


async def test_big_answers_waiting_for_the_thread_count_in_its_bound(
    emptied: list[int],
) -> None:
    """Big action answers let go of faster than the thread frees them (every turn of a bot
    whose action answers 300 KB, on a loaded loop) wait within the same bound as sessions:
    the rest is freed where it is dropped. Before, every answer waited."""
    busy = threading.Event()
    freeing._RELEASER.submit(busy.wait)
    released = []
    try:
        for _ in range(200):  # 2,000 events each: 400,000 in all
            leaf = _Leaf()
            released.append(weakref.ref(leaf))
            freeing.release_json_off_loop({"events": [leaf, *[{"event": "bot"}] * 1_999]})
            del leaf
        await _settled()
        waiting = sum(ref() is not None for ref in released)
    finally:
        busy.set()
        freeing._RELEASER.submit(lambda: None).result()
    assert waiting <= 26  # 50,000 events (was 200)
    await _settled()
    assert all(ref() is None for ref in released)
    assert (freeing._waiting, freeing._waiting_owners) == (0, 0)


class _Leaf:
    """A value whose freeing can be seen (through a weak reference)."""


def test_a_parsed_document_nobody_else_holds_is_freed_a_piece_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """However deep its values: the GIL is offered after each few hundred of them freed
    (freed whole, the 20,000 leaves went in one step)."""
    leaves = [_Leaf() for _ in range(20_000)]
    alive = [weakref.ref(leaf) for leaf in leaves]
    # one list of 4 lists of 500 objects each holding 10 leaves two levels down
    events = [
        [{"data": {"k": leaves[start + i * 10 : start + i * 10 + 10]}} for i in range(500)]
        for start in range(0, 20_000, 5_000)
    ]
    box: list[Any] = [{"events": events}]
    del leaves, events
    left: list[int] = []
    # (`time.sleep` is the module's, every thread's: the releasing thread, still freeing
    # what an earlier test let go of, counted its own pieces here and failed the test.)
    here, sleep = threading.get_ident(), time.sleep

    def counted(seconds: float) -> None:
        if threading.get_ident() != here:
            return sleep(seconds)
        left.append(sum(r() is not None for r in alive))

    monkeypatch.setattr(freeing.time, "sleep", counted)
    freeing.empty_json_in_pieces(box)
    assert box == [] and all(r() is None for r in alive)
    freed = [before - after for before, after in zip([20_000, *left], left, strict=False)]
    assert len(left) > 10 and max(freed) <= freeing.EVENTS_PER_PIECE, freed


class _Part:
    """Stands for a model's domain or policy: an object keeping a big dict."""

    def __init__(self, size: int) -> None:
        self.responses = {f"utter_{i}": [{"text": f"t{i}"}] for i in range(size)}


class _Model:
    def __init__(self, shared: _Part) -> None:
        self.domain = _Part(4_000)
        self.policies = [_Part(3_000)]
        self.shared = shared  # kept by a cache too


@pytest.fixture
def emptied_containers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The lengths of the lists and dicts a replaced model's release empties."""
    freeing._RELEASER.submit(lambda: None).result()
    lengths: list[int] = []
    empty = freeing.empty_json_in_pieces

    def recording(top: list[Any] | dict[Any, Any]) -> None:
        lengths.append(len(top))
        empty(top)

    monkeypatch.setattr(freeing, "empty_json_in_pieces", recording)
    monkeypatch.setattr(freeing, "MODEL_RETRY_SECONDS", 0.01)
    monkeypatch.setattr(freeing, "_OURS", (*freeing._OURS, __name__))
    return lengths


async def test_a_replaced_model_is_emptied_once_no_turn_holds_it_but_for_what_others_hold(
    emptied_containers: list[int],
) -> None:
    shared = _Part(2_000)
    model = _Model(shared)
    in_flight = model  # a turn still running on it
    freeing.release_model_off_loop(model)
    del model
    await _settled()
    assert emptied_containers == []  # not while a turn holds it
    del in_flight
    # Until all three are emptied (30 s at most): on a loaded host the releasing thread
    # emptied the first, or none yet, in the 1.2 s waited before, and the test failed.
    for _ in range(3_000):
        if len(emptied_containers) >= 3:
            break
        await asyncio.sleep(0.01)
    await _settled()  # nothing more is emptied after them (what the cache holds)
    assert sorted(emptied_containers) == [1, 3_000, 4_000]  # the policies' list too
    assert len(shared.responses) == 2_000
