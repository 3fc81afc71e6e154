"""Reading JSON exactly, and a long list of events without holding the event loop."""

from __future__ import annotations

import asyncio
import json
import random
import re
from typing import Any

import orjson
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


_EXAMPLE = {"text": "book a table },{ for two", "intent": "book", "entities": []}


@pytest.mark.parametrize(
    "document",
    [
        {"rasa_nlu_data": {"regex_features": [{"a": 1}], "common_examples": [_EXAMPLE] * 20_000}},
        {"events": [_EXAMPLE] * 10_000, "responses": [_EXAMPLE] * 10_000},
    ],
)
def test_long_lists_nested_in_an_object_are_read_in_pieces(
    monkeypatch: pytest.MonkeyPatch, document: dict[str, object]
) -> None:
    """Before, only a list of events at the top was cut: 7 MB of NLU examples (or an action
    server's events and responses) were read by orjson in one call holding the loop 31-120 ms.
    Now the long lists inside objects are read a piece at a time too."""
    import server.json_values as json_values

    reads: list[int] = []
    real = json_values.orjson.loads

    def counted(data: bytes) -> object:
        reads.append(len(data))
        return real(data)

    monkeypatch.setattr(json_values.orjson, "loads", counted)
    body = json.dumps(document).encode()
    assert loads_untrusted(body) == json.loads(body)
    assert len(reads) >= len(body) // (512 * 1024)  # 1 before


@pytest.mark.timing
async def test_an_action_servers_long_answer_is_read_without_holding_the_loop() -> None:
    """Before, 13 MB of events and responses were read by orjson in one call in a thread,
    holding the loop 120 ms; now a piece of each list at a time."""
    said = {"event": "bot", "text": "hello number 1, how are you", "metadata": {"a": [1, 2]}}
    document = {"events": [said] * 150_000, "responses": [{"text": "hi"}] * 50_000}
    body = json.dumps(document).encode()
    async with loop_hold() as hold:
        answer = await asyncio.to_thread(loads_untrusted, body)
    assert hold.busiest < 0.06 * hold.slowness  # 120 ms before
    assert len(answer["events"]) == 150_000 and answer["responses"][-1] == {"text": "hi"}


@pytest.mark.timing
@pytest.mark.parametrize("kind", ["strings", "numbers"])
async def test_a_long_list_of_strings_or_numbers_is_read_without_holding_the_loop(
    kind: str,
) -> None:
    """Before, a list of scalars was read by orjson in one call however long: a 23 MB answer
    whose one slot held 1,500,000 short strings, or a 20 MB body of 2,500,000 numbers, held
    the loop 78-117 ms from a thread. Now a piece at a time (6-15 ms)."""
    if kind == "strings":
        values: list[Any] = [f"value {i}" for i in range(1_500_000)]
        document: Any = {"events": [{"event": "slot", "name": "s", "value": values}]}
    else:
        values = list(range(10**6, 10**6 + 2_500_000))
        document = {"text": "hi", "entities": values}
    body = orjson.dumps(document)
    async with loop_hold() as hold:
        answer = await asyncio.to_thread(loads_untrusted, body)
    assert hold.busiest < 0.045 * hold.slowness, hold
    assert answer == document


@pytest.mark.timing
@pytest.mark.parametrize("kind", ["objects", "strings"])
async def test_a_long_list_before_a_long_stretch_without_a_cut_is_read_without_holding_the_loop(
    kind: str,
) -> None:
    """The search for a place to cut a long list goes past its end, through what follows:
    20 MB of spaces (no place to cut) were searched in one call that held the loop 110-150
    ms (a pattern beginning with a lookbehind, tried at every byte); now 30-35 ms."""
    items: list[Any] = (
        [{"event": "bot", "text": f"t{i}"} for i in range(40_000)]
        if kind == "objects"
        else [f"value {i}" for i in range(150_000)]
    )
    document = {"events": items, "n": 1}
    body = orjson.dumps(document)[:-1] + b" " * 20_000_000 + b"}"
    async with loop_hold() as hold:
        answer = await asyncio.to_thread(loads_untrusted, body)
    assert hold.busiest < 0.07 * hold.slowness, hold
    assert answer == document


