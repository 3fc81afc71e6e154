"""YAML reading that remembers where things came from.

Mappings and sequences come back as `LineDict` / `LineList`, which carry the 1-based line
they start on, so every reader can name the file and line of a mistake.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from server.dialogue.messages import MAX_TEXT_CHARS
from server.errors import InvalidProjectFile, MissingEnvironmentVariable, brief
from server.yaml_scalars import SafeDumper12, construct_int_1_2, resolvers_1_2

logger = logging.getLogger(__name__)

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class LineDict(dict):
    """A dict that knows the line it starts on and the line of each key."""

    line: int | None = None
    key_lines: dict[Any, int]


class LineList(list):
    """A list that knows the line it starts on and the line of each item."""

    line: int | None = None
    item_lines: list[int]


def line_of(obj: Any, key: Any = None, default: int | None = None) -> int | None:
    """The line of `obj` (or of `obj[key]`) when it was read from YAML."""
    if key is not None:
        if isinstance(obj, LineDict):
            return obj.key_lines.get(key, obj.line)
        if isinstance(obj, LineList) and isinstance(key, int) and key < len(obj.item_lines):
            return obj.item_lines[key]
    return getattr(obj, "line", default) or default


# The newest training data format Rasa 3 (and so botserver) reads.
LATEST_FORMAT = (3, 1)
_VERSION = re.compile(r"(\d+)(?:\.(\d+))?(?:\.\d+)*")


def check_version(data: dict[Any, Any], filename: str) -> None:
    """A project file's optional `version:` must be a string (`3.1` unquoted is a float)
    naming a format no newer than 3.1. Rasa skips a newer file with a warning (a domain
    then trains as empty); we refuse it."""
    version = data.get("version")
    if version is None:
        return
    if not isinstance(version, str):
        raise InvalidProjectFile(
            f"'version' must be a quoted string such as \"3.1\", not {brief(version)}",
            filename,
            line_of(data, "version"),
        )
    parsed = _VERSION.fullmatch(version.strip())
    if parsed is None or (int(parsed[1]), int(parsed[2] or 0)) > LATEST_FORMAT:
        raise InvalidProjectFile(
            f"'version' {brief(version)} is not a format this server reads; use version: \"3.1\"",
            filename,
            line_of(data, "version"),
        )


class SafeLoader12(_BaseLoader):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader reading plain scalars as YAML 1.2 does (and so Rasa)."""

    yaml_implicit_resolvers = resolvers_1_2()

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A value whose type YAML knows but which cannot be built (`2023-02-30`, `!!float x`,
        `!!int ten`) is an InvalidProjectFile naming its line: PyYAML's ValueError (or
        KeyError, AttributeError) escaped, a traceback, a 500 from `POST /model/train`."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            kind = str(node.tag).rsplit(":", 1)[-1]
            why = f" ({exc})" if isinstance(exc, ValueError) else ""
            raise InvalidProjectFile(
                f"{brief(node.value)} is not a valid {kind}{why}; quote it to keep it as text",
                None,
                node.start_mark.line + 1,
            ) from None


SafeLoader12.add_constructor("tag:yaml.org,2002:int", construct_int_1_2)


class _LineLoader(SafeLoader12):
    """Safe loader that builds LineDict / LineList."""


def _construct_mapping(loader: Any, node: yaml.MappingNode) -> LineDict:
    own = node.value
    loader.flatten_mapping(node)
    # flatten_mapping puts the pairs of `<<:` merges before the mapping's own pairs, which
    # may override them; only a key given twice among its own pairs is a mistake.
    own_start = len(node.value) - len(own)
    own_keys: set[Any] = set()
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in result
        except TypeError:
            raise InvalidProjectFile(
                "a mapping key must be a plain value", None, key_node.start_mark.line + 1
            ) from None
        if own_start:
            if index < own_start:
                duplicate = False
            else:
                duplicate = key in own_keys
                own_keys.add(key)
        if duplicate:
            # As Rasa's YAML reader: a second value silently replaced the first.
            raise InvalidProjectFile(
                f"the key {brief(key)} is given twice in one mapping (first on line "
                f"{result.key_lines[key]})",
                None,
                key_node.start_mark.line + 1,
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: Any, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


class _PlainLoader(SafeLoader12):
    """Safe loader of plain dicts and lists that refuses a key given twice, as `_LineLoader`."""


def _construct_plain_mapping(loader: Any, node: yaml.MappingNode) -> dict[Any, Any]:
    return dict(_construct_mapping(loader, node))


_PlainLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_plain_mapping
)


