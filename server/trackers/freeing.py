"""Freeing long lists (a conversation's events, a parsed body) a piece at a time in a thread.

CPython frees a list and everything only it holds in one C call, holding the GIL, so the
event loop, throughout: the last reference to 100,000 events dropped on the loop (or even in a
thread) held it 40-60 ms. Emptied from its end a piece at a time, the GIL changes hands
between pieces.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

from server.trackers.events import EVENTS_PER_PIECE, OFF_LOOP_EVENTS

if TYPE_CHECKING:
    import asyncio


def empty_in_pieces(*lists: list[Any]) -> None:
    """Empties each list in place, from its end, a piece at a time, offering the GIL after
    each piece (nothing waits for this). The lists must be garbage to everyone else: whoever
    still holds one sees it empty."""
    for items in lists:
        while items:
            del items[-EVENTS_PER_PIECE:]
            time.sleep(0)


async def free_off_loop(*lists: list[Any]) -> None:
    """`empty_in_pieces` in a thread when the lists are long; short ones are left to be
    freed wherever their last reference goes."""
    import asyncio

    if sum(len(items) for items in lists) > OFF_LOOP_EVENTS:
        await asyncio.to_thread(empty_in_pieces, *lists)


def release_off_loop(owner: Any) -> None:
    """For a cache on the loop that just let go of `owner` (a hot tracker, a cached session,
    or a list) holding long lists, and keeps no other reference to it: in a thread, once
    this loop iteration is over, if nobody else holds it any more (another request may),
    its long lists are emptied a piece at a time. A hot tracker of 100,000 events and its
    state cache freed at once held the loop 40 ms, a cached session of their dicts 14 ms."""
    _hand_over(owner, _empty_if_unshared)


def _hand_over(owner: Any, empty: Callable[[list[Any]], None]) -> None:
    """`owner`, which its callers hold no more once they return, to `empty` in the releasing
    thread after this loop iteration, counted as waiting (`_admitted`); freed where it is
    dropped with no loop running, or past the bound."""
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop: freed where it is dropped
        return
    size = _events_of(owner)
    if not _admitted(size):
        return
    box = [owner]
    del owner
    loop.call_soon(_to_thread, loop, box, empty, size)


# Events (list items) let go of and not freed yet: while the thread has this many to free,
# more are freed where they are dropped, on the loop (about 0.3 ms per 1,000 events). A few
# owners of any size are always taken (a long conversation's hot tracker, cached session and
# rows let go of together), and below the bound one more of any size: what waits is at most
# this and the longest session. 50,000 parsed events are about 75 MB.
RELEASE_BACKLOG_EVENTS = 50_000
RELEASE_BACKLOG_OWNERS = 3
_waiting = 0
_waiting_owners = 0
_waiting_lock = threading.Lock()


def _admitted(size: int) -> bool:
    """Whether what holds `size` events is to wait for the thread, counted as waiting."""
    global _waiting, _waiting_owners
    with _waiting_lock:
        if _waiting_owners >= RELEASE_BACKLOG_OWNERS and _waiting >= RELEASE_BACKLOG_EVENTS:
            # The thread is behind (a loaded loop letting go of sessions every turn): this
            # one is freed where it is dropped, as the backlog would grow without bound.
            # Below the bound one more of any size is taken: a long conversation let go of
            # while a few shorter ones wait stays off the loop.
            return False
        _waiting += size
        _waiting_owners += 1
        return True


def _events_of(owner: Any) -> int:
    """The items of `owner`'s lists (its own, or those it keeps as attributes or, for a
    parsed JSON object, as values)."""
    if type(owner) is list:
        return len(owner)
    values = owner.values() if type(owner) is dict else vars(owner).values()
    return sum(len(value) for value in values if type(value) is list)


def _freed(size: int) -> None:
    global _waiting, _waiting_owners
    with _waiting_lock:
        _waiting -= size
        _waiting_owners -= 1


# One thread frees what the caches let go of, whatever the number of loops: each thread busy
# with Python is one more for the loop to wait behind for the GIL.
_RELEASER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="release")


def _new_releaser() -> None:
    """A forked child has none of its parent's threads: a new executor, or what it lets go
    of would wait for ever."""
    global _RELEASER, _waiting, _waiting_owners, _waiting_lock
    _RELEASER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="release")
    # Nothing of the parent's waits here, and its thread may have held the lock.
    _waiting = _waiting_owners = 0
    _waiting_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_releaser)


def release_json_off_loop(value: Any) -> None:
    """`release_off_loop` for a parsed JSON document its reader lets go of (a big answer of an
    action or NLG server): its lists and objects that nobody else holds are emptied a piece
    at a time, at any depth; one still held elsewhere (an event's slot value kept in the
    tracker) is left whole. Freed at once, the 17 MB answer of 120,000 events an action server
    may not give held the loop 40 ms. It waits for the thread within the same bound as
    sessions, counted by the items of its lists (an answer's events and responses)."""
    if type(value) is dict or type(value) is list:
        _hand_over(value, empty_json_in_pieces)  # (counted by an answer's events)


# A replaced model a turn still holds is looked at again this often (seconds), at most this
# many times (a minute); then it is freed wherever its last reference goes.
MODEL_RETRY_SECONDS = 0.1
MODEL_TRIES = 600
# A list or dict of at most this many entries is looked into for objects a model keeps (its
# policies); longer ones hold data, emptied a piece at a time.
_LOOKED_INTO = 64


def release_model_off_loop(model: Any, tries: int = MODEL_TRIES) -> None:
    """For a model just replaced or unloaded, of which the caller keeps no reference: in the
    releasing thread, once no turn holds it any more (looked at again every
    `MODEL_RETRY_SECONDS`), the lists and dicts nobody else holds, kept on it and on the
    objects only it holds (its domain, policies, NLU components), at any depth, are emptied
    a piece at a time. A model of 40,000 responses freed at once held the loop 9-11 ms."""
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    box = [model]
    del model
    loop.call_soon(_to_thread, loop, box, partial(_empty_model_if_unshared, loop, tries), None)


def _empty_model_if_unshared(loop: asyncio.AbstractEventLoop, tries: int, box: list[Any]) -> None:
    if _box_references(box) != _ALONE_IN_BOX:
        if tries > 1:
            with contextlib.suppress(RuntimeError):  # the loop is closed: freed where it is
                loop.call_soon_threadsafe(
                    loop.call_later,
                    MODEL_RETRY_SECONDS,
                    _to_thread,
                    loop,
                    box,
                    partial(_empty_model_if_unshared, loop, tries - 1),
                    None,  # (a model is not counted among the events waiting)
                )
                return
        box.clear()
        return
    containers = _private_containers(box[0])
    # Deepest first: a list emptied frees what only it holds at once (a policy and its dicts).
    for container in reversed(containers):
        empty_json_in_pieces(container)
        del container
    del containers
    box.clear()


def _private_containers(root: Any) -> list[Any]:
    """The lists and dicts reached from `root` (held by nobody else) through the attributes
    of objects and the entries of short lists and dicts, that nothing outside holds, in the
    order found. Told by reference counts: an object is private when every reference to it
    comes from private objects."""
    objects: dict[int, Any] = {id(root): root}
    children: dict[int, list[int]] = {}
    queue = [id(root)]
    while queue:
        key = queue.pop()
        children[key] = _add_referents(objects, key, queue)
    private = set(objects)
    changed = True
    while changed:
        changed = False
        inbound = dict.fromkeys(private, 0)
        for key in private:
            for child in children[key]:
                if child in inbound:
                    inbound[child] += 1
        for key in list(private):
            if key != id(root) and _held(objects, key) - _HELD_BY_DICT != inbound[key]:
                private.discard(key)
                changed = True
    return [
        objects[key]
        for key in objects
        if key in private and (type(objects[key]) is list or type(objects[key]) is dict)
    ]


def _referents(value: Any) -> list[Any]:
    """What `_private_containers` looks into from `value`: the attributes of an object of
    ours, the entries of a short list or dict."""
    kind = type(value)
    if kind is list or kind is dict:
        if len(value) > _LOOKED_INTO:
            return []
        items = value if kind is list else list(value.values())
    else:
        items = list(vars(value).values())
    return [item for item in items if _walked(item)]


def _add_referents(objects: dict[int, Any], key: int, queue: list[int]) -> list[int]:
    """The identities of what `objects[key]` refers to (see `_referents`), with repeats;
    those not seen yet added to `objects` and `queue`. No reference is kept on return."""
    values = _referents(objects[key])
    for value in values:
        if id(value) not in objects:
            objects[id(value)] = value
            queue.append(id(value))
    return [id(value) for value in values]


def _walked(value: Any) -> bool:
    """A list, a dict, or an object of this package's classes (a library's objects, a
    client's connection pool say, may be finalized by code reading what they keep)."""
    kind = type(value)
    if kind is list or kind is dict:
        return True
    return (
        kind.__module__.startswith(_OURS)
        and hasattr(value, "__dict__")
        and not callable(value)
        and not isinstance(value, type | types.ModuleType)
    )


# The packages whose objects `_walked` looks into.
_OURS: tuple[str, ...] = (__name__.split(".")[0] + ".",)


def release_values_in_pieces(attributes: dict[str, Any]) -> None:
    """For an object being freed (from its `__del__`), its attributes `attributes` (its
    `__dict__`, emptied here: nothing reads them any more): its lists and dicts, and those
    in them that nobody else holds, are emptied a piece at a time, in the releasing thread
    when a loop runs in this one (`release_json_off_loop`), else here."""
    import asyncio

    values = [value for value in attributes.values() if type(value) is dict or type(value) is list]
    attributes.clear()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        empty_json_in_pieces(values)
        return
    release_json_off_loop(values)


def empty_json_in_pieces(top: list[Any] | dict[Any, Any]) -> None:
    """Empties `top`, a list or dict nobody else holds, in place from its end a piece at a
    time, and so the lists and dicts in it, at any depth, that nobody else holds (told by
    reference counts, as below), offering the GIL after each piece: what only the piece
    holds is freed with it, a few hundred values at a time, whatever their nesting."""
    stack = [top]
    del top
    seen = 0
    while stack:
        current = stack[-1]
        if not current:
            del current
            stack.pop()
            continue
        if isinstance(current, list):
            piece = current[-EVENTS_PER_PIECE:]
            del current[-EVENTS_PER_PIECE:]
        else:
            piece = [current.popitem()[1] for _ in range(min(len(current), EVENTS_PER_PIECE))]
        del current
        for index in range(len(piece)):
            kind = type(piece[index])
            if (
                (kind is dict or kind is list)
                and piece[index]
                and _item_references(piece, index) == _ALONE_IN_LIST
            ):
                stack.append(piece[index])
        seen += len(piece)
        del piece
        if seen >= EVENTS_PER_PIECE:
            seen = 0
            time.sleep(0)


def _to_thread(
    loop: asyncio.AbstractEventLoop,
    box: list[Any],
    empty: Callable[[list[Any]], None],
    size: int | None,
) -> None:
    """`size`: the events counted as waiting (None: not counted, a replaced model)."""
    try:
        loop.run_in_executor(_RELEASER, _release, box, empty, size)
    except RuntimeError:  # the executor is shut down: freed here
        box.clear()
        if size is not None:
            _freed(size)


def _release(box: list[Any], empty: Callable[[list[Any]], None], size: int | None) -> None:
    try:
        empty(box)
    finally:
        if size is not None:
            _freed(size)


def _empty_if_unshared(box: list[Any]) -> None:
    """Empties the long lists of `box[0]`, and of the objects of ours kept on it (a
    tracker's state cache), that nobody else holds; then drops it. What holds a reference is
    told by reference counts: held by the box alone, the owner cannot be reached by anyone
    else, so no count can rise meanwhile."""
    if _box_references(box) != _ALONE_IN_BOX:
        box.clear()
        return
    owner = box[0]
    if type(owner) is list:
        del owner
        empty_in_pieces(box[0])
        box.clear()
        return
    parts = [owner]
    for name in list(vars(owner)):
        value = getattr(owner, name)
        if hasattr(value, "__dict__") and not callable(value):
            # An object kept on it (the policies' state cache): only if it is its alone.
            del value
            if _attribute_references(owner, name) == _ALONE_AS_ATTRIBUTE:
                parts.append(getattr(owner, name))
        value = None  # (the last attribute's would count as a holder below)
    del owner
    pairs = [
        (part, name)
        for part in parts
        for name, value in vars(part).items()
        if type(value) is list and len(value) > EVENTS_PER_PIECE
    ]
    ids = [id(getattr(part, name)) for part, name in pairs]
    for index, (part, name) in enumerate(pairs):
        list_id = ids[index]
        if list_id in ids[:index]:
            continue  # a list kept under two names: looked at once, with both
        holders = ids.count(list_id)
        if _attribute_references(part, name) - holders + 1 == _ALONE_AS_ATTRIBUTE:
            empty_in_pieces(getattr(part, name))
    del parts, pairs
    box.clear()


def _box_references(box: list[Any]) -> int:
    return sys.getrefcount(box[0])


def _attribute_references(holder: Any, name: str) -> int:
    return sys.getrefcount(getattr(holder, name))


def _item_references(items: list[Any], index: int) -> int:
    return sys.getrefcount(items[index])


def _held(objects: dict[int, Any], key: int) -> int:
    return sys.getrefcount(objects[key])


class _Probe:
    def __init__(self) -> None:
        self.items: list[Any] = []


# What the checks above count for an object held by the box, or an attribute, alone
# (measured: the interpreter's own temporary references differ between versions).
_ALONE_IN_BOX = _box_references([_Probe()])
_ALONE_AS_ATTRIBUTE = _attribute_references(_Probe(), "items")
_ALONE_IN_LIST = _item_references([_Probe()], 0)
_HELD_BY_DICT = _held({0: _Probe()}, 0)