def test_texts_holding_brackets_are_not_read_again_for_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A `[` inside a text, followed by a stretch without brackets, looks like where a long
    list of scalars opens, and is read from there, maybe to the end of the document. Texts
    holding one every 2 pieces had the document read 12 times over; now at most 4."""
    import server.json_values as json_values

    read: list[int] = []

    class Counting:
        JSONDecodeError = orjson.JSONDecodeError

        @staticmethod
        def loads(raw: bytes) -> Any:
            read.append(len(raw))
            return orjson.loads(raw)

    monkeypatch.setattr(json_values, "orjson", Counting)
    monkeypatch.setattr(json_values, "_PIECE_BYTES", 1024)
    document = {"texts": ["[" + 'a", 1, "' * 300 for _ in range(100)]}
    body = orjson.dumps(document)
    assert loads_untrusted(body) == document
    assert sum(read) <= 4 * len(body), (sum(read), len(body))


def _document(rng: random.Random, depth: int = 0) -> object:
    """A JSON-like value with strings that look like cuts, escapes and unicode."""
    texts = ['},{"a": 1}', '"}, {"', "\\", '\\"', "é€😀", "]}],[{", "x", '", "', "1, 2", "[3,"]
    kind = rng.randrange(7 if depth < 4 else 3)
    if rng.random() < 0.00005:
        return rng.choice(["\ud83d", float("nan"), float("inf")])  # refused
    if kind == 0:
        return rng.choice(texts) * rng.randrange(1, 4)
    if kind == 1:
        return rng.choice([0, -1.5, 2**63, True, None])
    if kind == 2:
        return rng.randrange(-1000, 1000)
    if kind == 3:
        return {rng.choice(["a", "b", "c"]): _document(rng, depth + 1) for _ in range(3)}
    if kind == 4:
        return [{"k": _document(rng, depth + 1)} for _ in range(rng.randrange(0, 30))]
    if kind == 5:  # a list of scalars
        return [_document(rng, 4) for _ in range(rng.randrange(0, 30))]
    return [_document(rng, depth + 1) for _ in range(rng.randrange(0, 4))]


def _outcome(raw: bytes) -> object:
    try:
        return ("read", loads_untrusted(raw))
    except ValueError as exc:
        return ("refused", type(exc))


def test_documents_read_in_pieces_are_read_as_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every document, cut at places inside strings, nested lists and past a list's end,
    reads (or is refused, with the same error) as when read whole."""
    import server.json_values as json_values

    put_back: list[object] = []
    real = json_values._put_back

    def counted(value: object, word: str, lists: list[list[object]]) -> object:
        put_back.append(value)
        return real(value, word, lists)

    monkeypatch.setattr(json_values, "_put_back", counted)
    scalars_read: list[int] = []
    list_at = json_values._list_at

    def read(body: bytes, opening: int, between: re.Pattern[bytes]) -> object:
        found = list_at(body, opening, between)
        if found is not None and between is json_values._BETWEEN_SCALARS:
            scalars_read.append(len(found[0]))
        return found

    monkeypatch.setattr(json_values, "_list_at", read)
    rng = random.Random(46)
    for number in range(300):
        value: object = {"events": _document(rng), "x": [_document(rng) for _ in range(20)]}
        if number % 5 == 0:
            value = [{"k": _document(rng)} for _ in range(20)]  # a list at the top
        raw = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
        if number % 7 == 0:
            raw = raw.replace(b'"a"', b'"b"')  # keys given twice
        if number % 11 == 0:
            raw = raw[: rng.randrange(len(raw))]  # not JSON
        if number % 13 == 0:
            raw = b'{"d": ' + b"[" * 120 + raw + b"]" * 120 + b"}"  # nested too deep
        monkeypatch.setattr(json_values, "_PIECE_BYTES", 1 << 30)
        whole = _outcome(raw)
        monkeypatch.setattr(json_values, "_PIECE_BYTES", 8)
        assert _outcome(raw) == whole, raw[:300]
    assert len(put_back) > 150  # most were read in pieces, not by the whole-document fallback
    assert len(scalars_read) > 150, len(scalars_read)  # lists of scalars too