def load_plain_yaml(text: str) -> Any:
    """YAML as plain Python values (`yaml.safe_load`); a key given twice in one mapping,
    nesting deeper than MAX_DEPTH, or aliases expanding the document beyond
    MAX_EXPANDED_VALUES values, is an InvalidProjectFile (with its line where there is one);
    other errors are PyYAML's."""
    check_depth(text)
    data = yaml.load(text, Loader=_PlainLoader)  # noqa: S506 - a safe loader subclass
    _check_expansion(data, None)
    return data


class _EnvLineLoader(_LineLoader):
    """Line-aware loader that also expands `${VAR}` in plain (unquoted) scalars, as Rasa does."""


def _construct_str_with_env(loader: Any, node: yaml.ScalarNode) -> Any:
    value = loader.construct_scalar(node)
    if isinstance(value, str) and _holds_braced_reference(value):
        if not node.style:
            return expand_env(value, line=node.start_mark.line + 1)
        # As Rasa (its resolver sees plain scalars only): a quoted `"${VAR}"` stays as
        # written. Said at start, since it reads as a setting that is simply wrong.
        loader.quoted_env_lines.append(node.start_mark.line + 1)
    return value


def _holds_braced_reference(value: str) -> bool:
    """What Rasa's resolver looks for before it substitutes: `${` and a `}` after it on one
    line of the value (`\\$\\{.*\\}`). Each line is searched once: that regular expression
    searched the rest of the line from every `${` no `}` closed (200 KB of `${` in one
    line of endpoints.yml took 15 s of CPU)."""
    start = value.find("${")
    while start != -1:
        line_end = value.find("\n", start)
        if value.find("}", start + 2, len(value) if line_end == -1 else line_end) != -1:
            return True
        if line_end == -1:
            return False
        start = value.find("${", line_end)
    return False


def _say_quoted_env(filename: str | None, lines: list[int]) -> None:
    for line in lines:
        logger.warning(
            "%s:%d: a `${VAR}` in quotes is not substituted (as in Rasa) and is read as "
            "written; write the value unquoted (`url: ${URL}/path`) to use the variable",
            filename or "<yaml>",
            line,
        )


_EnvLineLoader.add_constructor("tag:yaml.org,2002:str", _construct_str_with_env)


def expand_env(value: str, filename: str | None = None, line: int | None = None) -> str:
    """Expands `${VAR}` and `$VAR`; an unset variable is an error that names it.

    Read once from left to right, the `}` closing a `${` looked for from where it was last
    found: a regular expression searched the rest of the text from every `${` that no `}`
    closed, in time growing with the square of the text's length."""

    def variable(name: str) -> str:
        if name not in os.environ:
            where = f"{filename}:{line}: " if filename else (f"line {line}: " if line else "")
            raise MissingEnvironmentVariable(
                f"{where}environment variable {brief(name)} is not set (used in {brief(value)})"
            )
        return os.environ[name]

    pieces: list[str] = []
    position = 0
    close = 0  # the next `}` from where it was last looked for; -1: none further on
    while (dollar := value.find("$", position)) != -1:
        pieces.append(value[position:dollar])
        name, position = None, dollar + 1
        if value.startswith("{", dollar + 1):
            if -1 < close < dollar + 2:
                close = value.find("}", dollar + 2)
            if close != -1:
                name, position = value[dollar + 2 : close], close + 1
        elif match := _ENV_NAME.match(value, dollar + 1):
            name, position = match[0], match.end()
        pieces.append("$" if name is None else variable(name))
    pieces.append(value[position:])
    return "".join(pieces)


# Values a document may hold once its aliases are expanded. An alias shares the anchored
# value, so reading is cheap, but every reader that walks it (validation, training, JSON)
# walks each copy: nine anchors of nine aliases each are 387 million values in a 1 KB file,
# which held `POST /model/train` for minutes. Real projects hold far fewer (BANKING77's
# 10,003 examples are about 1,000 values: an intent's examples are one block).
MAX_EXPANDED_VALUES = 1_000_000


# Deeper nesting is refused before a document is built. libyaml's composer recurses in C:
# 40,000 `[` (a 40 KB request body) overflowed the stack and killed the server with a
# segmentation fault, after minutes of CPU (libyaml's scanner slows with the square of the
# depth); our constructors recurse in Python (a RecursionError from 300 levels). Project
# files nest a dozen levels; a response's `custom` payload a few more.
MAX_DEPTH = 100
_OPENING_EVENTS = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSING_EVENTS = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def check_depth(text: str, filename: str | None = None) -> None:
    """InvalidProjectFile naming the line where `text` nests more than MAX_DEPTH levels.

    Walks libyaml's event stream (a loop, no recursion) and stops at that line, before any
    tree is built; a syntax error on the way is PyYAML's, for the caller to report."""
    if len(text) <= MAX_DEPTH:  # each level takes a character at least
        return
    depth = 0
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, _OPENING_EVENTS):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise InvalidProjectFile(
                    f"the document nests more than {MAX_DEPTH} levels deep",
                    filename,
                    mark.line + 1 if mark is not None else None,
                )
        elif isinstance(event, _CLOSING_EVENTS):
            depth -= 1


