"""Slot definitions: types, initial values, mappings and how a slot value is featurized."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from server.errors import InvalidProjectFile

SLOT_TYPES = ("text", "bool", "categorical", "float", "list", "any")
MAPPING_TYPES = ("from_entity", "from_text", "from_intent", "from_trigger_intent", "custom")
REQUESTED_SLOT = "requested_slot"
SESSION_STARTED_METADATA = "session_started_metadata"
# Rasa's knowledge base action, and the slots a domain listing it gets (rasa-sdk's
# ActionQueryKnowledgeBase sets them; "the second one" reads the objects it listed).
KNOWLEDGE_BASE_ACTION = "action_query_knowledge_base"
KNOWLEDGE_BASE_SLOTS = (
    "knowledge_base_listed_objects",
    "knowledge_base_last_object",
    "knowledge_base_last_object_type",
)
# The slots the server (or rasa-sdk's knowledge base action) sets: as in Rasa, slot
# extraction leaves them out even when a domain declares them with mappings.
BUILT_IN_SLOTS = frozenset({REQUESTED_SLOT, SESSION_STARTED_METADATA, *KNOWLEDGE_BASE_SLOTS})


@dataclass
class SlotMapping:
    """One way a slot gets its value from a user message."""

    type: str
    entity: str | None = None
    role: str | None = None
    group: str | None = None
    intent: list[str] = field(default_factory=list)
    not_intent: list[str] = field(default_factory=list)
    value: Any = None
    action: str | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any], slot: str) -> SlotMapping:
        kind = d.get("type")
        if kind not in MAPPING_TYPES:
            raise InvalidProjectFile(
                f"slot '{slot}' has a mapping of unknown type '{kind}'; "
                f"use one of {', '.join(MAPPING_TYPES)}"
            )
        if kind == "from_entity" and not d.get("entity"):
            raise InvalidProjectFile(f"slot '{slot}': a from_entity mapping needs an 'entity'")
        return cls(
            type=kind,
            entity=d.get("entity"),
            role=d.get("role"),
            group=d.get("group"),
            intent=names_list(d.get("intent")),
            not_intent=names_list(d.get("not_intent")),
            value=d.get("value"),
            action=d.get("action"),
            conditions=list(d.get("conditions") or []),
            raw=dict(d),
        )

    def conditions_met(self, active_loop: str | None, requested_slot: Any) -> bool:
        if not self.conditions:
            return True
        for condition in self.conditions:
            loop = condition.get("active_loop")
            if loop is None:
                # As in Rasa 3.6: no active loop (null or left out) only asks that no form be
                # active; a `requested_slot` beside it is not looked at.
                if active_loop is None:
                    return True
                continue
            if loop != active_loop:
                continue
            # As in Rasa, a missing or null `requested_slot` holds whatever the form asks.
            wanted = condition.get("requested_slot")
            if not wanted or wanted == requested_slot:
                return True
        return False


def names_list(value: Any) -> list[str]:
    """A name or a list of names (`intent: greet` or `intent: [greet, hi]`), as a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


@dataclass
class Slot:
    """A named slot with its type, initial value and mappings."""

    name: str
    type: str
    initial_value: Any = None
    influence_conversation: bool = True
    mappings: list[SlotMapping] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    min_value: float = 0.0
    max_value: float = 1.0
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> Slot:
        kind = d.get("type")
        if isinstance(kind, str) and kind.startswith("rasa.shared.core.slots."):
            kind = kind.rsplit(".", 1)[1].replace("Slot", "").lower()
            kind = {"unfeaturized": "any", "boolean": "bool"}.get(kind, kind)
        if kind not in SLOT_TYPES:
            raise InvalidProjectFile(
                f"slot '{name}' has unknown type '{kind}'; use one of {', '.join(SLOT_TYPES)}"
            )
        mappings = d.get("mappings")
        if mappings is None:
            mappings = []
        if not isinstance(mappings, list):
            raise InvalidProjectFile(f"slot '{name}': 'mappings' must be a list")
        influence = d.get("influence_conversation", kind != "any")
        if kind == "any" and influence:
            raise InvalidProjectFile(f"slot '{name}' of type any cannot influence the conversation")
        values = list(d.get("values") or [])
        if kind == "categorical":
            # As Rasa keeps them: as lower-case text, without `null` (the unset slot's value).
            values = [str(v).lower() for v in values if v is not None]
        return cls(
            name=name,
            type=kind,
            initial_value=d.get("initial_value"),
            influence_conversation=bool(influence),
            mappings=[SlotMapping.from_dict(m, name) for m in mappings],
            values=values,
            min_value=float(d.get("min_value", 0.0)),
            max_value=float(d.get("max_value", 1.0)),
            raw=dict(d),
        )

    def as_dict(self) -> dict[str, Any]:
        """Rasa's slot in a domain dump: without `initial_value: null` and without
        `influence_conversation: true`, the defaults."""
        d: dict[str, Any] = {"type": self.type}
        if self.initial_value is not None:
            d["initial_value"] = self.initial_value
        if not self.influence_conversation:
            d["influence_conversation"] = False
        d["mappings"] = [m.raw for m in self.mappings]
        if self.type == "categorical":
            d["values"] = self.values
        if self.type == "float":
            d["max_value"] = self.max_value
            d["min_value"] = self.min_value
        return d

    def feature(self, value: Any) -> str | None:
        """A hashable summary of the value for dialogue state, or None if it has no influence."""
        if not self.influence_conversation:
            return None
        if self.type in ("text", "any"):
            return "set" if value is not None else None
        if self.type == "list":
            return "set" if value else None
        if self.type == "bool":
            truth = _truth(value)
            if truth is None:
                return None
            return "true" if truth else "false"
        if self.type == "categorical":
            if value is None:
                return None
            lowered = [str(v).lower() for v in self.values]
            s = str(value).lower()
            return s if s in lowered else "__other__"
        if self.type == "float":
            if value is None:
                return None
            try:
                x = float(value)
            except (TypeError, ValueError, OverflowError):  # an integer beyond a double
                return None
            if not math.isfinite(x):
                return None
            span = self.max_value - self.min_value or 1.0
            return f"{max(0.0, min(1.0, (x - self.min_value) / span)):.1f}"
        return None


def _truth(value: Any) -> bool | None:
    """A bool slot's value as Rasa reads it: true/false, 1/0 (any other number is false),
    "true"/"false" and text of digits only ("1", "0"); anything else (`"yes"`, `"1.0"`,
    a list) counts as no value."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value == 1.0
    if isinstance(value, str):
        if value.isnumeric():
            try:
                return float(value) == 1.0
            except ValueError:  # numeric to Unicode, yet no float ("½")
                return None
        text = value.strip().lower()
        if text in ("true", "false"):
            return text == "true"
    return None
