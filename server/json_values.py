"""Reading JSON exactly: orjson's speed without its silent changes.

orjson reads an integer beyond 64 bits as a float (123456789012345678901234567890 becomes
1.2345678901234568e+29), and the stdlib reads NaN and Infinity, which are not JSON and which
orjson then writes as null. A value a client sent must come back as it was sent, or be refused.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import sys
from collections.abc import Iterator
from typing import Any

import orjson

# Twenty digits in a row: the shortest text of an integer beyond 64 bits (2**64 has 20
# digits). Such text (also inside a string) is read by the stdlib, exactly, unless a `.` comes
# just before the run: a fraction's digits, which both parsers read as the same double
# (orjson writes a confidence of 9.86e-05 as 0.00009862550378129432: most stored user events
# with an NLU ranking have one, and the stdlib read them 3 times slower; a session of 1,363
# moodbot events took 8.9 ms of CPU to read, now 6.4 ms). Found by mapping every digit to 0
# and searching for twenty zeros, at C speed: reading costs 0.4 us more than orjson alone
# for a REST body, where a regular expression took 7 us.
_LONG_DIGIT_RUN = b"0" * 20
_BYTES_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_POINT = ord(".")
_NOT_ZERO = re.compile(rb"[^0]")
# Fractions of twenty digits or more looked past in a text (a stored user event has one per
# small confidence of its rankings) before the rest of it is left to the stdlib.
_FRACTIONS_LOOKED_PAST = 64


# A list longer than this is read by orjson a piece of about this size at a time: orjson holds
# the GIL (so the event loop, even from a thread) for the whole document it reads, 0.08-0.15 s
# for the 10 MB of 100,000 events, 31-38 ms for 7 MB of NLU examples.
_PIECE_BYTES = 512 * 1024
_JSON_SPACE = b" \t\r\n"
# Where a list of objects opens (events, responses, NLU examples): a list that may be long.
_LIST_OF_OBJECTS = re.compile(rb"\[[ \t\r\n]*\{")
# Where one object of a list ends and the next begins: a place to cut (at its comma). Each
# pattern begins with a character, not a lookbehind: the regular expression engine then
# skips to it at C speed. A lookbehind first took 15 times as long through a text without
# a cut (20 MB: 0.4-0.8 s in one call holding the GIL, against 26-45 ms).
_BETWEEN_OBJECTS = re.compile(rb"\}[ \t\r\n]*,(?=[ \t\r\n]*\{)")
# Where a string, number, true, false or null of a list begins after another element.
_BETWEEN_SCALARS = re.compile(rb',(?=[ \t\r\n]*["\-0-9tfn])')
_BRACKETS = (b"[", b"]", b"{", b"}")
# Cuts that did not read (inside a string, a nested list, or past the list's end) before the
# rest of a list is read in one piece.
_WRONG_CUTS = 4
# Lists of objects looked at, in document order, for one long enough to read in pieces.
_LISTS_LOOKED_AT = 8
# Openings of lists of scalars that were none (a `[` inside a text) before no more are
# looked for: each may be read up to the end of the document, and a document of texts
# holding `[` every megabyte was read 12 times over (0.5 GB of 40 MB).
_OPENINGS_IN_VAIN = 2
# Stands for a long list in the rest of the document: a newline, which no JSON string holds
# unescaped, so the rest reads only when the list stood where a value stands; a word drawn
# for each document, which no client can write (even escaped) to be taken for a list.
_STAND_IN = b'[\n"%s %d"]'


def _orjson_in_pieces(raw: bytes) -> Any:
    """`orjson.loads(raw)`; a long list, at any depth, is read a piece at a time: a list of
    objects, or of strings, numbers, true, false and null (`_scalar_lists_set_aside`).

    A cut is right when the piece before it reads as a list: the piece starts where an element
    starts, so a cut inside a string or a nested list leaves it unreadable (a string or a
    bracket left open), and the next place to cut is tried. The rest of the document, each
    long list replaced by a stand-in, is read last, and the lists are put in their places."""
    body = raw.strip(_JSON_SPACE)
    lists: list[list[Any]] = []
    word = secrets.token_hex(16).encode()
    body = _scalar_lists_set_aside(body, word, lists)
    scalar_lists = len(lists)
    rest: list[bytes] = []
    kept, after, looked_at = 0, 0, 0  # the rest of the document from `kept`; look from `after`
    while looked_at < _LISTS_LOOKED_AT:
        opening = _LIST_OF_OBJECTS.search(body, after)
        if opening is None:
            break
        looked_at += 1
        read = _list_at(body, opening.start(), _BETWEEN_OBJECTS)
        if read is None:
            break
        items, close = read
        if close - opening.start() > 2 * _PIECE_BYTES:
            rest += [body[kept : opening.start()], _STAND_IN % (word, len(lists))]
            lists.append(items)
            kept = close + 1
        after = close + 1
    if not lists:
        return orjson.loads(raw)
    rest.append(body[kept:])
    try:
        outside = orjson.loads(b"".join(rest))
    except orjson.JSONDecodeError:
        # A "list" found inside a string (a text holding `[{},{}...]`): its stand-in broke
        # the string. Read whole, by orjson still (not the standard library's parser).
        return orjson.loads(raw)
    for long_list in lists[scalar_lists:] if scalar_lists else ():
        # Lists of scalars set aside within the lists of objects.
        _put_back(long_list, word.decode(), lists[:scalar_lists])
    return _put_back(outside, word.decode(), lists)


def _scalar_lists_set_aside(body: bytes, word: bytes, lists: list[list[Any]]) -> bytes:
    """`body` with each long list of strings, numbers, true, false or null, at any depth,
    read a piece at a time into `lists` and replaced by its stand-in. Such a list is found
    where `2 * _PIECE_BYTES` bytes hold no bracket: its opening is the last `[` before them,
    if no `]` closes it first. (A list of texts holding brackets is read whole, as before.)"""
    rest: list[bytes] = []
    kept, after, in_vain = 0, 0, 0
    step = 2 * _PIECE_BYTES
    window = after
    while window + step < len(body) and in_vain < _OPENINGS_IN_VAIN:
        if any(body.find(bracket, window, window + step) != -1 for bracket in _BRACKETS):
            window += _PIECE_BYTES
            continue
        opening = body.rfind(b"[", after, window)
        read = None
        if opening != -1 and body.find(b"]", opening, window) == -1:
            read = _list_at(body, opening, _BETWEEN_SCALARS)
            in_vain += read is None
        if read is None:  # (a long text, or a list holding lists first): none opens before
            after = window = window + step
            continue
        items, close = read
        if close - opening > 2 * _PIECE_BYTES:
            rest += [body[kept:opening], _STAND_IN % (word, len(lists))]
            lists.append(items)
            kept = close + 1
        after = window = max(close + 1, window + step)
    if not lists:
        return body
    rest.append(body[kept:])
    return b"".join(rest)


def _list_at(body: bytes, opening: int, between: re.Pattern[bytes]) -> tuple[list[Any], int] | None:
    """The elements of the list opening at `opening` and where its closing bracket is, read a
    piece at a time, cut where `between` matches; None when no list opens there."""
    items: list[Any] = []
    start, wrong = opening + 1, 0
    search_from = start + _PIECE_BYTES
    while wrong < _WRONG_CUTS:
        cut = between.search(body, search_from)
        if cut is None:
            break
        try:
            items.extend(orjson.loads(b"[" + body[start : cut.end() - 1] + b"]"))
        except orjson.JSONDecodeError:
            wrong += 1
            search_from = cut.end()
            continue
        start = cut.end()
        search_from = start + _PIECE_BYTES
    last = b"[" + body[start:]
    try:
        items.extend(orjson.loads(last))
        return items, len(body) - 1
    except orjson.JSONDecodeError as exc:
        if exc.msg != "unexpected content after document":
            return None
        # orjson counts characters, not bytes: the length in bytes of what it read.
        read = len(last[: 4 * exc.pos].decode("utf-8", "ignore")[: exc.pos].encode())
    items.extend(orjson.loads(last[:read]))
    return items, start - 1 + len(last[:read].rstrip(_JSON_SPACE)) - 1


def _put_back(value: Any, word: str, lists: list[list[Any]]) -> Any:
    """`value` with each stand-in replaced by its list (a stand-in a key given twice dropped
    is dropped, as its list would have been)."""
    stand_ins = {f"{word} {number}": items for number, items in enumerate(lists)}

    def long_list(child: Any) -> list[Any] | None:
        if type(child) is list and len(child) == 1 and type(child[0]) is str:
            return stand_ins.get(child[0])
        return None

    if (whole := long_list(value)) is not None:
        return whole
    stack = [value]
    while stack:
        node = stack.pop()
        for key, child in node.items() if isinstance(node, dict) else enumerate(node):
            if (items := long_list(child)) is not None:
                node[key] = items
            elif isinstance(child, dict | list):
                stack.append(child)
    return value


# A JSON text larger than this (a request body, an action server's answer) is parsed in a
# thread: parsing it takes long enough to hold up other requests.
OFF_LOOP_JSON_BYTES = 256 * 1024


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    # `1e400` is a JSON number the stdlib reads as infinity, which no JSON answer can hold.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large for a double")
    return value


def check_int_digits(digits: str, what: str) -> None:
    """ValueError when Python reads no integer of that many decimal `digits`, in a client's
    terms: its own error says to call `sys.set_int_max_str_digits()`, which tells a client
    nothing. `what` names the integer in the message."""
    limit = sys.get_int_max_str_digits()
    if limit and len(digits) > limit:
        raise ValueError(f"{what} has {len(digits):,} digits; at most {limit:,} are read")


def check_int_size(value: int, what: str) -> None:
    """ValueError, as `check_int_digits`, when `value` (read from hexadecimal, octal or
    binary, which have no such limit) has more decimal digits than Python writes: every
    message, tracker or JSON answer holding it would fail, a 500."""
    limit = sys.get_int_max_str_digits()
    # Below 2**(3 * limit) a number has fewer than `limit` digits: no power of 10 to build.
    if limit and value.bit_length() > 3 * limit and abs(value) >= 10**limit:
        raise ValueError(
            f"{what} has more than {limit:,} decimal digits; at most {limit:,} are read"
        )


def _bounded_int(text: str) -> int:
    check_int_digits(text.lstrip("-"), f"the integer {text[:40]}...")
    return int(text)


def loads_exact(data: str | bytes, *, constants: bool = False) -> Any:
    """JSON `data` as Python values, integers of any size exact. NaN and Infinity are refused
    unless `constants` (for text we wrote ourselves, which older versions may hold). Raises
    ValueError (json.JSONDecodeError included) on anything that is not JSON."""
    # str.translate is 7 times slower than encoding first.
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if not _has_long_digit_run(raw):
        try:
            return orjson.loads(data) if len(raw) <= 2 * _PIECE_BYTES else _orjson_in_pieces(raw)
        except orjson.JSONDecodeError:
            pass  # the stdlib gives the error (or reads what orjson refuses, e.g. deep nesting)
    if constants:
        return json.loads(data)
    return json.loads(
        data, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int
    )


def _has_long_digit_run(raw: bytes) -> bool:
    """Whether `raw` holds twenty digits in a row not just after a `.`; a long text is looked
    at a piece at a time (`_overlapping`), as one translate and search of the 10 MB of
    100,000 events held the GIL, so the event loop, 15 ms on a quiet machine and 45-80 ms
    beside other work."""
    if len(raw) <= 2 * _PIECE_BYTES:
        digits = raw.translate(_BYTES_DIGITS)  # a turn's text mostly has no run: no call
        return digits.find(_LONG_DIGIT_RUN) != -1 and _integer_run(digits)
    return any(
        _integer_run(piece.translate(_BYTES_DIGITS))
        for piece in _overlapping(raw, len(_LONG_DIGIT_RUN))
    )


def _integer_run(digits: bytes) -> bool:
    """Whether `digits` (a text with each digit mapped to 0) holds twenty zeros in a row
    that no `.` comes just before. A run at the very start counts (a piece's first byte may
    follow a `.` in the piece before: read by the stdlib, exactly, as before); so do those
    after `_FRACTIONS_LOOKED_PAST` fractions' runs (the stdlib reads it, as before: a text of
    many long fractions is no dearer to check than that read)."""
    # `find`, not `in`: CPython's `bytes in bytes` (3.11 at least) first reads its operand as
    # an integer, building and dropping a TypeError message: some 1,800 instructions a test.
    at = digits.find(_LONG_DIGIT_RUN)
    for _ in range(_FRACTIONS_LOOKED_PAST):
        if at == -1:
            return False
        if at == 0 or digits[at - 1] != _POINT:
            return True
        # The rest of the fraction's run, at C speed (a byte at a time took 0.14 s of CPU
        # for a fraction of a million digits).
        end = _NOT_ZERO.search(digits, at + len(_LONG_DIGIT_RUN))
        if end is None:
            return False
        at = digits.find(_LONG_DIGIT_RUN, end.start())
    return at != -1


def _has_surrogate_escape(raw: bytes) -> bool:
    """Whether `raw` holds a `\\uD800`-`\\uDFFF` escape, a piece at a time when long (as
    above). The plain search first: a turn's fast path."""
    if len(raw) <= 2 * _PIECE_BYTES:
        return raw.find(b"\\u") != -1 and _SURROGATE_ESCAPE.search(raw) is not None
    return any(
        piece.find(b"\\u") != -1 and _SURROGATE_ESCAPE.search(piece) is not None
        for piece in _overlapping(raw, 6)  # an escape is six bytes long
    )


