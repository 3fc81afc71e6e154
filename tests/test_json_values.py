"""Reading JSON exactly, and a long list of events without holding the event loop."""

from __future__ import annotations

import asyncio
import json

import pytest

from server.json_values import MAX_DEPTH, TooDeep, key_given_twice, loads_exact, loads_untrusted
from tests.api.test_long_conversations import greetings
from tests.loop_lag import loop_hold


@pytest.mark.timing
async def test_200000_events_are_read_in_a_thread_without_holding_the_loop() -> None:
    """Before, orjson read a 20 MB body of 200,000 events in one call, which holds the GIL:
    0.15-0.2 s in which no other conversation nor /health was answered, though the parse ran
    in a thread. Now a list of events is read about 512 KB at a time."""
    body = greetings(50_000)
    async with loop_hold() as hold:
        events = await asyncio.to_thread(loads_untrusted, body)
    assert hold.busiest < 0.08 * hold.slowness  # 0.15-0.2 s before
    assert events == json.loads(body)


def test_a_list_read_in_pieces_is_the_list_sent() -> None:
    """Places that look like the end of an event, inside a text or a nested list of events,
    are not cut at."""
    looks_like_a_cut = '}, {"event": "bot"}'
    body = json.dumps(
        [{"event": "bot", "text": "x" * 600_000 + looks_like_a_cut}]
        + [{"event": "slot", "value": [{"event": "user"}, {"event": "bot"}]}] * 40_000
        + [{"event": "bot", "text": looks_like_a_cut}, {"event": "action"}] * 40_000
    ).encode()
    assert loads_exact(body) == json.loads(body)


def test_a_long_list_that_is_not_json_is_refused_as_before() -> None:
    body = greetings(10_000)[:-1]
    try:
        loads_untrusted(body)
    except ValueError as exc:
        assert "Expecting" in str(exc)
    else:
        raise AssertionError("an unclosed list was read")


@pytest.mark.timing
async def test_a_long_list_with_surrogate_escapes_is_checked_without_holding_the_loop() -> None:
    """Before, a body holding a `\\uD83D\\uDE00` escape was written out whole to check its
    surrogates were paired: one C call holding the GIL, 60-70 ms for 6 MB of events though in a
    thread. Now 500 events are checked at a time; an unpaired one is still refused."""
    said = {"event": "user", "text": "hi \ud83d\ude00", "timestamp": 1.0}
    body = json.dumps([said] * 100_000).encode()
    async with loop_hold() as hold:
        events = await asyncio.to_thread(loads_untrusted, body)
    assert hold.busiest < 0.04 * hold.slowness  # 59-68 ms before
    assert events[-1]["text"] == "hi \U0001f600" and len(events) == 100_000
    lone = body[:-1] + b', {"event": "user", "text": "\\ud83d"}]'
    with pytest.raises(ValueError, match="unpaired UTF-16 surrogate"):
        loads_untrusted(lone)


def _with_text_at(offset: int, text: str, total: int) -> bytes:
    """A JSON list of events, `total` bytes or more, whose `text` starts at byte `offset`."""
    head, tail = b'[{"event": "bot", "text": "', b'"}, '
    prefix = head + b"x" * (offset - len(head) - len(tail)) + tail
    padding = b'{"event": "action", "name": "action_listen"}, '
    body = prefix + text.encode() + b", " + padding * ((total - offset) // len(padding))
    return body.rstrip(b", ") + b"]"


@pytest.mark.parametrize("piece", [1, 2])
def test_an_integer_beyond_64_bits_across_two_pieces_is_read_exactly(piece: int) -> None:
    """A long body is looked at for twenty digits in a row a piece at a time (one pass over
    10 MB held the loop 15 ms, 45-80 ms beside other work); a run of digits that the cut
    between two pieces splits is still found, so the number is read exactly, not rounded."""
    big = 123456789012345678901234567890
    before = '{"event": "slot", "name": "n", "value": '
    for split in (1, 10, 19):
        cut = piece * 512 * 1024
        body = _with_text_at(cut - split - len(before), f"{before}{big}}}", 3_000_000)
        assert body.index(str(big).encode()) == cut - split  # the cut falls inside the number
        events = loads_exact(body)
        assert [e["value"] for e in events if e["event"] == "slot"] == [big]


def test_an_unpaired_surrogate_across_two_pieces_is_refused() -> None:
    before = '{"event": "user", "text": "'
    for split in (1, 3, 5):
        cut = 512 * 1024  # a body over two pieces (1 MiB) is read in pieces
        body = _with_text_at(cut - split - len(before), before + '\\ud83d"}', 1_200_000)
        assert body.index(b"\\ud83d") == cut - split  # the cut falls inside the escape
        with pytest.raises(ValueError, match="unpaired UTF-16 surrogate"):
            loads_untrusted(body)


def test_the_shortest_document_nested_too_deep_is_refused() -> None:
    """A body of at most 200 bytes is not counted for brackets (it cannot nest deeper than
    100 levels): the shortest one that does, 202 bytes, is still refused."""
    with pytest.raises(TooDeep):
        loads_untrusted(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    with pytest.raises(TooDeep):
        loads_untrusted(b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1))
    assert loads_untrusted(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None


def test_an_integer_too_long_to_read_is_refused_in_the_clients_terms() -> None:
    """Python reads no integer of more than 4,300 digits. Before, the error a client got
    said to call `sys.set_int_max_str_digits()` (found by probing the API)."""
    body = b'{"timestamp": ' + b"1" * 5000 + b"}"
    with pytest.raises(ValueError) as raised:
        loads_untrusted(body)
    assert str(raised.value) == (
        "the integer 1111111111111111111111111111111111111111... has 5,000 digits; "
        "at most 4,300 are read"
    )
    assert loads_untrusted(b"[" + b"9" * 4300 + b"]") == [int("9" * 4300)]


def test_a_key_given_twice_is_found_at_any_depth_and_only_within_one_object() -> None:
    assert key_given_twice(b'{"nlu": [], "a": {"b": 1, "b": 2}}') == "b"
    assert key_given_twice(b'[{"x": 1}, {"x": 2}, {"y": {"x": 3}}]') is None
    assert key_given_twice('{"\u00e9": 1,\n "\u00e9": 2}'.encode("utf-16")) == "\u00e9"