def test_a_long_list_written_inside_a_string_is_read_by_orjson_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A text holding `[{},{},...]` (a client's message, say) looks like a long list of
    objects: its stand-in then breaks the string, and the document was read again by the
    standard library's parser, several times slower under the GIL; now by orjson, whole."""
    import server.json_values as json_values

    def no_stdlib(*args: object, **kwargs: object) -> object:
        raise AssertionError("read by the standard library")

    monkeypatch.setattr(json_values.json, "loads", no_stdlib)
    text = "[" + ",".join(["{}"] * 600_000) + "]"
    document = {"text": text, "events": [{"event": "user", "text": "hi"}] * 3}
    assert loads_exact(json.dumps(document).encode()) == document


def test_a_stored_nlu_answer_with_small_confidences_is_read_by_orjson(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """orjson writes a confidence of 9.86e-05 as 0.00009862550378129432: twenty digits in a
    row, after a point. Most stored user events with an intent ranking had such a number, and
    were read by the standard library's parser, 3 times slower. A fraction is read as the
    same double by both."""
    import server.json_values as json_values

    ranking = [{"name": f"i{n}", "confidence": 0.9862550378129432 / 10**n} for n in range(1, 9)]
    event = {"event": "user", "text": "bye", "parse_data": {"intent_ranking": ranking}}
    text = orjson.dumps(event).decode()
    assert "0.00009862550378129432" in text
    assert json.loads(text) == event

    def no_stdlib(*args: object, **kwargs: object) -> object:
        raise AssertionError("read by the standard library")

    monkeypatch.setattr(json_values.json, "loads", no_stdlib)
    assert loads_exact(text, constants=True) == event
    assert loads_exact(text.encode()) == event


def test_numbers_with_long_digit_runs_read_as_the_standard_library_reads_them() -> None:
    """Integers of twenty digits or more stay exact wherever they are, beside fractions of
    twenty digits or more, in short texts and in texts read a piece at a time."""
    rng = random.Random(10)
    for number in range(300):
        numbers: list[object] = []
        for _ in range(rng.randrange(1, 6)):
            digits = "".join(rng.choice("0123456789") for _ in range(rng.randrange(15, 45)))
            whole = str(rng.randrange(0, 10 ** rng.randrange(1, 30)))
            numbers.append(
                rng.choice([f"{whole}.{digits}", f"-0.{digits}", f"{int(whole + digits)}"])
            )
        text = '{"n": [' + ", ".join(map(str, numbers)) + '], "s": "x.' + digits + '"}'
        assert loads_exact(text) == json.loads(text), text
        if number % 10:
            continue
        padded = text.replace('"s"', '"p": "' + " " * 1_100_000 + '", "s"')
        assert loads_exact(padded.encode()) == json.loads(padded), text


def _python_lines_of_the_reader(read: Any) -> int:
    """Lines that Python ran during `read()` to look for integers beyond 64 bits."""
    import sys

    lines = [0]

    def trace(frame: Any, event: str, arg: object) -> Any:
        if frame.f_code.co_name not in ("_has_long_digit_run", "_integer_run"):
            return None

        def local(frame: Any, event: str, arg: object) -> Any:
            lines[0] += event == "line"
            return local

        return local

    sys.settrace(trace)
    try:
        read()
    finally:
        sys.settrace(None)
    return lines[0]


def test_long_fractions_are_looked_past_without_a_python_step_per_digit() -> None:
    """A body holding a fraction of 200,000 digits, or 5,000 fractions of 30: the check for
    integers beyond 64 bits stepped through each digit of a fraction's run in Python (0.14 s
    of CPU for a million digits, where reading the body takes 3 ms), and through every run
    (2.4 times the stdlib's read of 6.6 MB of fractions). Now it skips a run at C speed and
    leaves a text of many runs to the stdlib, exact as before."""
    one = b"[0." + b"7" * 200_000 + b"]"
    assert _python_lines_of_the_reader(lambda: loads_exact(one)) < 200
    many = ("[" + ",".join(f"0.{n:030d}" for n in range(1, 5001)) + "]").encode()
    assert _python_lines_of_the_reader(lambda: loads_exact(many)) < 1_000
    assert loads_exact(many) == json.loads(many)
    beyond = "[" + "0.1234567890123456789012," * 70 + "123456789012345678901234567890]"
    assert loads_exact(beyond)[-1] == 123456789012345678901234567890


def test_fractions_next_to_ties_between_doubles_read_as_the_standard_library_reads_them() -> None:
    """A fraction of twenty digits or more is read by orjson: it must round as the stdlib
    does where rounding is hardest, at and beside the midpoint of two neighbouring doubles
    (subnormals too), whole and with an exponent."""
    import math
    import struct
    from decimal import Decimal, localcontext

    rng = random.Random(7)
    with localcontext() as context:
        context.prec = 1200
        for n in range(400):
            if n % 3 == 0:
                low = math.ldexp(rng.random(), -rng.randrange(1000, 1074))
            elif n % 3 == 1:
                low = rng.random() * 10.0 ** -rng.randrange(0, 20)
            else:
                low = abs(struct.unpack("<d", rng.randbytes(8))[0])
                if not math.isfinite(low) or low == 0:
                    continue
            middle = (Decimal(low) + Decimal(math.nextafter(low, math.inf))) / 2
            nudge = Decimal(10) ** (middle.adjusted() - 40)
            for number in (middle, middle + nudge, middle - nudge):
                texts = [f"{number:e}"]
                if -400 < number.adjusted() < 19:
                    texts.append(f"-{number:f}")
                text = "[" + ", ".join(texts) + "]"
                assert loads_exact(text) == json.loads(text), text