def _overlapping(raw: bytes, length: int) -> Iterator[bytes]:
    """`raw` in pieces of `_PIECE_BYTES`, each beginning `length` - 1 bytes before its place,
    so that whatever `length` bytes the cuts split lies whole in one piece."""
    for start in range(0, len(raw), _PIECE_BYTES):
        yield raw[max(start - length + 1, 0) : start + _PIECE_BYTES]


# A `\uD800`-`\uDFFF` escape: only valid as half of a pair, so such text gets a full check.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class TooDeep(ValueError):
    """JSON nested more than MAX_DEPTH levels deep."""


# Levels of lists and objects a document from outside may nest (the YAML limit too). Values
# nested hundreds deep were read, then broke whatever wrote them again recursively (the SQL
# store's encoder, the story export's YAML): a 500 on every later read of the conversation.
MAX_DEPTH = 100


def nests_deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` nests more than `limit` lists and objects deep (without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def nests_deeper_in_text(text: str | bytes, value: Any, limit: int) -> bool:
    """`nests_deeper_than(value, limit)` for a value read from (or written as) `text`: each
    level opens and closes with a bracket, so a short text, or one with few brackets, is
    not walked."""
    if len(text) <= 2 * limit:
        return False
    if isinstance(text, bytes):
        brackets = text.count(b"[") + text.count(b"{")
    else:
        brackets = text.count("[") + text.count("{")
    return brackets > limit and nests_deeper_than(value, limit)


def loads_untrusted(raw: bytes) -> Any:
    """`loads_exact` for bytes from outside (a client, an action server): also refuses
    nesting too deep to read (`TooDeep`) and unpaired UTF-16 surrogate escapes, which no
    store, channel or later answer could encode as UTF-8. Raises ValueError."""
    try:
        value = loads_exact(raw)
    except RecursionError:
        raise TooDeep("it is nested too deeply") from None
    # Each level opens and closes with a bracket: a short body or few brackets, no walk (a
    # turn's body is decided by its length, without the two counts).
    if (
        len(raw) > 2 * MAX_DEPTH
        and isinstance(value, (dict, list))  # a tuple: `dict | list` builds a union each call
        and raw.count(b"[") + raw.count(b"{") > MAX_DEPTH
        and nests_deeper_than(value)
    ):
        raise TooDeep("it is nested too deeply")
    if _has_surrogate_escape(raw):
        for piece in _pieces(value):
            try:
                json.dumps(piece, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("it holds an unpaired UTF-16 surrogate escape") from None
    return value


# Elements of a list (or values of an object) written per call in the surrogate check: the C
# encoder holds the GIL for a whole call, and 5 MB of events in one held the loop 70 ms.
_ITEMS_PER_CHECK = 500


def _pieces(value: Any) -> list[Any]:
    """`value` as pieces of at most `_ITEMS_PER_CHECK` of its elements or values."""
    items = list(value.values()) if isinstance(value, dict) else value
    if not isinstance(items, list) or len(items) <= _ITEMS_PER_CHECK:
        return [value]
    return [
        items[start : start + _ITEMS_PER_CHECK] for start in range(0, len(items), _ITEMS_PER_CHECK)
    ]


def json_can_hold(value: Any) -> bool:
    """Whether `value`, decoded by a reader more lenient than ours (the stdlib's, as
    python-socketio uses), is what `loads_untrusted` would have accepted: no NaN or
    infinity, no unpaired surrogate, nothing but JSON types."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        return False
    return True


class _GivenTwice(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _refuse_a_key_given_twice(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(pairs) > 1:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _GivenTwice(key)
            seen.add(key)
    return {}  # the values are not kept: the document was read already


def key_given_twice(raw: bytes) -> str | None:
    """The first key found given twice in one object of the JSON `raw` (read already by
    `loads_untrusted`, so within MAX_DEPTH), or None. orjson and the stdlib keep its last
    value without a word; YAML, as Rasa reads a training body, refuses it."""
    try:
        json.loads(raw, object_pairs_hook=_refuse_a_key_given_twice)
    except _GivenTwice as twice:
        return twice.key
    return None
