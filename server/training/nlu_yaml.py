"""Read the `nlu:` and retrieval `responses:` sections of Rasa 3 YAML files into
NLUTrainingData, with file and line in every error; and write NLUTrainingData as such a file."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import yaml

from server.errors import InvalidProjectFile, brief
from server.nlu.entity_markup import parse_annotated_text
from server.nlu.training_data import EntityAnnotation, Example, NLUTrainingData, annotated_text
from server.training.yaml_io import (
    SafeLoader12,
    check_depth,
    check_example_length,
    dump_yaml,
    read_project_text,
    unreadable_character,
)

logger = logging.getLogger(__name__)

_Loader = SafeLoader12

_ITEM_KINDS = ("intent", "synonym", "regex", "lookup")
_ITEM_KEYS = {"intent": {"intent", "examples", "metadata"}}
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"


def read_nlu_file(path: str | Path) -> NLUTrainingData:
    """Read one YAML file; sections other than `nlu:` and `responses:` are ignored."""
    return read_nlu_yaml(read_project_text(path), str(path))


def read_nlu_yaml(text: str, filename: str = "<string>") -> NLUTrainingData:
    """Parse YAML text holding NLU training data."""
    try:
        check_depth(text, filename)
        root = yaml.compose(text, Loader=_Loader)
    except yaml.reader.ReaderError as e:
        message, line = unreadable_character(e, text)
        raise InvalidProjectFile(message, filename, line) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InvalidProjectFile(f"invalid YAML: {e}", filename, line) from e
    data = NLUTrainingData()
    if root is None:
        return data
    if not isinstance(root, yaml.MappingNode):
        raise InvalidProjectFile("expected a mapping at the top level", filename, _line(root))
    _check_unique_keys(root, filename)
    skips = _SkipWarnings(filename)
    try:
        for key_node, value_node in root.value:
            key = key_node.value
            if key == "nlu":
                _read_nlu_section(value_node, filename, data, text, skips)
            elif key == "responses":
                _read_responses(value_node, filename, data)
    except InvalidProjectFile as exc:
        if exc.filename is None:  # a value the YAML loader could not build
            raise InvalidProjectFile(exc.reason, filename, exc.line) from None
        raise
    skips.summarise()
    return data


class _SkipWarnings:
    """The warnings about a file's block lines read as no example (blank, or not starting
    with '- '): the first few one by one, the rest counted in one line, so a file of 10,000
    blank lines logs 11 lines, not 10,000."""

    SHOWN = 10

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.count = 0
        self.first_unshown: int | None = None

    def warn(self, line: int, what: str, *args: Any) -> None:
        self.count += 1
        if self.count <= self.SHOWN:
            logger.warning("%s:%s: " + what, self.filename, line, *args)
        elif self.first_unshown is None:
            self.first_unshown = line

    def summarise(self) -> None:
        if self.count > self.SHOWN:
            logger.warning(
                "%s: %d more blank or skipped example lines from line %s on, not listed one "
                "by one (%d in all)",
                self.filename,
                self.count - self.SHOWN,
                self.first_unshown,
                self.count,
            )


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _check_unique_keys(node: yaml.MappingNode, filename: str) -> None:
    """A key given twice in `node` is an error, as in Rasa's YAML reader (a second value
    silently replaced the first, or a second `nlu:` section was read as well)."""
    first: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key is None or key == "<<":
            continue
        if key in first:
            raise InvalidProjectFile(
                f"the key {brief(key)} is given twice in one mapping (first on line {first[key]})",
                filename,
                _line(key_node),
            )
        first[key] = _line(key_node)


def _to_python(node: yaml.Node) -> Any:
    """Construct plain Python values from a composed node."""
    loader = _Loader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _read_nlu_section(
    node: yaml.Node, filename: str, data: NLUTrainingData, text: str, skips: _SkipWarnings
) -> None:
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
        return
    if not isinstance(node, yaml.SequenceNode):
        raise InvalidProjectFile("'nlu' must be a list of items", filename, _line(node))
    for item in node.value:
        if not isinstance(item, yaml.MappingNode):
            raise InvalidProjectFile(
                "each 'nlu' item must be a mapping with one of the keys " + ", ".join(_ITEM_KINDS),
                filename,
                _line(item),
            )
        _check_unique_keys(item, filename)
        fields = {k.value: v for k, v in item.value}
        kinds = [k for k in _ITEM_KINDS if k in fields]
        if len(kinds) != 1:
            raise InvalidProjectFile(
                "an 'nlu' item needs exactly one of the keys " + ", ".join(_ITEM_KINDS),
                filename,
                _line(item),
            )
        kind = kinds[0]
        _check_keys(item, _ITEM_KEYS.get(kind, {kind, "examples"}), f"{kind} item", filename)
        name_node = fields[kind]
        name = str(name_node.value).strip() if isinstance(name_node, yaml.ScalarNode) else ""
        if not name:
            raise InvalidProjectFile(f"'{kind}' needs a name", filename, _line(name_node))
        if not _is_text(name_node):
            # `intent: 3` (or `yes`): Rasa's schema refuses a name that is no string.
            message = (
                f"'{kind}' must be text, the value its examples map to, not {name_node.value}: "
                f'quote it ({kind}: "{name_node.value}"), as Rasa\'s schema takes only text'
                if kind == "synonym"
                else f"'{kind}' must be a name such as '{kind}: my_{kind}', not "
                f"{name_node.value}; quote it if it is meant as text"
            )
            raise InvalidProjectFile(message, filename, _line(name_node))
        examples_node = fields.get("examples")
        if examples_node is None:
            if kind != "intent":
                # As Rasa's reader, and as an empty `examples:` below (before: an error).
                _skipped_without_examples(kind, name, filename, _line(item))
            continue
        metadata_node = fields.get("metadata")
        item_metadata = _to_python(metadata_node) if metadata_node is not None else None
        lines = _example_lines(examples_node, filename, text, skips)
        if (
            not lines
            and _holds_text(examples_node)
            and (kind == "lookup" or not _is_text(examples_node))
        ):
            # A lookup file path (Rasa 2) or `examples: 3`: the item would train as empty.
            # (An intent's lines without '- ' are skipped with a warning, as in Rasa.)
            hint = "; Rasa 3 no longer reads lookup tables from files" if kind == "lookup" else ""
            raise InvalidProjectFile(
                f"the 'examples' of {kind} '{name}' hold no '- ' lines, "
                f"only {brief(examples_node.value)}{hint}",
                filename,
                _line(examples_node),
            )
        if not lines and kind != "intent":
            # As Rasa's reader: an empty table is no data (alone, nothing to train).
            _skipped_without_examples(kind, name, filename, _line(examples_node))
        elif kind == "intent":
            for raw, line, metadata in lines:
                check_example_length(raw, filename, line, markup=True)
                text, entities = parse_annotated_text(raw, filename, line)
                check_example_length(text, filename, line)
                merged = _merge_metadata(item_metadata, metadata)
                data.examples.append(Example(text, name, entities, merged))
                # `[NYC](city:New York)` makes "NYC" a synonym of "New York", as in Rasa.
                for a in entities:
                    data.add_synonym(text[a.start : a.end], str(a.value), f"{filename}:{line}")
        elif kind == "synonym":
            for raw, line, _ in lines:
                data.add_synonym(raw, name, f"{filename}:{line}")
        elif kind == "regex":
            for raw, line, _ in lines:
                try:
                    re.compile(raw)
                except re.error as e:
                    raise InvalidProjectFile(
                        f"regex '{name}' has an invalid pattern {brief(raw)}: {e}", filename, line
                    ) from e
                data.regexes.append((name, raw))
        else:
            data.add_lookup_elements(name, (raw for raw, _, _ in lines))


def _check_keys(node: yaml.MappingNode, allowed: set[str], what: str, filename: str) -> None:
    """A key Rasa's NLU schema does not allow here is an error, as in Rasa: a misspelt
    `exmaples:` left the intent without examples, without a word."""
    for key_node, _ in node.value:
        if key_node.value not in allowed:
            raise InvalidProjectFile(
                f"unknown key {brief(key_node.value)} in an 'nlu' {what}; allowed: "
                + ", ".join(sorted(allowed)),
                filename,
                _line(key_node),
            )


def _holds_text(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag != _NULL_TAG and bool(node.value.strip())


def _is_text(node: yaml.Node) -> bool:
    return node.tag == _STR_TAG


def _merge_metadata(item: Any, example: Any) -> dict | None:
    if item is None and example is None:
        return None
    merged: dict = {}
    if isinstance(item, dict):
        merged["intent"] = item
    if isinstance(example, dict):
        merged["example"] = example
    return merged or None


def _example_lines(
    node: yaml.Node, filename: str, source: str, skips: _SkipWarnings
) -> list[tuple[str, int, Any]]:
    """(text, line, metadata) for each example of a block string or a list (`source`: the
    file's text, to find a folded block's lines; `skips` warns about lines read as none)."""
    if isinstance(node, yaml.ScalarNode):
        value = node.value
        # A block scalar's content starts on the line after the `|` indicator.
        first = _line(node) + (1 if node.style in ("|", ">") else 0)
        folded = _FoldedLines(node, source) if node.style == ">" else None
        out = []
        # The value's lines as Rasa's reader splits them (`splitlines`: no last empty line
        # after the block's final line break, and a break at U+2028 or U+2029, which YAML
        # keeps in the value as a line break of its own).
        raws = value.splitlines()
        for offset, raw in enumerate(raws):
            stripped = raw.strip()
            if not stripped:
                # Rasa warns about each blank line of a block (an example not starting with
                # '-'); it reads nothing from it.
                line = first + offset if folded is None else folded.blank_line(first + offset)
                skips.warn(
                    line,
                    "a blank line among the examples; nothing is read from it (Rasa warns "
                    "about it too)",
                )
                continue
            line = first + offset if folded is None else folded.line_of(stripped, first + offset)
            if not raw.startswith("-"):
                # Rasa skips such lines with a warning, including a '- ' line indented more
                # than the block's first line: its value starts with spaces. Trained here,
                # it made a model Rasa would not have made from the same files.
                why = (
                    "starts with spaces (indented more than the block)"
                    if stripped.startswith("-")
                    else "does not start with '- '"
                )
                skips.warn(
                    line, "training example %r %s and is skipped, as Rasa skips it", stripped, why
                )
                continue
            example = stripped[1:].strip()
            if example:
                out.append((example, line, None))
        return out
    if isinstance(node, yaml.SequenceNode):
        out = []
        for entry in node.value:
            if isinstance(entry, yaml.ScalarNode):
                out.append((_example_text(entry, filename), _line(entry), None))
                continue
            if not isinstance(entry, yaml.MappingNode):
                raise InvalidProjectFile("invalid training example", filename, _line(entry))
            _check_keys(entry, {"text", "metadata"}, "training example", filename)
            fields = {k.value: v for k, v in entry.value}
            text_node = fields.get("text")
            if not isinstance(text_node, yaml.ScalarNode):
                raise InvalidProjectFile(
                    "a training example needs a 'text'", filename, _line(entry)
                )
            metadata_node = fields.get("metadata")
            metadata = _to_python(metadata_node) if metadata_node is not None else None
            out.append((_example_text(text_node, filename), _line(text_node), metadata))
        return out
    raise InvalidProjectFile(
        "'examples' must be a block string of '- ' lines or a list", filename, _line(node)
    )


class _FoldedLines:
    """The source lines of a folded block (`examples: >`): folding drops a line break per
    blank line and joins adjacent lines, so a line of the value is not the line of the same
    offset in the file. Each line of the value is found from where the last one was."""

    def __init__(self, node: yaml.ScalarNode, source: str) -> None:
        self.lines = source.split("\n")[node.start_mark.line + 1 : node.end_mark.line + 1]
        self.top = node.start_mark.line + 2  # the 1-based line of `self.lines[0]`
        self.cursor = 0

    def line_of(self, stripped: str, otherwise: int) -> int:
        """The line `stripped` (a line of the value) starts on, or `otherwise` if the file
        does not show it."""
        for index in range(self.cursor, len(self.lines)):
            start = self.lines[index].strip()
            if start and stripped.startswith(start):
                self.cursor = index + 1
                return self.top + index
        return otherwise

    def blank_line(self, otherwise: int) -> int:
        """The line of a blank line of the value: the first blank one after the last line
        found, or `otherwise` (each blank line found once: the next one names the next)."""
        for index in range(self.cursor, len(self.lines)):
            if not self.lines[index].strip():
                self.cursor = index + 1
                return self.top + index
        return otherwise


def _example_text(node: yaml.ScalarNode, filename: str) -> str:
    """A listed example's text; an empty one (`text: ''`, `text:`, `- ~`) is an error: it
    trained as the text '' (or 'null'), so every message of unknown words was its intent,
    confidently (an empty regex or lookup element is no pattern at all)."""
    null = node.tag == _NULL_TAG
    text = "" if null else str(node.value).strip()
    if not text:
        # `~` or `null` is YAML's null; a quoted blank text ('  ') is not
        hint = f" ({node.value!r} is YAML's null; quote it to keep it as text)"
        why = hint if null and node.value else ""
        raise InvalidProjectFile(
            f"a training example's text is empty{why}; remove it or write its text",
            filename,
            _line(node),
        )
    return text


def _skipped_without_examples(kind: str, name: Any, filename: str, line: int) -> None:
    logger.warning("%s:%s: %s '%s' has no examples; it is skipped", filename, line, kind, name)


def _read_responses(node: yaml.Node, filename: str, data: NLUTrainingData) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        name = str(key_node.value)
        if "/" not in name:
            continue  # plain responses belong to the domain reader
        variations = _to_python(value_node)
        if not isinstance(variations, list) or not all(isinstance(v, dict) for v in variations):
            raise InvalidProjectFile(
                f"response '{name}' must be a list of mappings", filename, _line(value_node)
            )
        data.responses[name] = variations


# ------------------------------------------------------------------------------- writing


def nlu_yaml(data: NLUTrainingData) -> str:
    """The data as one Rasa 3 NLU file. An intent's examples are a block of `- ` lines, or,
    where one has metadata or a line break, a list of `text:` items (with `metadata:`);
    examples without an intent have no place in it and are left out."""
    by_intent: dict[str, list[Example]] = {}
    for example in data.examples:
        if example.intent:
            by_intent.setdefault(example.intent, []).append(example)
    nlu: list[dict[str, Any]] = [
        _intent_item(name, examples) for name, examples in by_intent.items()
    ]
    synonyms = data.synonyms_by_value()
    nlu += [{"synonym": value, "examples": _lines(texts)} for value, texts in synonyms.items()]
    nlu += [{"regex": name, "examples": _lines([pattern])} for name, pattern in data.regexes]
    nlu += [
        {"lookup": name, "examples": _lines(list(items))} for name, items in data.lookups.items()
    ]
    document: dict[str, Any] = {"version": "3.1", "nlu": nlu}
    if data.responses:
        document["responses"] = data.responses
    return dump_yaml(document)


def _lines(texts: list[str]) -> str:
    """A literal block of `- ` lines (`dump_yaml` writes text of several lines as one)."""
    return "".join(f"- {text}\n" for text in texts)


def _written(example: Example) -> str:
    """The example's text in markup, with a warning for each entity the markup cannot hold."""
    left_out: list[EntityAnnotation] = []
    text = annotated_text(example.text, example.entities, left_out).strip()
    for entity in left_out:
        logger.warning(
            "Example %s: the entity %s at %d-%d overlaps another or lies outside the text, "
            "which Rasa's markup cannot write; it is left out",
            brief(example.text),
            brief(entity.entity),
            entity.start,
            entity.end,
        )
    return text


def _intent_item(name: str, examples: list[Example]) -> dict[str, Any]:
    item: dict[str, Any] = {"intent": name}
    intent_metadata = next(
        (e.metadata["intent"] for e in examples if e.metadata and e.metadata.get("intent")), None
    )
    if intent_metadata:
        item["metadata"] = intent_metadata
    # Reading YAML strips an example's edges (as Rasa's reader does), so a JSON text ending in
    # a line break ("yes\n") is written as it reads back, `- yes`, not as a `text: |` block.
    texts = [_written(e) for e in examples]
    own = [(e.metadata or {}).get("example") for e in examples]
    # A break the reader splits a block at (`splitlines`: U+2028, `\r`, ... too) needs the list.
    if any(own) or any(len(t.splitlines()) > 1 for t in texts):
        listed: list[dict[str, Any]] = []
        for text, metadata in zip(texts, own, strict=True):
            listed.append({"text": text, "metadata": metadata} if metadata else {"text": text})
        item["examples"] = listed
    else:
        item["examples"] = _lines(texts)
    return item
