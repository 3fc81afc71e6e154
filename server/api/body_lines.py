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
    """The body's line (1-based) of the entry on `line` of the `written` file, or None when
    no entry starts there or the body holds no such entry."""
    written_lines = _entry_lines(written)
    at_line = [path for path, start in written_lines.items() if start == line - 1]
    if not at_line:
        return None
    deepest = max(at_line, key=len)
    start = _entry_lines(body).get(deepest)
    return None if start is None else start + 1


def _entry_lines(text: str) -> dict[_Path, int]:
    """Each entry's path and the line (0-based) where it starts: a mapping entry at its key,
    a list item at the item. Empty when `text` does not read as YAML."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except (yaml.YAMLError, RecursionError):
        return {}
    lines: dict[_Path, int] = {}
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
                    lines.setdefault((*path, key.value), key.start_mark.line)
                    pending.append(((*path, key.value), value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines.setdefault((*path, index), item.start_mark.line)
                pending.append(((*path, index), item))
    return lines
