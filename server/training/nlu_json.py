"""Rasa's JSON NLU format (`{"rasa_nlu_data": {"common_examples": ...}}`), read into
NLUTrainingData and written from it, for `botserver data convert nlu`."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from server.errors import InvalidProjectFile, brief, how_many
from server.json_values import MAX_DEPTH, TooDeep, loads_untrusted
from server.nlu.entity_markup import entity_field_problem, is_entity_value
from server.nlu.training_data import (
    EntityAnnotation,
    Example,
    NLUTrainingData,
    warn_inconsistent_synonym,
)
from server.training.yaml_io import example_too_long, read_project_text

ROOT_KEY = "rasa_nlu_data"
# What other tools' exports hold at their top level, to say what a file is when it is not ours.
_OTHER_FORMATS = {
    "luis_schema_version": "a LUIS export",
    "entities": "a Wit export",
    "data": "a Wit export",
    "responses": "a Dialogflow intent file",
}


# Other tools' NLU exports, as Rasa recognises them (it trains from them; we do not): a key
# at the top level, or a word in the file's name.
_FOREIGN_KEYS = {
    "luis_schema_version": "a LUIS export",
    "utterances": "a Wit export",
    "supportedLanguages": "a Dialogflow agent",
    "isEnum": "a Dialogflow agent",
}
_FOREIGN_NAMES = ("_usersays_", "_entries_")


def foreign_nlu_format(path: Path) -> str | None:
    """What another tool's NLU export a JSON file is (`a LUIS export`), or None."""
    if any(word in path.name for word in _FOREIGN_NAMES):
        return "a Dialogflow agent"
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if not any(f'"{key}"'.encode() in raw for key in _FOREIGN_KEYS):
        return None  # any other JSON file, however large or deep, is not parsed
    try:
        document = loads_untrusted(raw)
    except ValueError:  # TooDeep too
        return None
    keys = document if isinstance(document, dict) else {}
    return next((what for key, what in _FOREIGN_KEYS.items() if key in keys), None)


def read_nlu_json(path: Path) -> NLUTrainingData:
    """Reads one Rasa NLU JSON file; a mistake is an InvalidProjectFile naming the file and
    the line (of a syntax error) or the item (`common_examples[3]`)."""
    filename = str(path)
    text = read_project_text(path)
    document = load_project_json(text, filename)
    if not isinstance(document, dict) or not isinstance(document.get(ROOT_KEY), dict):
        other = next(
            (
                what
                for key, what in _OTHER_FORMATS.items()
                if isinstance(document, dict) and key in document
            ),
            None,
        )
        found = f"; this looks like {other}, which is not converted" if other else ""
        raise InvalidProjectFile(
            f"Rasa's JSON NLU format needs a '{ROOT_KEY}' object at the top level{found}",
            filename,
            json_line(text, [ROOT_KEY]),
        )
    return _Reader(filename, path.parent, text).read(document[ROOT_KEY])


def read_nlu_json_examples(section: dict[str, Any], source: str) -> NLUTrainingData:
    """Only the examples (`common_examples`) of Rasa's JSON NLU data, each entity as given,
    read as `read_nlu_json` reads them: the test data of a request, whose other sections
    could name files on this machine (a lookup table's)."""
    return _Reader(source, Path()).read_examples(section)


def load_project_json(text: str, filename: str) -> Any:
    """A project file's JSON, under its YAML's limit: nesting deeper than MAX_DEPTH levels, or
    text that is not JSON, is an InvalidProjectFile (with the line of a syntax error)."""
    try:
        return loads_untrusted(text.encode("utf-8", "surrogatepass"))
    except json.JSONDecodeError as exc:
        raise InvalidProjectFile(
            f"invalid JSON: {exc.msg} (column {exc.colno})", filename, exc.lineno
        ) from None
    except TooDeep:
        raise InvalidProjectFile(
            f"the JSON nests more than {MAX_DEPTH} levels deep", filename, _too_deep_line(text)
        ) from None
    except ValueError as exc:
        line = _unheld_value_line(text, surrogate="surrogate" in str(exc))
        raise InvalidProjectFile(f"invalid JSON: {exc}", filename, line) from None


