"""Slot filling from the latest user message, following the domain's slot mappings."""

from __future__ import annotations

from typing import Any

from server.dialogue.domain import Domain
from server.dialogue.slots import REQUESTED_SLOT, Slot, SlotMapping
from server.trackers.events import SlotSet
from server.trackers.tracker import Tracker


def _entity_values(mapping: SlotMapping, entities: list[dict[str, Any]]) -> list[Any]:
    """Values of the entities the mapping names. As in Rasa, role and group must be the
    mapping's exactly: a mapping without a role takes no entity that has one ("from Berlin
    to Rome" fills `origin` and `destination`, not a plain `city` slot)."""
    return [
        entity.get("value")
        for entity in entities
        if entity.get("entity") == mapping.entity
        and entity.get("role") == mapping.role
        and entity.get("group") == mapping.group
    ]


def mapping_value(
    mapping: SlotMapping, slot: Slot, tracker: Tracker, domain: Domain
) -> tuple[bool, Any]:
    """(matched, value) for one mapping against the tracker's latest user message."""
    message = tracker.latest_message
    intent = message.intent_name
    active_loop = tracker.active_loop_name
    requested = tracker.get_slot(REQUESTED_SLOT)
    if not _intent_desired(mapping, intent, tracker, domain):
        return False, None
    if mapping.conditions and tracker.is_active_loop_rejected and requested == slot.name:
        # The form just failed to fill its requested slot: the next message answers whatever
        # the bot asked meanwhile ("Do you want to continue?"), not that slot.
        return False, None
    if not mapping.conditions_met(active_loop, requested):
        return False, None
    if mapping.type == "from_entity":
        values = _entity_values(mapping, message.entities)
        if not values:
            return False, None
        if slot.type == "list":
            return True, values
        return True, values[-1]  # Rasa's choice when one message names several
    if mapping.type == "from_text":
        if message.text is None:
            return False, None
        return True, message.text
    if mapping.type == "from_intent":
        # As in Rasa 3, a mapping without an intent list matches any intent not excluded.
        return True, mapping.value
    # from_trigger_intent fills only as a form activates (`trigger_intent_slots`).
    return False, None


def trigger_intent_slots(tracker: Tracker, domain: Domain, form: str) -> list[SlotSet]:
    """The slots `from_trigger_intent` mappings fill as `form` activates on the latest
    message: the mapping's intent matches, and its conditions, if any, name this form. As
    in Rasa, a message that activates no form fills none."""
    intent = tracker.latest_message.intent_name
    events: list[SlotSet] = []
    for slot in domain.slots:
        for mapping in slot.mappings:
            if mapping.type != "from_trigger_intent":
                continue
            if mapping.conditions and not any(
                c.get("active_loop") == form for c in mapping.conditions
            ):
                continue
            if not _intent_desired(mapping, intent, tracker, domain):
                continue
            value = slot.coerce(mapping.value)
            if value is not None or tracker.get_slot(slot.name) is not None:
                events.append(SlotSet(key=slot.name, value=value))
            break
    return events


def _intent_desired(
    mapping: SlotMapping, intent: str | None, tracker: Tracker, domain: Domain
) -> bool:
    """Rasa's intent check: a mapping's own `intent` list wins; otherwise `not_intent` and,
    while a form is active, the form's ignored_intents block it."""
    if mapping.intent:
        return intent in mapping.intent
    blocked = set(mapping.not_intent)
    form = domain.forms.get(tracker.active_loop_name or "")
    if form is not None:
        blocked.update(form.ignored_intents)
    return intent not in blocked


def extract_slots(tracker: Tracker, domain: Domain) -> list[SlotSet]:
    """SlotSet events for every slot whose mappings match the latest user message.

    Custom mappings are left to the action server. While a form is active, a mapping without
    conditions still applies, as in Rasa 3; slots of the form other than the requested one are
    only filled from entities.
    """
    events: list[SlotSet] = []
    for slot in domain.slots:
        for mapping in slot.mappings:
            if mapping.type == "custom":
                continue
            matched, value = mapping_value(mapping, slot, tracker, domain)
            if not matched:
                continue
            if _skip_for_active_form(slot, mapping, tracker, domain):
                continue
            value = slot.coerce(value)
            if tracker.get_slot(slot.name) != value or value is not None:
                events.append(SlotSet(key=slot.name, value=value))
            break
    return events


def _skip_for_active_form(
    slot: Slot, mapping: SlotMapping, tracker: Tracker, domain: Domain
) -> bool:
    loop = tracker.active_loop_name
    if loop is None or loop not in domain.forms:
        return False
    form = domain.forms[loop]
    if slot.name not in form.required_slots:
        return False
    requested = tracker.get_slot(REQUESTED_SLOT)
    if slot.name == requested:
        return False
    if mapping.type == "from_entity":
        # As in Rasa, an entity fills a slot the form did not ask for only when no other slot
        # of the form maps the same entity.
        return not _entity_mapping_unique(mapping, form.required_slots, domain)
    # from_text / from_intent without conditions would fill every slot of the form at once.
    return mapping.type in ("from_text", "from_intent") and not mapping.conditions


def _entity_mapping_unique(mapping: SlotMapping, form_slots: list[str], domain: Domain) -> bool:
    """Whether no other mapping of the form's slots is the same as `mapping`: as in Rasa, the
    whole mapping counts (two slots taking `city` for different intents are both unique)."""
    same = sum(
        m.raw == mapping.raw
        for slot in domain.slots
        if slot.name in form_slots
        for m in slot.mappings
        if m.type == "from_entity"
    )
    return same <= 1


VALIDATE_SLOT_MAPPINGS = "action_validate_slot_mappings"


def custom_mapping_actions(domain: Domain) -> list[str]:
    """The actions named by custom mappings (`type: custom`, `action: ...`), each once."""
    names = (m.action for s in domain.slots for m in s.mappings if m.type == "custom")
    return list(dict.fromkeys(n for n in names if n and n != VALIDATE_SLOT_MAPPINGS))
