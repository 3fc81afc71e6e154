"""Read Rasa's entity markup in a training text (`[Berlin](city)`, `[Berlin]{"entity": ...}`,
`[Berlin][{...}, {...}]`): the plain text and the entities it marks, with file and line in
every error. Training files, stories and a conversation's story read it alike."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from server.errors import InvalidProjectFile, brief
from server.json_values import MAX_DEPTH, TooDeep, loads_untrusted
from server.nlu.training_data import EntityAnnotation

# An annotation `[text]` is followed by its markup: `(entity)`, `(entity:value)`,
# `{"entity": ..., "role": ...}` or, for several entities on one text,
# `[{"entity": ...}, {"entity": ...}]`. The text holds no `]`; found by `_annotations`.
_MARKUP = re.compile(
    r"\((?P<entity>[^:)]+)(?::(?P<value>[^)]*))?\)|(?P<json>\{[^}]*\})"
    r"|(?P<list>\[\s*\{.*?\}\s*\])"
)
# What closes each kind of markup (by its first character): none further on, no match.
_ENDS = {
    "(": re.compile(r"\)"),
    "{": re.compile(r"\}"),
    "[": re.compile(r"\}\s*\]"),
    "\n": re.compile(r"\n"),
}
_LIST_HEAD = re.compile(r"\[\s*\{")


def parse_annotated_text(
    raw: str, filename: str = "<string>", line: int | None = None
) -> tuple[str, list[EntityAnnotation]]:
    """Strip entity markup from `raw`; offsets index the cleaned text."""
    entities: list[EntityAnnotation] = []
    pieces: list[str] = []
    cursor = 0
    length = 0
    for opening, closing, match in _annotations(raw):
        before = raw[cursor:opening]
        pieces.append(before)
        length += len(before)
        span_text = raw[opening + 1 : closing]
        start, end = length, length + len(span_text)
        pieces.append(span_text)
        length = end
        cursor = match.end()
        markup = match.group("list") or match.group("json")
        if markup is not None:
            for spec in _entity_specs(markup, filename, line):
                entities.append(_entity(spec, span_text, start, end))
        else:
            value_text = match.group("value")
            value = value_text if value_text else span_text
            entities.append(EntityAnnotation(start, end, value, match.group("entity").strip()))
    pieces.append(raw[cursor:])
    return "".join(pieces), entities


def markup_cuts(raw: str) -> list[tuple[int, int]]:
    """The stretches of `raw` that `parse_annotated_text` takes off, in order: each
    annotation's `[` and its `](...)`, `]{...}` or `][...]`."""
    return [
        cut
        for opening, closing, match in _annotations(raw)
        for cut in ((opening, opening + 1), (closing, match.end()))
    ]


def _annotations(raw: str) -> Iterator[tuple[int, int, re.Match[str]]]:
    """Each annotation's `[` and `]` and its markup, as `\\[[^\\]]+\\]` and `_MARKUP` would
    find them (the leftmost first), in time linear in `raw`'s length: that regex searched the
    rest of the line from every `[` (100 KB of `[` took 40 s, holding the GIL)."""
    ends: dict[str, int] = {}  # each kind's next place, from where it was last looked for

    def next_place(kind: str, at: int) -> int:
        """Where `_ENDS[kind]` is next found from `at` (-1: nowhere); `at` only grows."""
        place = ends.get(kind)
        if place is None or -1 < place < at:  # so each stretch of `raw` is searched once
            found = _ENDS[kind].search(raw, at)
            place = ends[kind] = found.start() if found else -1
        return place

    position = 0
    while (closing := raw.find("]", position)) != -1:
        opening = raw.find("[", position, closing)
        kind = raw[closing + 1 : closing + 2]
        if opening != -1 and opening + 1 < closing and kind in ("(", "{", "["):
            after = closing + 2
            if kind == "[":  # a list: `[{`, then its `.*?` on that line to `}]`
                head = _LIST_HEAD.match(raw, closing + 1)
                after = head.end() if head else -1
            end = next_place(kind, after) if after != -1 else -1
            line_end = next_place("\n", after) if kind == "[" and end != -1 else -1
            if end != -1 and (line_end == -1 or end < line_end):
                match = _MARKUP.match(raw, closing + 1)
                if match:
                    yield opening, closing, match
                    position = match.end()
                    continue
        position = closing + 1


def _entity_specs(raw: str, filename: str, line: int | None) -> list[dict[str, Any]]:
    """The entity JSON of an annotation, one object or a list of them; each needs an
    `entity` name; as in Rasa's entity schema, its value is text or a number and its role
    and group are text."""
    try:
        parsed = loads_untrusted(raw.encode("utf-8", "surrogatepass"))
    except json.JSONDecodeError as e:
        raise InvalidProjectFile(
            f"invalid entity JSON {brief(raw)}: {e.msg}", filename, line
        ) from e
    except TooDeep:  # a YAML string's JSON, which the YAML file's own limit does not see
        raise InvalidProjectFile(
            f"entity JSON {brief(raw)} nests more than {MAX_DEPTH} levels deep", filename, line
        ) from None
    except ValueError as e:
        raise InvalidProjectFile(f"invalid entity JSON {brief(raw)}: {e}", filename, line) from e
    specs = parsed if isinstance(parsed, list) else [parsed]
    for spec in specs:
        if not isinstance(spec, dict) or not isinstance(spec.get("entity"), str):
            raise InvalidProjectFile(
                f"entity JSON {brief(raw)} needs an 'entity' string",
                filename,
                line,
            )
        problem = entity_field_problem(spec)
        if problem:
            raise InvalidProjectFile(f"entity JSON {brief(raw)}: {problem}", filename, line)
    return specs


def entity_field_problem(entity: dict[str, Any]) -> str | None:
    """What is wrong with an entity's value, role or group by Rasa's entity schema, or None:
    a value is text or a number (JSON's: not true or false; Rasa keeps the number, and its
    synonym mapper maps the span's text to the number's text), a role or group is text."""
    value = entity.get("value", "")
    if not is_entity_value(value):
        return f"'value' must be text or a number, not {brief(value)}"
    for key in ("role", "group"):
        if key in entity and not isinstance(entity[key], str):
            return f"'{key}' must be text, not {brief(entity[key])}"
    return None


def is_entity_value(value: Any) -> bool:
    """Whether Rasa's schema takes `value` as an entity's (or a synonym's) value: text or a
    JSON number, which true and false are not."""
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _entity(spec: dict[str, Any], text: str, start: int, end: int) -> EntityAnnotation:
    return EntityAnnotation(
        start, end, spec.get("value", text), spec["entity"], spec.get("role"), spec.get("group")
    )
