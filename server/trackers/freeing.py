"""Freeing long lists (a conversation's events, a parsed body) a piece at a time in a thread.

CPython frees a list and everything only it holds in one C call, holding the GIL, so the
event loop, throughout: the last reference to 100,000 events dropped on the loop (or even in a
thread) held it 40-60 ms. Emptied from its end a piece at a time, the GIL changes hands
between pieces.
"""

from __future__ import annotations

import asyncio
from typing import Any

from server.trackers.events import EVENTS_PER_PIECE, OFF_LOOP_EVENTS


def empty_in_pieces(*lists: list[Any]) -> None:
    """Empties each list in place, from its end, a piece at a time. The lists must be
    garbage to everyone else: whoever still holds one sees it empty."""
    for items in lists:
        while items:
            del items[-EVENTS_PER_PIECE:]


async def free_off_loop(*lists: list[Any]) -> None:
    """`empty_in_pieces` in a thread when the lists are long; short ones are left to be
    freed wherever their last reference goes."""
    if sum(len(items) for items in lists) > OFF_LOOP_EVENTS:
        await asyncio.to_thread(empty_in_pieces, *lists)