# A string (escapes and all) or a character that opens, closes or separates: what
# `json_line` steps through; numbers, true, false and null lie between them.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],:]')
_JSON_ITEM = re.compile(r"[^ \t\r\n]")  # where a list's item (or its end) starts
_WHERE_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def json_line(text: str, path: list[str | int]) -> int | None:
    """The line (1-based) of the value at `path` (keys and list positions from the top) in
    the JSON `text`, at its key when it has one; the nearest enclosing value's line when the
    text has no such value. A key written twice in one object: the last, which is the one
    read. Read only when an error names it: a valid file costs nothing."""
    top = _JSON_ITEM.search(text)  # where the top-level value starts
    best = text.count("\n", 0, top.start()) + 1 if top else None
    kinds: list[str] = []  # "{" or "[" of each open container
    at: list[str | int | None] = []  # the key or list position read in each
    expecting_key = False

    def reached(position: int) -> None:
        # Each part of `path` is reached once, or again where a key is written twice: the
        # later one, read, replaces what was found under the earlier.
        nonlocal best
        if at == path[: len(at)]:
            best = text.count("\n", 0, position) + 1

    for token in _JSON_TOKEN.finditer(text):
        char = token.group()[0]
        if char in "{[":
            kinds.append(char)
            at.append(None if char == "{" else 0)
            expecting_key = char == "{"
        elif char in "}]":
            kinds.pop()
            at.pop()
            expecting_key = False
        elif char == ":":
            expecting_key = False
        elif char == "," and kinds and kinds[-1] == "{":
            expecting_key = True
        elif char == '"' and expecting_key:
            at[-1] = json.loads(token.group())
            reached(token.start())
            continue
        if char in "[," and kinds and kinds[-1] == "[":
            if char == ",":
                at[-1] = int(at[-1] or 0) + 1
            item = _JSON_ITEM.search(text, token.end())
            start = item.start() if item else len(text)
            if text[start : start + 1] != "]":
                reached(start)
    return best


def _too_deep_line(text: str) -> int | None:
    """The line where `text` opens its list or object MAX_DEPTH + 1 levels deep."""
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        char = token.group()[0]
        depth += 1 if char in "{[" else -1 if char in "}]" else 0
        if depth > MAX_DEPTH:
            return text.count("\n", 0, token.start()) + 1
    return None


# A string, or what the reader takes for a number (JSON's grammar: the reader stops at the
# first number it cannot hold, whatever is written right after it) or a constant.
_JSON_SCALAR = re.compile(
    r'"(?:[^"\\]|\\.)*"|NaN|-?Infinity|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?'
)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _unheld_value_line(text: str, surrogate: bool) -> int | None:
    """The line of the first value of valid JSON `text` no JSON answer can hold: a string
    with an unpaired surrogate (`surrogate`), else NaN, Infinity, a number beyond a double
    or an integer of more digits than Python reads. Looked for on that error only."""
    for token in _JSON_SCALAR.finditer(text):
        value = token.group()
        if value[0] == '"':
            found = surrogate and _SURROGATE.search(json.loads(value)) is not None
        elif surrogate:
            continue
        elif value[-1] in "yN":  # Infinity, NaN
            found = True
        elif value.lstrip("-").isdigit():  # an integer: read unless of too many digits
            found = len(value.lstrip("-")) > (sys.get_int_max_str_digits() or len(value))
        else:
            found = not math.isfinite(float(value))
        if found:
            return text.count("\n", 0, token.start()) + 1
    return None


def _path(where: str) -> list[str | int]:
    """`common_examples[3].entities[0]` as [ROOT_KEY, 'common_examples', 3, 'entities', 0]."""
    return [ROOT_KEY] + [int(index) if index else key for index, key in _WHERE_PART.findall(where)]