def parse_yaml(text: str, filename: str | None = None, env: bool = False) -> Any:
    """Parses YAML text; syntax errors become InvalidProjectFile with the line, and so does a
    document nested more than MAX_DEPTH levels deep, or whose aliases expand it beyond
    MAX_EXPANDED_VALUES values."""
    loader_cls = _EnvLineLoader if env else _LineLoader
    try:
        check_depth(text, filename)
        loader = loader_cls(text)
        loader.quoted_env_lines = []
        try:  # yaml.load, keeping the loader for what it noticed and the root's line
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
        if isinstance(root, yaml.ScalarNode) and data is not None:
            # Every project file is a mapping: said here, where the value's line is known.
            raise InvalidProjectFile(
                f"the file holds the single value {brief(data)} where a mapping of keys "
                "(`key: value` lines) is expected",
                filename,
                root.start_mark.line + 1,
            )
        _say_quoted_env(filename, loader.quoted_env_lines)
        _check_expansion(data, filename)
        return data
    except MissingEnvironmentVariable as exc:
        if filename and filename not in str(exc):
            raise MissingEnvironmentVariable(f"{filename}: {exc}") from None
        raise
    except InvalidProjectFile as exc:
        raise InvalidProjectFile(exc.reason, filename, exc.line) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        raise InvalidProjectFile(f"invalid YAML: {problem}", filename, line) from None
    except yaml.reader.ReaderError as exc:
        message, line = unreadable_character(exc, text)
        raise InvalidProjectFile(message, filename, line) from None
    except yaml.YAMLError as exc:
        raise InvalidProjectFile(f"invalid YAML: {exc}", filename) from None


def unreadable_character(exc: yaml.reader.ReaderError, text: str) -> tuple[str, int | None]:
    """What a character YAML takes in no file (a NUL, a control character) is, and the line of
    its first: the reader's position counts what it has read, which differs between its C and
    Python versions."""
    if not isinstance(exc.character, int):
        return f"invalid YAML: {exc.reason}", None
    at = text.find(chr(exc.character))
    line = text.count("\n", 0, at) + 1 if at >= 0 else None
    return f"invalid YAML: unacceptable character #x{exc.character:04x}: {exc.reason}", line


def _check_expansion(data: Any, filename: str | None) -> None:
    """InvalidProjectFile when `data` holds more than MAX_EXPANDED_VALUES values, an
    anchor's counted at each alias to it (a document without aliases may pass it too),
    naming the line of the first list or mapping that holds too many."""
    too_large = _first_too_large(data)
    if too_large is not None:
        raise InvalidProjectFile(
            f"the document holds more than {MAX_EXPANDED_VALUES:,} values (those of an "
            "anchor counted at each alias to it)",
            filename,
            line_of(too_large),
        )


def _first_too_large(root: Any) -> Any:
    """The first list or mapping under `root` (itself included) holding more than
    MAX_EXPANDED_VALUES values, every shared (aliased) one counted each time it appears and
    computed once per distinct one; None when there is none."""
    if not isinstance(root, dict | list):
        return None
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if children_done:
            total = 1
            for child in children:
                total += sizes.get(id(child), 1) if isinstance(child, dict | list) else 1
            if total > MAX_EXPANDED_VALUES:
                return node  # its children are within the limit: the smallest too large
            sizes[id(node)] = total
        elif id(node) not in sizes:
            sizes[id(node)] = 1  # in progress: a recursive alias counts once
            stack.append((node, True))
            stack.extend(
                (child, False)
                for child in reversed(list(children))
                if isinstance(child, dict | list)
            )
    return None


def check_json_values(
    value: Any, filename: str | None, line: int | None = None, key: Any = None
) -> None:
    """InvalidProjectFile naming the line and key of the first value under `value` that a
    model cannot hold: it stores its config and domain as JSON, and sends values on as JSON
    (an action server, a channel), and JSON has no date (`2024-01-01` unquoted), set, bytes
    or infinity. `key`: the key `value` is held under, named when `value` itself is refused."""
    seen: set[int] = set()  # an anchored list or mapping, however often aliased, once
    # (value, its line, the key of the nearest mapping holding it)
    stack: list[tuple[Any, int | None, Any]] = [(value, line, key)]
    while stack:
        item, item_line, item_key = stack.pop()
        if isinstance(item, dict | list):
            if id(item) in seen:
                continue
            seen.add(id(item))
            children: list[tuple[Any, int | None, Any]] = []
            if isinstance(item, dict):
                for key, child in item.items():
                    key_line = line_of(item, key, item_line)
                    if not isinstance(key, str | int | float | bool | type(None)):
                        _refuse_for_json(key, filename, key_line, "the key ")
                    children.append((child, key_line, key))
            else:
                children = [
                    (child, line_of(item, i, item_line), item_key) for i, child in enumerate(item)
                ]
            stack.extend(reversed(children))  # the first in the file is named
        elif not isinstance(item, str | int | bool | type(None)) and not (
            isinstance(item, float) and math.isfinite(item)
        ):
            _refuse_for_json(item, filename, item_line, "", item_key)


