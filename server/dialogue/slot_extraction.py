"""Slot filling from the latest user message, following the domain's slot mappings."""

from __future__ import annotations

from typing import Any

from server.dialogue.domain import Domain
from server.dialogue.slots import REQUESTED_SLOT, Slot, SlotMapping
from server.trackers.events import SlotSet
from server.trackers.tracker import Tracker


def _entity_values(mapping: SlotMapping, entities: list[dict[str, Any]]) -> list[Any]:
    values = []
    for entity in entities:
        if entity.get("entity") != mapping.entity:
            continue
        if mapping.role is not None and entity.get("role") != mapping.role:
            continue
        if mapping.group is not None and entity.get("group") != mapping.group:
            continue
        values.append(entity.get("value"))
    return values


def mapping_value(
    mapping: SlotMapping, slot: Slot, tracker: Tracker, domain: Domain
) -> tuple[bool, Any]:
    """(matched, value) for one mapping against the tracker's latest user message."""
    message = tracker.latest_message
    intent = message.intent_name
    active_loop = tracker.active_loop_name
    requested = tracker.get_slot(REQUESTED_SLOT)
    if not mapping.intent_allowed(intent):
        return False, None
    if not mapping.conditions_met(active_loop, requested):
        return False, None
    if mapping.type == "from_entity":
        values = _entity_values(mapping, message.entities)
        if not values:
            return False, None
        if slot.type == "list":
            return True, values
        return True, values[0]
    if mapping.type == "from_text":
        if message.text is None:
            return False, None
        return True, message.text
    if mapping.type == "from_intent":
        if not mapping.intent and not mapping.not_intent:
            return False, None
        return True, mapping.value
    if mapping.type == "from_trigger_intent":
        # Only fills while the form it triggers is being activated by this message.
        target_forms = [
            f for f, form in domain.forms.items() if slot.name in form.required_slots
        ]
        if active_loop in target_forms:
            return False, None
        if not mapping.intent:
            return False, None
        return True, mapping.value
    return False, None


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
    if tracker.latest_message.intent_name in form.ignored_intents:
        return True
    requested = tracker.get_slot(REQUESTED_SLOT)
    # from_text / from_intent without conditions would fill every slot of the form at once.
    return (
        slot.name != requested
        and mapping.type in ("from_text", "from_intent", "from_trigger_intent")
        and not mapping.conditions
    )


def has_custom_mappings(domain: Domain) -> bool:
    return any(m.type == "custom" for s in domain.slots for m in s.mappings)
