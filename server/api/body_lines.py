"""Lines of a training request's body, for the errors of the files it was split into.

POST /model/train writes the body's config, domain and data anew as files; an error names a
line of one of them. The same entry (keys and list positions from the top) is found in the
body, whose line the client can read.
"""

from __future__ import annotations

from typing import Any

import yaml

_Path = tuple[str | int, ...]
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def line_in_body(body: str, written: str, line: int) -> int | None:
    """The body's line (1-based) of the entry on `line` of the `written` file, or of the line
    of a string written over several lines (an `examples: |` block), or None when the body
    holds no such entry."""
    written_entries = _entries(written)
    at_line = [path for path, (start, _) in written_entries.items() if start == line - 1]
    if not at_line:
        return _line_in_string(_entries(body), written_entries, line - 1)
    deepest = max(at_line, key=len)
    entry = _entries(body).get(deepest)
    return None if entry is None else entry[0] + 1


def _line_in_string(
    body: dict[_Path, tuple[int, yaml.Node]], written: dict[_Path, tuple[int, yaml.Node]], line: int
) -> int | None:
    """The body's line (1-based) of the 0-based `line` of `written` inside a string, counted
    as the training data reader counts it: a block (`|`, `>`) from the line after its
    indicator, any other string from its first line, one line per line of its value."""
    for path, (_, node) in written.items():
        if not isinstance(node, yaml.ScalarNode):
            continue
        first = node.start_mark.line + (1 if node.style in ("|", ">") else 0)
        if not 0 <= line - first <= node.value.count("\n") or line > node.end_mark.line:
            continue
        found = body.get(path)
        sent = found[1] if found is not None else None
        if not isinstance(sent, yaml.ScalarNode) or sent.value != node.value:
            return None
        if sent.start_mark.line == sent.end_mark.line:  # on one line: a JSON string, say
            return sent.start_mark.line + 1
        if sent.style != "|":  # folded: its lines are not those of its value
            return None
        return sent.start_mark.line + 2 + (line - first)
    return None


def _entries(text: str) -> dict[_Path, tuple[int, yaml.Node]]:
    """Each entry's path, the line (0-based) where it starts (a mapping entry at its key, a
    list item at the item) and its value. Empty when `text` does not read as YAML."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except (yaml.YAMLError, RecursionError):
        return {}
    entries: dict[_Path, tuple[int, yaml.Node]] = {}
    pending: list[tuple[_Path, yaml.Node]] = [((), root)] if root is not None else []
    seen: set[int] = set()
    while pending:
        path, node = pending.pop()
        if id(node) in seen:  # an alias: its entries are where its anchor is
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    entries.setdefault((*path, key.value), (key.start_mark.line, value))
                    pending.append(((*path, key.value), value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                entries.setdefault((*path, index), (item.start_mark.line, item))
                pending.append(((*path, index), item))
    return entries
