"""Options in config.yml that a component or policy never reads: a misspelt key
(`max_histroy`) would otherwise train silently with the default. Rasa ignores them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from server.setting_values import near_miss


def unknown_option_warning(
    owner: str, key: object, known: Iterable[str], *, list_known: bool
) -> str | None:
    """The training warning for an option `owner` does not know: with the option meant when
    `key` is a near-miss of a known one, else (when `list_known`) with the known options, else
    none (an option of Rasa's own component that changes nothing in its stand-in)."""
    known = list(known)
    meant = near_miss(key, known)
    if meant:
        return f"{owner}: the option '{key}' is unknown and ignored; did you mean '{meant}'?"
    if list_known:
        return f"{owner}: the option '{key}' is unknown and ignored (known: {', '.join(known)})."
    return None


class ReadKeys(dict[str, Any]):
    """A component's options that remember which keys the component asked for, read or
    not: what it asks for is what it knows. Iterating over them counts as asking for all."""

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.asked: set[str] = set()
        self.iterated = False

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        self.iterated = True
        return super().__iter__()

    def keys(self) -> Any:
        self.iterated = True
        return super().keys()

    def items(self) -> Any:
        self.iterated = True
        return super().items()

    def unasked_warnings(self, owner: str, also_known: Iterable[str] = ()) -> list[str]:
        """Near-miss warnings for the keys never asked for (after training)."""
        if self.iterated:
            return []
        known = sorted(self.asked | set(also_known))
        unasked = [k for k in dict.keys(self) if k not in known and k != "name"]
        found = (unknown_option_warning(owner, k, known, list_known=False) for k in unasked)
        return [w for w in found if w]
