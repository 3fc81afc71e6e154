"""The domain: intents, entities, slots, responses, forms, actions and session settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from server.dialogue.slots import (
    KNOWLEDGE_BASE_ACTION,
    KNOWLEDGE_BASE_SLOTS,
    REQUESTED_SLOT,
    SESSION_STARTED_METADATA,
    Slot,
    names_list,
)
from server.errors import InvalidProjectFile
from server.trackers.events import EVENTS_PER_PIECE
from server.trackers.freeing import release_values_in_pieces
from server.trackers.tracker import SlotDefaults

RULE_SNIPPET_ACTION = "..."
# Joins an entity and its role or group in the dialogue state (`city#from`), as in Rasa.
ENTITY_LABEL_SEPARATOR = "#"
DEFAULT_ACTIONS = (
    "action_listen",
    "action_restart",
    "action_session_start",
    "action_default_fallback",
    "action_deactivate_loop",
    "action_revert_fallback_events",
    "action_default_ask_affirmation",
    "action_default_ask_rephrase",
    "action_two_stage_fallback",
    "action_unlikely_intent",
    "action_back",
    RULE_SNIPPET_ACTION,
    "action_extract_slots",
)
# Default actions a domain cannot replace; listing any other one in `actions` runs the
# project's own action of that name on the action server instead, as in Rasa.
FIXED_DEFAULT_ACTIONS = ("action_listen", RULE_SNIPPET_ACTION, "action_extract_slots")
DEFAULT_INTENTS = ("restart", "back", "out_of_scope", "session_start", "nlu_fallback")
DOMAIN_KEYS = (
    "version",
    "intents",
    "entities",
    "slots",
    "responses",
    "actions",
    "forms",
    "e2e_actions",
    "session_config",
    "config",
)


def finite_number(value: Any) -> bool:
    """Whether `value` is a number a float holds: not NaN, not infinite, not an integer
    beyond the largest float (10**400, which `float()` refuses with an OverflowError)."""
    try:
        return math.isfinite(value)
    except (TypeError, OverflowError):
        return False


@dataclass
class IntentProperties:
    """How an intent uses entities, and the action it may trigger."""

    use_entities: bool | list[str] = True
    # None when the intent does not say: then the entities that do not influence the
    # conversation (`influence_conversation: false` on the entity), as in Rasa.
    ignore_entities: list[str] | None = None
    triggers: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def wanted_entities(
        self, all_entities: list[str], not_influencing: frozenset[str] = frozenset()
    ) -> list[str]:
        if self.use_entities is True:
            base = [e for e in all_entities if e not in not_influencing]
        elif self.use_entities is False or self.use_entities is None:
            base = []
        else:
            base = list(self.use_entities)
        ignored = not_influencing if self.ignore_entities is None else self.ignore_entities
        return [e for e in base if e not in ignored]


# What an intent the domain does not list has (read only).
_NO_PROPERTIES = IntentProperties()


@dataclass
class Form:
    """A form: the slots it asks for, and intents that do not fill them."""

    name: str
    required_slots: list[str]
    ignored_intents: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class SessionConfig:
    """When a session expires (minutes; 0 never) and whether slots carry over."""

    session_expiration_time: float = 60
    carry_over_slots_to_new_session: bool = True

    def are_sessions_enabled(self) -> bool:
        return self.session_expiration_time > 0


def _name_and_props(item: Any, what: str) -> tuple[str, dict[str, Any]]:
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and len(item) == 1:
        name, props = next(iter(item.items()))
        if props is None:
            props = {}
        if not isinstance(props, dict):
            raise InvalidProjectFile(f"the properties of {what} '{name}' must be a mapping")
        return str(name), dict(props)
    raise InvalidProjectFile(f"each {what} must be a name or a mapping with one name, got {item!r}")


class Domain:
    """Everything a bot knows about what it can understand and do."""

    def __init__(
        self,
        intents: dict[str, IntentProperties],
        entities: list[str],
        slots: list[Slot],
        responses: dict[str, list[dict[str, Any]]],
        forms: dict[str, Form],
        actions: list[str],
        session_config: SessionConfig | None = None,
        entity_roles: dict[str, list[str]] | None = None,
        entity_groups: dict[str, list[str]] | None = None,
        entity_properties: dict[str, dict[str, Any]] | None = None,
        action_properties: dict[str, dict[str, Any]] | None = None,
        e2e_actions: list[str] | None = None,
        store_entities_as_slots: bool = True,
    ) -> None:
        self.intent_properties = dict(intents)
        for name in DEFAULT_INTENTS:
            self.intent_properties.setdefault(name, IntentProperties())
        self.user_intents = [i for i in intents if i not in DEFAULT_INTENTS]
        self.entities = list(entities)
        self.entity_roles = entity_roles or {}
        self.entity_groups = entity_groups or {}
        # `city#from`: the role and group labels the domain lists, the only ones that
        # influence the dialogue (Rasa's docs: list them under the entity to use them). None:
        # every one does (a model trained before, see server.models.loading).
        self.entity_labels: frozenset[str] | None = frozenset(
            f"{name}{ENTITY_LABEL_SEPARATOR}{label}"
            for listed in (self.entity_roles, self.entity_groups)
            for name, labels in listed.items()
            for label in labels
        )
        self.entity_properties = entity_properties or {}
        self.entities_not_influencing = frozenset(
            name
            for name, props in self.entity_properties.items()
            if not props.get("influence_conversation", True)
        )
        self.slots = list(slots)
        names = {s.name for s in self.slots}
        if forms and REQUESTED_SLOT not in names:
            self.slots.append(Slot(REQUESTED_SLOT, "any", influence_conversation=False))
        # As Rasa: when undeclared, they are not in the domain's JSON (GET /domain, the
        # action server's domain, the model archive).
        self._knowledge_base_slots: frozenset[str] = frozenset()
        if KNOWLEDGE_BASE_ACTION in actions:
            added = [n for n in KNOWLEDGE_BASE_SLOTS if n not in names]
            self.slots.extend(Slot(n, "any", influence_conversation=False) for n in added)
            self._knowledge_base_slots = frozenset(added)
        if SESSION_STARTED_METADATA not in names:
            self.slots.append(Slot(SESSION_STARTED_METADATA, "any", influence_conversation=False))
        self.slots_by_name = {s.name: s for s in self.slots}
        # The slots states show (`featurization._Fold.state`), in the order of `slot_defaults`.
        self.featurized_slots = [s for s in self.slots_by_name.values() if s.influence_conversation]
        # `slot_defaults()` made once, for the turn's tracker (read only: never modify it).
        self.kept_slot_defaults = self.slot_defaults()
        self.responses = dict(responses)
        self.forms = dict(forms)
        self.user_actions = [a for a in actions if a not in FIXED_DEFAULT_ACTIONS]
        # Default actions the domain lists: its own (custom) actions, as in Rasa.
        self.overridden_defaults = frozenset(a for a in self.user_actions if a in DEFAULT_ACTIONS)
        self.action_properties = action_properties or {}
        # The actions sent the domain under `enable_selective_domain`: as in Rasa, those with
        # `send_domain: true`, and every `validate_...` listed by its name alone; unlike Rasa,
        # `action_validate_slot_mappings` so listed too. rasa-sdk's form and slot validation
        # read the slots to check from it, and without it check none.
        self.actions_needing_domain = frozenset(
            a
            for a in self.user_actions
            if self.action_properties.get(a, {}).get("send_domain")
            or (
                a not in self.action_properties
                and (a.startswith("validate_") or a == "action_validate_slot_mappings")
            )
        )
        self.session_config = session_config or SessionConfig()
        self.e2e_actions = list(e2e_actions or [])
        self.store_entities_as_slots = store_entities_as_slots
        self._as_dict_cache: dict[bool, dict[str, Any]] = {}
        # Responses' variations sorted by condition and channel (`nlg.response_variations`).
        self.response_variations: dict[str, Any] = {}
        self._check()
        # Every action the dialogue can predict, in a fixed order policies index into.
        seen: dict[str, None] = {}
        for name in (
            *DEFAULT_ACTIONS,
            *self.user_actions,
            *self.forms,
            *self.responses,
            *self.e2e_actions,
        ):
            seen.setdefault(name, None)
        self.action_names_or_texts: list[str] = list(seen)
        self._action_index = {name: i for i, name in enumerate(self.action_names_or_texts)}

    def __del__(self) -> None:
        # Dropped on the loop (the last conversation whose state cache kept a replaced
        # model's domain), its lists and dicts go to the releasing thread; in a thread, they
        # are emptied there a piece at a time. Freed at once, 40,000 responses and their
        # action index held the loop 4-5 ms, or the GIL as long in a thread.
        if any(
            (type(value) is dict or type(value) is list) and len(value) > EVENTS_PER_PIECE
            for value in vars(self).values()
        ):
            release_values_in_pieces(vars(self))

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def empty(cls) -> Domain:
        return cls({}, [], [], {}, {}, [])

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Domain:
        """Builds a domain from Rasa's domain YAML/JSON structure."""
        d = d or {}
        if not isinstance(d, dict):
            raise InvalidProjectFile("a domain must be a mapping")
        intents: dict[str, IntentProperties] = {}
        for item in d.get("intents") or []:
            name, props = _name_and_props(item, "intent")
            # Absent: every entity; `use_entities: null` (like `[]` or false): none, as in Rasa.
            use = props.get("use_entities", True)
            if use is None:
                use = False
            intents[name] = IntentProperties(
                use_entities=use if isinstance(use, bool) else list(use),
                ignore_entities=(
                    None if props.get("ignore_entities") is None else list(props["ignore_entities"])
                ),
                triggers=props.get("triggers"),
                raw=props,
            )
        entities: list[str] = []
        roles: dict[str, list[str]] = {}
        groups: dict[str, list[str]] = {}
        entity_props: dict[str, dict[str, Any]] = {}
        for item in d.get("entities") or []:
            name, props = _name_and_props(item, "entity")
            entities.append(name)
            if props.get("roles"):
                roles[name] = list(props["roles"])
            if props.get("groups"):
                groups[name] = list(props["groups"])
            if props:
                entity_props[name] = props
        slots_section = d.get("slots") or {}
        if not isinstance(slots_section, dict):
            raise InvalidProjectFile("'slots' must be a mapping from slot name to definition")
        slots = []
        for name, spec in slots_section.items():
            if not isinstance(spec, dict):
                raise InvalidProjectFile(f"slot '{name}' must be a mapping with a 'type'")
            slots.append(Slot.from_dict(str(name), spec))
        responses = d.get("responses") or {}
        if not isinstance(responses, dict):
            raise InvalidProjectFile("'responses' must be a mapping from name to variations")
        clean_responses: dict[str, list[dict[str, Any]]] = {}
        for name, variations in responses.items():
            if not isinstance(variations, list) or not all(isinstance(v, dict) for v in variations):
                raise InvalidProjectFile(f"response '{name}' must be a list of variations")
            clean_responses[str(name)] = [dict(v) for v in variations]
        forms: dict[str, Form] = {}
        for name, spec in (d.get("forms") or {}).items():
            spec = spec or {}
            if not isinstance(spec, dict):
                raise InvalidProjectFile(f"form '{name}' must be a mapping")
            required = spec.get("required_slots") or []
            if isinstance(required, dict):  # the Rasa 2 form format
                required = list(required)
            forms[str(name)] = Form(
                str(name),
                [str(s) for s in required],
                names_list(spec.get("ignored_intents")),  # one name or a list, as in Rasa
                raw=dict(spec),
            )
        actions: list[str] = []
        action_props: dict[str, dict[str, Any]] = {}
        for item in d.get("actions") or []:
            name, props = _name_and_props(item, "action")
            actions.append(name)
            if props:
                action_props[name] = props
        session = d.get("session_config") or {}
        expiration = session.get("session_expiration_time", 60) or 0
        # An archive's infinity (or an integer no float holds): never expiring, as 0 says
        expiration = float(expiration) if finite_number(expiration) else 0.0
        config = d.get("config") or {}
        return cls(
            intents,
            entities,
            slots,
            clean_responses,
            forms,
            actions,
            SessionConfig(
                expiration,
                bool(session.get("carry_over_slots_to_new_session", True)),
            ),
            roles,
            groups,
            entity_props,
            action_props,
            [str(t) for t in d.get("e2e_actions") or []],
            bool(config.get("store_entities_as_slots", True)),
        )

    def _check(self) -> None:
        """Rasa loads domains whose forms or mappings name undeclared slots or entities;
        so do we. `botserver data validate` reports them."""

    def merge(self, other: Domain) -> Domain:
        """A domain with both domains' content; this domain wins on conflicts."""
        return Domain.from_dict(_merge_dicts(other.as_dict(full=True), self.as_dict(full=True)))

    # -- queries -----------------------------------------------------------------------------
    @property
    def intents(self) -> list[str]:
        return sorted(self.intent_properties)

    def index_of_action(self, name: str) -> int | None:
        return self._action_index.get(name)

    def is_known_action(self, name: str) -> bool:
        return name in self._action_index

    def is_retrieval_action(self, name: str) -> bool:
        """Whether `name` utters what the response selector chose (`utter_faq`, whose
        responses are `utter_faq/<key>`)."""
        return name.startswith("utter_") and any(r.startswith(f"{name}/") for r in self.responses)

    def known_loop(self, name: str | None) -> str | None:
        """An active loop's name as the dialogue engine reads it: None for one the domain
        does not know (a form dropped from the domain, a name posted through the API)."""
        return name if name is None or name in self._action_index else None

    @property
    def is_empty(self) -> bool:
        """Whether the domain declares nothing (no intent, entity, slot, response, action or
        form of its own), as Rasa's `Domain.is_empty`: the slots every domain gets aside."""
        own_slots = [s for s in self.slots if s.name != SESSION_STARTED_METADATA]
        return not (
            self.user_intents
            or self.entities
            or own_slots
            or self.responses
            or self.user_actions
            or self.forms
        )

    def slot_defaults(self) -> SlotDefaults:
        """The slots' initial values (a list slot's as a list, as Rasa holds it)."""
        lists = frozenset(s.name for s in self.slots if s.type == "list")
        defaults = SlotDefaults((), lists)
        for s in self.slots:
            defaults[s.name] = defaults.held(s.name, s.initial_value)
        return defaults

    def wanted_entities(self, intent: str | None) -> list[str]:
        props = self.intent_properties.get(intent or "")
        return (props or _NO_PROPERTIES).wanted_entities(
            self.entities, self.entities_not_influencing
        )

    def required_slots_for_form(self, form: str) -> list[str]:
        f = self.forms.get(form)
        return list(f.required_slots) if f else []

    # -- serialisation -----------------------------------------------------------------------
    def as_dict(self, full: bool = False) -> dict[str, Any]:
        """Rasa's domain JSON; empty sections and built-in slots and intents are left out.

        Computed once per domain (a domain does not change once built); callers must not
        modify the result.
        """
        cached = self._as_dict_cache.get(full)
        if cached is None:
            cached = self._as_dict_cache[full] = self._build_dict(full)
        return cached

    def _build_dict(self, full: bool) -> dict[str, Any]:
        intents: list[Any] = []
        for name in sorted(self.user_intents):
            props = self.intent_properties[name].raw
            intents.append({name: props} if props else name)
        entities: list[Any] = []
        for name in self.entities:
            entity_props = self.entity_properties.get(name)
            entities.append({name: entity_props} if entity_props else name)
        builtin_slots = {SESSION_STARTED_METADATA, REQUESTED_SLOT}
        # (the knowledge base slots this domain added come back with its action, as in Rasa)
        slots = {
            s.name: s.as_dict()
            for s in self.slots
            if (full or s.name not in builtin_slots) and s.name not in self._knowledge_base_slots
        }
        actions: list[Any] = []
        for name in self.user_actions:
            action_props = self.action_properties.get(name)
            actions.append({name: action_props} if action_props else name)
        forms = {
            name: f.raw or {"required_slots": f.required_slots} for name, f in self.forms.items()
        }
        out: dict[str, Any] = {"version": "3.1"}
        for key, value in (
            ("intents", intents),
            ("entities", entities),
            ("slots", slots),
            ("responses", self.responses),
            ("actions", actions),
            ("forms", forms),
            ("e2e_actions", self.e2e_actions),
        ):
            if value or full:
                out[key] = value
        if full or not self.store_entities_as_slots:
            out["config"] = {"store_entities_as_slots": self.store_entities_as_slots}
        out["session_config"] = {
            "session_expiration_time": _int_if_whole(self.session_config.session_expiration_time),
            "carry_over_slots_to_new_session": self.session_config.carry_over_slots_to_new_session,
        }
        return out


def _int_if_whole(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


def _merge_dicts(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if key in ("intents", "entities", "actions", "e2e_actions") and key in out:
            seen = {_item_name(v): v for v in out[key]}
            for v in value:
                seen[_item_name(v)] = v
            out[key] = list(seen.values())
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _item_name(item: Any) -> str:
    return item if isinstance(item, str) else next(iter(item))