class _Reader:
    def __init__(self, filename: str, directory: Path, text: str | None = None) -> None:
        self.filename = filename
        self.directory = directory
        self.text = text  # the file's, for the line of an error (none for a request's)
        self.data = NLUTrainingData()

    def error(self, where: str, message: str, key: str | None = None) -> InvalidProjectFile:
        """The error of the item at `where` (of its `key` when given), naming its line."""
        line = None
        if self.text is not None:
            line = json_line(self.text, _path(where) + ([key] if key else []))
        return InvalidProjectFile(f"{ROOT_KEY}.{where}: {message}", self.filename, line)

    def items(self, section: dict[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
        value = section.get(key) or []
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, not {brief(value)}")
        out = []
        for index, item in enumerate(value):
            where = f"{key}[{index}]"
            if not isinstance(item, dict):
                raise self.error(where, f"must be an object, not {brief(item)}")
            out.append((where, item))
        return out

    def annotated_synonyms(self) -> dict[str, tuple[str, str]]:
        """Each text the examples annotate with another value (lower case) -> that value and
        where, the last one winning, as the synonym mapper maps them; two values for one text
        are warned about as the YAML reader warns (Rasa's mapper warns at training)."""
        annotated: dict[str, tuple[str, str]] = {}
        for index, example in enumerate(self.data.examples):
            source = f"{self.filename}:common_examples[{index}]"
            for a in example.entities:
                text, value = example.text[a.start : a.end], str(a.value)
                if text == value:
                    continue
                before = annotated.get(text.lower())
                if before and before[0] != value:
                    warn_inconsistent_synonym(source, text, value, *before)
                annotated[text.lower()] = (value, source)
        return annotated

    def read_examples(self, section: dict[str, Any]) -> NLUTrainingData:
        for where, item in self.items(section, "common_examples"):
            self.data.examples.append(self.example(where, item))
        return self.data

    def read(self, section: dict[str, Any]) -> NLUTrainingData:
        self.read_examples(section)
        annotated = self.annotated_synonyms()
        for where, item in self.items(section, "entity_synonyms"):
            value, synonyms = item.get("value"), item.get("synonyms")
            # A number too, as Rasa writes the synonym of `[five]{"entity": .., "value": 5}`;
            # its mapper maps to the number's text.
            if not is_entity_value(value) or not isinstance(synonyms, list):
                raise self.error(
                    where,
                    "needs a 'value' (text or a number) and a list of 'synonyms'",
                    "synonyms" if is_entity_value(value) else "value",
                )
            source = f"{self.filename}:{where}"
            for synonym in synonyms:
                text, key = str(synonym), str(synonym).lower()
                before = annotated.get(key)
                if key not in self.data.synonyms and before and text != str(value) != before[0]:
                    warn_inconsistent_synonym(source, text, str(value), *before)
                self.data.add_synonym(text, str(value), source)
        for where, item in self.items(section, "regex_features"):
            name, pattern = item.get("name"), item.get("pattern")
            if not isinstance(name, str) or not isinstance(pattern, str):
                raise self.error(
                    where,
                    "needs a 'name' and a 'pattern' string",
                    "pattern" if isinstance(name, str) else "name",
                )
            try:
                re.compile(pattern)
            except re.error as exc:
                raise self.error(
                    where, f"invalid pattern {brief(pattern)}: {exc}", "pattern"
                ) from None
            self.data.regexes.append((name, pattern))
        for where, item in self.items(section, "lookup_tables"):
            name = item.get("name")
            if not isinstance(name, str):
                raise self.error(where, "needs a 'name' string", "name")
            self.data.add_lookup_elements(name, self.lookup_elements(where, item))
        return self.data

    def example(self, where: str, item: dict[str, Any]) -> Example:
        text, intent = item.get("text"), item.get("intent")
        if not isinstance(text, str) or not text.strip():
            raise self.error(where, "needs a 'text' string", "text")
        if (too_long := example_too_long(text)) is not None:
            raise self.error(where, too_long, "text")
        if intent is not None and (not isinstance(intent, str) or not intent.strip()):
            raise self.error(where, f"'intent' must be a name, not {brief(intent)}", "intent")
        entities = item.get("entities") or []
        if not isinstance(entities, list):
            raise self.error(where, "'entities' must be a list", "entities")
        annotations = [
            self.entity(f"{where}.entities[{i}]", entity, text) for i, entity in enumerate(entities)
        ]
        metadata = item.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise self.error(where, "'metadata' must be an object", "metadata")
        if metadata and not set(metadata) <= {"intent", "example"}:
            metadata = {"example": metadata}  # an example's own, as Rasa's YAML keeps it
        return Example(text, intent.strip() if intent else None, annotations, metadata or None)

    def entity(self, where: str, entity: Any, text: str) -> EntityAnnotation:
        if not isinstance(entity, dict):
            raise self.error(where, "must be an object")
        start, end, name = entity.get("start"), entity.get("end"), entity.get("entity")
        if not isinstance(name, str) or not name:
            raise self.error(where, "needs an 'entity' name")
        if (
            type(start) is not int  # Rasa's schema: a number, and true is none
            or type(end) is not int
            or not 0 <= start < end <= len(text)
        ):
            length = how_many(len(text), "character")
            raise self.error(
                where, f"'start' and 'end' must mark a part of the text ({length})", "start"
            )
        problem = entity_field_problem(entity)
        if problem:
            raise self.error(where, problem)
        value = entity.get("value", text[start:end])
        return EntityAnnotation(start, end, value, name, entity.get("role"), entity.get("group"))

    def lookup_elements(self, where: str, item: dict[str, Any]) -> list[str]:
        elements = item.get("elements")
        if isinstance(elements, list):
            return [str(e) for e in elements]
        if not isinstance(elements, str):
            raise self.error(where, "needs 'elements': a list, or a file of one element a line")
        # Rasa 2 reads a file (relative to the working directory); Rasa 3 YAML has no such
        # thing, so its lines are written in.
        for candidate in (Path(elements), self.directory / elements):
            if candidate.is_file():
                lines = read_project_text(candidate).splitlines()
                self.data.lookup_files.append(candidate)
                return [line.strip() for line in lines if line.strip()]
        raise self.error(where, f"the lookup table file {elements!r} does not exist")


def nlu_json(data: NLUTrainingData) -> str:
    """The data in Rasa's JSON NLU format (examples, synonyms, regexes, lookup tables)."""
    examples = []
    for example in data.examples:
        item: dict[str, Any] = {"text": example.text}
        if example.intent:
            item["intent"] = example.intent
        item["entities"] = [e.as_dict() for e in example.entities]
        if example.metadata:
            item["metadata"] = example.metadata
        examples.append(item)
    synonyms = data.synonyms_by_value()
    document = {
        ROOT_KEY: {
            "common_examples": examples,
            "regex_features": [{"name": n, "pattern": p} for n, p in data.regexes],
            "lookup_tables": [{"name": n, "elements": e} for n, e in data.lookups.items()],
            "entity_synonyms": [{"value": v, "synonyms": s} for v, s in synonyms.items()],
        }
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