def _refuse_for_json(
    value: Any, filename: str | None, line: int | None, what: str, key: Any = None
) -> None:
    if isinstance(value, datetime.date):
        shown, kind = str(value), "read as a date"
    elif isinstance(value, float):
        shown, kind = str(value), "a number"
    elif isinstance(value, set | frozenset):
        shown, kind = brief(value), "a set (!!set)"
    elif isinstance(value, bytes):
        shown, kind = brief(value), "bytes (!!binary)"
    else:
        shown, kind = brief(value), f"a {type(value).__name__}"
    if key is not None:
        what, shown = f"the value of {brief(key)} (", f"{shown})"
    raise InvalidProjectFile(
        f"{what}{shown} is {kind}, which a model cannot hold (no JSON holds it); quote it to "
        "keep it as text",
        filename,
        line,
    )


# A training text with its entity markup (`[Berlin]{"entity": "city"}`) may be this many
# times longer than a message, so that markup never counts against its text.
MARKUP_ALLOWANCE = 10


def check_example_length(
    text: str, filename: str | None, line: int | None, markup: bool = False
) -> None:
    """InvalidProjectFile naming the line of a training text longer than any message the
    bot reads (MAX_TEXT_CHARS), counted as a message is, once its entity markup is taken
    out: featurizing held about 0.7 KB of memory per character, so one example of 50 MB
    grew training past 14 GB. `markup`: `text` still holds its markup, checked against
    MARKUP_ALLOWANCE times the limit before it is parsed."""
    if (problem := example_too_long(text, markup)) is not None:
        raise InvalidProjectFile(problem, filename, line)


def example_too_long(text: str, markup: bool = False) -> str | None:
    """What is wrong with a training text longer than `check_example_length` takes, or None."""
    limit = MAX_TEXT_CHARS * (MARKUP_ALLOWANCE if markup else 1)
    if len(text) <= limit:
        return None
    counted = " with its entity markup" if markup else ""
    return (
        f"a training example is {len(text):,} characters long{counted}; at most "
        f"{limit:,} are read, as of a user's message: shorten it or split it"
    )


def read_project_text(path: str | Path) -> str:
    """A project file's UTF-8 text; a missing or unreadable file is an InvalidProjectFile, and
    one that is not UTF-8 names the line of the first byte that is not."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidProjectFile("file not found", str(path)) from None
    except OSError as exc:
        raise InvalidProjectFile(f"cannot read file: {exc}", str(path)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidProjectFile(
            f"the file is not UTF-8 text (byte {data[exc.start]:#04x} cannot be read); save it "
            "as UTF-8",
            str(path),
            line,
        ) from None


def read_yaml_file(path: str | Path, env: bool = False) -> Any:
    """Reads a YAML file (UTF-8); a missing or unreadable file is an InvalidProjectFile."""
    return parse_yaml(read_project_text(path), str(path), env=env)


class _Dumper(SafeDumper12):
    """Writes what the readers read: line-aware mappings and lists as plain ones, and text of
    several lines as a literal block (`|`), as Rasa writes examples and story texts."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(document: Any) -> str:
    """`document` as YAML text, keys in their order, Unicode as is, lines never folded."""
    text: str = yaml.dump(
        document, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=1_000_000
    )
    return text


YAML_SUFFIXES = (".yml", ".yaml")


def folder_files(folder: Path, suffixes: tuple[str, ...] = YAML_SUFFIXES) -> list[Path]:
    """The files under `folder` (at any depth, sorted) whose names end in one of `suffixes`.
    Linked folders are followed, as Rasa walks a project's folders; each real folder is read
    once, so a link back up the tree ends, under the path that comes first in name order
    (not the file system's listing order, which differs between machines)."""
    files: list[Path] = []
    seen: set[str] = set()
    for root, folders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            folders.clear()
            continue
        seen.add(real)
        folders.sort()  # walked in this order: which of several links to a folder names it
        for name in names:
            path = Path(root, name)
            if path.suffix in suffixes and path.is_file():
                files.append(path)
    return sorted(files)


def is_yaml_file(path: Path) -> bool:
    return path.suffix in YAML_SUFFIXES
