"""Slot filling from the latest user message, following the domain's slot mappings."""

from __future__ import annotations

from typing import Any

from server.dialogue.domain import Domain
from server.dialogue.slots import BUILT_IN_SLOTS, REQUESTED_SLOT, Slot, SlotMapping
from server.trackers.events import SlotSet
from server.trackers.tracker import Tracker

VALIDATE_SLOT_MAPPINGS = "action_validate_slot_mappings"


def _entity_values(mapping: SlotMapping, entities: list[dict[str, Any]]) -> list[Any]:
    """The values of the entities the mapping names, in the message's order. As in Rasa 3, a
    mapping without a `role` (`group`) takes only entities without one: `city` with the role
    `departure` fills the slot mapped to `city` with that role, not a slot mapped to `city`."""
    wanted = (mapping.entity, mapping.role, mapping.group)
    return [
        entity.get("value")
        for entity in entities
        if (entity.get("entity"), entity.get("role"), entity.get("group")) == wanted
    ]


def mapping_value(
    mapping: SlotMapping, slot: Slot, tracker: Tracker, domain: Domain
) -> tuple[bool, Any]:
    """(matched, value) for one mapping against the tracker's latest user message."""
    message = tracker.latest_message
    intent = message.intent_name
    active_loop = domain.known_loop(tracker.active_loop_name)
    requested = tracker.get_slot(REQUESTED_SLOT)
    if not _intent_desired(mapping, intent, tracker, domain):
        return False, None
    if mapping.type == "from_trigger_intent":
        # As in Rasa: only while a loop is active (the form this message activates, whose
        # activation extracts again: `activation_slots`), and one its conditions name, if any.
        loops = [condition.get("active_loop") for condition in mapping.conditions]
        if active_loop is None or (loops and active_loop not in loops):
            return False, None
        return True, mapping.value
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
        # Several values for one slot: the last one said wins, as in Rasa.
        return True, values[-1]
    if mapping.type == "from_text":
        if message.text is None:
            return False, None
        return True, message.text
    if mapping.type == "from_intent":
        # As in Rasa 3, a mapping without an intent list matches any intent not excluded.
        return True, mapping.value
    # A custom mapping whose intent and conditions hold: its action runs (no value here).
    return mapping.type == "custom", None


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

    Custom mappings are left out (see `extraction_steps`). While a form is active, a mapping
    without conditions still applies, as in Rasa 3; slots of the form other than the
    requested one are only filled from entities and `from_trigger_intent`.
    """
    # Only SlotSets without `custom`; typed here rather than by a cast() call every turn.
    extracted: Any = _extract(tracker, domain)
    return extracted


def extraction_steps(tracker: Tracker, domain: Domain) -> list[SlotSet | str]:
    """`extract_slots` with, in their place, the names of the custom mappings' actions to
    run: Rasa's `action_extract_slots` goes through the slots in the domain's order, each
    slot's mappings in order (the first predefined one that fills it ends that slot's
    turn), and runs a custom mapping's action there, once a message, when the mapping's
    intent and conditions hold. The events come out in this order, so of two mappings
    filling one slot the later one wins."""
    return _extract(tracker, domain, custom=True)


def _extract(tracker: Tracker, domain: Domain, custom: bool = False) -> list[SlotSet | str]:
    events: list[SlotSet | str] = []
    actions: set[str] = set()  # each custom mapping's action once, as in Rasa
    for slot in domain.slots:
        if slot.name in BUILT_IN_SLOTS:
            continue  # as Rasa: a message never fills them, whatever the domain maps
        for mapping in slot.mappings:
            if mapping.type == "custom":
                action = mapping.action
                if (
                    custom
                    and action
                    and action != VALIDATE_SLOT_MAPPINGS
                    and action not in actions
                    and mapping_value(mapping, slot, tracker, domain)[0]
                ):
                    actions.add(action)
                    events.append(action)
                continue
            matched, value = mapping_value(mapping, slot, tracker, domain)
            if not matched:
                continue
            if _skip_for_active_form(slot, mapping, tracker, domain):
                continue
            if slot.type == "list" and mapping.type != "from_entity" and value is not None:
                value = [value]  # a list slot holds a list, as in Rasa (`from_text`: [text])
            if value is not None or tracker.get_slot(slot.name) is not None:
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
        # of the form has the same mapping.
        return not _entity_mapping_unique(mapping, form.required_slots, domain)
    # from_text / from_intent without conditions would fill every slot of the form at once.
    # (`from_trigger_intent` fills while a form is active, as in Rasa: only of its intent.)
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


def custom_mapping_actions(domain: Domain) -> list[str]:
    """The actions named by custom mappings (`type: custom`, `action: ...`), each once."""
    names = (m.action for s in domain.slots for m in s.mappings if m.type == "custom")
    return list(dict.fromkeys(n for n in names if n and n != VALIDATE_SLOT_MAPPINGS))
