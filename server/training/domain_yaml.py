"""Read a Rasa 3 domain (one file or a directory of files, merged) and check its structure
against Rasa's domain schema, naming the file and line of every mistake."""

from __future__ import annotations

import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

from server.dialogue.domain import DEFAULT_ACTIONS, Domain, finite_number
from server.dialogue.slots import (
    BUILT_IN_SLOTS,
    MAPPING_TYPES,
    SESSION_STARTED_METADATA,
    SLOT_TYPES,
)
from server.errors import InvalidProjectFile, brief, how_many
from server.training.yaml_io import (
    check_json_values,
    check_version,
    folder_files,
    line_of,
    read_yaml_file,
)

logger = logging.getLogger(__name__)

DOMAIN_KEYS = frozenset(
    {
        "version",
        "intents",
        "entities",
        "slots",
        "responses",
        "forms",
        "actions",
        "config",
        "session_config",
        "e2e_actions",
    }
)
_LIST_SECTIONS = ("intents", "entities", "actions", "e2e_actions")
# What one item of a section is called in a message.
_ITEM_OF = {
    "intents": "intent",
    "entities": "entity",
    "actions": "action",
    "e2e_actions": "e2e action",
    "slots": "slot",
    "responses": "response",
    "forms": "form",
}
_RESPONSE_KEYS = frozenset(
    {
        "id",
        "text",
        "image",
        "custom",
        "buttons",
        "button_type",
        "quick_replies",
        "attachment",
        "elements",
        "channel",
        "metadata",
        "condition",
    }
)
# Rasa's response schema: the type of each key's value (None, Rasa's schema allows it, too).
_RESPONSE_STRINGS = frozenset({"id", "text", "image", "button_type", "channel"})
_RESPONSE_MAPS = frozenset({"custom", "attachment"})
_RESPONSE_LISTS = frozenset({"buttons", "quick_replies", "elements", "condition"})
# The keys every Rasa slot class takes (`value_reset_delay` too, which it does not apply),
# and those of one type only.
_SLOT_KEYS = frozenset(
    {"type", "initial_value", "influence_conversation", "mappings", "value_reset_delay"}
)
_TYPED_SLOT_KEYS = {"values": "categorical", "min_value": "float", "max_value": "float"}
_MAPPING_KEYS = frozenset(
    {"type", "intent", "not_intent", "entity", "role", "group", "value", "action", "conditions"}
)
# What a form has, as Rasa's domain schema lists it.
_FORM_KEYS = ("required_slots", "ignored_intents")
# Mappings that set the slot to their `value` (Rasa's domain requires one).
_VALUE_MAPPINGS = frozenset({"from_intent", "from_trigger_intent"})
# Sections of a training data file, which may share a file with domain sections.
TRAINING_DATA_KEYS = frozenset({"nlu", "stories", "rules"})
_RENAMED = {"templates": "responses", "utter_templates": "responses"}
# What Rasa's domain schema requires of a slot's or a form's name (searched, not matched).
_NAME_LETTER = re.compile(r"[A-Za-z]")


def _null_name(section: str, filename: str, line: int | None) -> InvalidProjectFile:
    """The error for a name in `section` that YAML read as null (`null:` or `~:`)."""
    return InvalidProjectFile(
        f"a name in '{section}' is YAML's null (`null:` or `~:`); quote it to keep it as text",
        filename,
        line,
    )


class DomainReader:
    """Reads and merges domain files; warnings (what Rasa accepts with a warning) go to
    `warnings` when given (the caller reports them), else to the log."""

    def __init__(self, warnings: list[str] | None = None, from_archive: bool = False) -> None:
        self._collected = warnings is not None
        # A trained model's domain: what older versions trained is still loaded.
        self._from_archive = from_archive
        self.warnings = warnings if warnings is not None else []
        # Those of `warnings` Rasa says nothing of (its validator passes them): shown by
        # `data validate`, never failing --fail-on-warnings.
        self.unchecked: list[str] = []
        # Where each slot / form / response / intent was defined, for semantic errors.
        self.origins: dict[str, tuple[str, int | None]] = {}

    def warn(self, message: str, filename: str, line: int | None, unchecked: bool = False) -> None:
        text = f"{filename}:{line}: {message}" if line else f"{filename}: {message}"
        self.warnings.append(text)
        if unchecked:
            self.unchecked.append(text)
        if not self._collected:
            logger.warning("%s", text)

    def read(self, path: str | Path) -> dict[str, Any]:
        """The merged, structurally checked domain dict of a file or directory."""
        path = Path(path)
        if path.is_dir():
            files = folder_files(path)
            merged: dict[str, Any] = {}
            for file in files:
                data = read_yaml_file(file)
                if is_domain_data(data):
                    merged = self.add(merged, file, data)
            return merged
        if not path.exists():
            raise InvalidProjectFile("domain file not found", str(path))
        data = read_yaml_file(path)
        if data is None:
            return {}
        self.check(data, str(path))
        return self.merge({}, data, str(path))

    def add(
        self, merged: dict[str, Any], file: Path, data: Any = None, shared: bool = False
    ) -> dict[str, Any]:
        """`merged` with the domain file `file` (its parsed `data` when read already).
        `shared`: a sub-project's domain, which may repeat an item as it is without a word."""
        if data is None:
            data = read_yaml_file(file)
        self.check(data, str(file))
        return self.merge(merged, data, str(file), shared)

    # -- merging ----------------------------------------------------------------------------
    def merge(
        self, base: dict[str, Any], data: dict[str, Any], filename: str, shared: bool = False
    ) -> dict[str, Any]:
        out = dict(base)
        for key, value in data.items():
            if value is None or key not in DOMAIN_KEYS or key == "version":
                continue
            if key in _LIST_SECTIONS:
                existing = list(out.get(key) or [])
                names = {_item_name(v): _item_properties(v) for v in existing}
                _check_listed_once(key, value, filename)
                for index, item in enumerate(value):
                    name = _item_name(item)
                    line = line_of(value, index)
                    if name in names:
                        if names[name] != _item_properties(item):
                            # Which one would win is a guess; Rasa refuses any repeated intent.
                            raise InvalidProjectFile(
                                f"{_ITEM_OF[key]} '{name}' is defined more than once, with "
                                "different properties; keep one definition",
                                filename,
                                line,
                            )
                        if not shared:
                            self.warn(
                                f"{_ITEM_OF[key]} '{name}' is defined more than once",
                                filename,
                                line,
                            )
                        continue
                    names[name] = _item_properties(item)
                    existing.append(item)
                    self.origins.setdefault(f"{key}:{name}", (filename, line))
                out[key] = existing
            elif key in ("slots", "responses", "forms"):
                existing_map = dict(out.get(key) or {})
                for name, spec in value.items():
                    line = line_of(value, name)
                    if name in existing_map and not (shared and existing_map[name] == spec):
                        self.warn(
                            f"{_ITEM_OF[key]} '{name}' is defined more than once",
                            filename,
                            line,
                        )
                    existing_map[name] = spec
                    self.origins[f"{key}:{name}"] = (filename, line)
                out[key] = existing_map
            else:  # config, session_config: the later file wins key by key
                out[key] = {**(out.get(key) or {}), **value}
                self.origins[key] = (filename, line_of(data, key))
        return out

    # -- structure --------------------------------------------------------------------------
    def check(self, data: Any, filename: str) -> None:
        if not isinstance(data, dict):
            raise InvalidProjectFile(
                "a domain file must be a mapping of sections (intents, slots, responses, ...)",
                filename,
                line_of(data),
            )
        for key in data:
            if key not in DOMAIN_KEYS and key not in TRAINING_DATA_KEYS:
                # Rasa's schema lets unknown sections through and ignores them; we warn.
                hint = f" (did you mean '{_RENAMED[key]}'?)" if key in _RENAMED else ""
                self.warn(
                    f"unknown domain section '{key}' is ignored{hint}", filename, line_of(data, key)
                )
        check_version(data, filename)
        for key in _LIST_SECTIONS:
            self.check_named_list(data, key, filename)
        for key in ("slots", "responses", "forms", "config", "session_config"):
            value = data.get(key)
            if value is not None and not isinstance(value, dict):
                raise InvalidProjectFile(f"'{key}' must be a mapping", filename, line_of(data, key))
            if value is not None and key != "session_config" and None in value:
                # `null:` or `~:` read as a key of None, which trained as a 'None' name
                raise _null_name(key, filename, getattr(value, "key_lines", {}).get(None))
        for section in ("slots", "forms"):
            for name in data.get(section) or {}:
                self.check_letter_in_name(section, name, filename, line_of(data[section], name))
        for name in data.get("responses") or {}:
            if _yaml_scalar(name):
                # (It trained as the text; Rasa's domain sorts the names, a TypeError among
                # text names, or reads the name as text, an AttributeError alone.)
                shown = _yaml_text(name)
                raise InvalidProjectFile(
                    f"response name {shown} is a {_scalar_kind(name)} in YAML, not text, which "
                    f"Rasa fails on; quote it ('\"{shown}\":') if it is meant as a name",
                    filename,
                    line_of(data["responses"], name),
                )
        for name, spec in (data.get("slots") or {}).items():
            self.check_slot(str(name), spec, filename, line_of(data["slots"], name))
        for name, variations in (data.get("responses") or {}).items():
            line = line_of(data["responses"], name)
            check_response(str(name), variations, filename, line, from_archive=self._from_archive)
            if not self._from_archive:
                self.check_response_ids(str(name), variations, filename, line)
        for name, spec in (data.get("forms") or {}).items():
            self.check_form(str(name), spec, filename, line_of(data["forms"], name))
        self.check_session_config(data, filename)
        if not self._from_archive:  # read from JSON: a model trained before still loads
            self.check_json_values(data, filename)
        config = data.get("config") or {}
        if "store_entities_as_slots" in config and not isinstance(
            config["store_entities_as_slots"], bool
        ):
            raise InvalidProjectFile(
                "'store_entities_as_slots' must be true or false",
                filename,
                line_of(config, "store_entities_as_slots"),
            )

    def check_letter_in_name(
        self, section: str, name: Any, filename: str, line: int | None
    ) -> None:
        """Refuses a slot, form or action (one with properties) name without a letter, as
        Rasa's domain schema does (its key pattern, `[A-Za-z]+`): before, a slot or form `1:`
        trained as '1'. A model trained before still loads."""
        if self._from_archive or re.search(_NAME_LETTER, str(name)):
            return
        raise InvalidProjectFile(
            f"{section[:-1]} name '{name}' has no letter (A-Z or a-z): Rasa's domain schema "
            "refuses such a name, quoted or not; give it a name with a letter",
            filename,
            line,
        )

    def check_json_values(self, data: dict[str, Any], filename: str) -> None:
        """Refuses a value a model cannot keep (the domain is stored and sent as JSON): an
        unquoted date, a set, bytes, an infinity. A categorical slot's values are text."""
        for key, section in data.items():
            if key not in DOMAIN_KEYS:  # stories, NLU data or what Rasa ignores: not kept
                continue
            if key != "slots":
                check_json_values(section, filename, line_of(data, key), key)
                continue
            for spec in (section or {}).values():
                for field, value in spec.items():
                    if field != "values":
                        check_json_values(value, filename, line_of(spec, field), field)

    def check_named_list(self, data: dict[str, Any], key: str, filename: str) -> None:
        value = data.get(key)
        if value is None:
            return
        if not isinstance(value, list):
            raise InvalidProjectFile(f"'{key}' must be a list", filename, line_of(data, key))
        for index, item in enumerate(value):
            line = line_of(value, index)
            if isinstance(item, str) and item.strip():
                continue
            if key == "e2e_actions" or not isinstance(item, dict) or len(item) != 1:
                quote = f"; quote it ('- \"{_yaml_text(item)}\"')" if _yaml_scalar(item) else ""
                raise InvalidProjectFile(
                    f"each item of '{key}' must be a name or a mapping of one name to its "
                    f"properties, not {brief(item)}{quote}",
                    filename,
                    line,
                )
            name, props = next(iter(item.items()))
            if name is None:  # `- null:` or `- ~:`, which trained as a 'None' name
                raise _null_name(key, filename, line)
            if _yaml_scalar(name):
                # (It trained as the text; Rasa's domain fails sorting it among text names.)
                raise InvalidProjectFile(
                    f"a name in '{key}' is {_yaml_text(name)}, a {_scalar_kind(name)} in YAML, "
                    f"not text; quote it ('- \"{_yaml_text(name)}\":') if it is meant as a name",
                    filename,
                    line,
                )
            if key == "actions":
                self.check_letter_in_name(key, name, filename, line)
            if props is not None and not isinstance(props, dict):
                raise InvalidProjectFile(
                    f"the properties of '{name}' in '{key}' must be a mapping",
                    filename,
                    line_of(item, name, line),
                )
            if key == "intents" and not props:
                # `- greet:` is a slip for `- greet` (or for properties left out): Rasa
                # refuses it (InvalidDomain), so a project that trains here trains there too.
                raise InvalidProjectFile(
                    f"intent '{name}' has a ':' but no properties; write '- {name}' (without "
                    "the ':') or give it properties such as 'use_entities'",
                    filename,
                    line_of(item, name, line),
                )
            props = props or {}
            if key == "entities":
                for sub in ("roles", "groups"):
                    if sub in props and not (
                        isinstance(props[sub], list) and all(isinstance(s, str) for s in props[sub])
                    ):
                        raise InvalidProjectFile(
                            f"'{sub}' of entity '{name}' must be a list of names",
                            filename,
                            line_of(props, sub, line),
                        )
            if key == "actions" and "send_domain" in props:
                if not isinstance(props["send_domain"], bool):
                    raise InvalidProjectFile(
                        f"'send_domain' of action '{name}' must be true or false",
                        filename,
                        line_of(props, "send_domain", line),
                    )
            if key == "intents":
                for sub in ("use_entities", "ignore_entities"):
                    sub_value = props.get(sub)
                    if sub_value is not None and not isinstance(sub_value, (bool, list)):
                        raise InvalidProjectFile(
                            f"'{sub}' of intent '{name}' must be true, false or a list of "
                            "entity names",
                            filename,
                            line_of(props, sub, line),
                        )

    def check_slot(self, name: str, spec: Any, filename: str, line: int | None) -> None:
        if name == SESSION_STARTED_METADATA and not self._from_archive:
            # Rasa adds this slot to every domain, declared or not, and then refuses the
            # domain ("Duplicate slots in domain"); an archive holds it as the server added it.
            raise InvalidProjectFile(
                f"slot '{name}' is one the server adds to every domain itself (it holds the "
                "metadata of the message that started the session): Rasa refuses a domain "
                "that declares it too; remove it from the slots",
                filename,
                line,
            )
        if not isinstance(spec, dict):
            raise InvalidProjectFile(
                f"slot '{name}' must be a mapping with a 'type' and 'mappings'", filename, line
            )
        slot_type = spec.get("type")
        type_line = line_of(spec, "type", line)
        if slot_type is None:
            raise InvalidProjectFile(f"slot '{name}' needs a 'type'", filename, line)
        normalized = slot_type
        if isinstance(slot_type, str) and slot_type.startswith("rasa.shared.core.slots."):
            normalized = slot_type.rsplit(".", 1)[1].replace("Slot", "").lower()
            normalized = {"unfeaturized": "any", "boolean": "bool"}.get(normalized, normalized)
        if normalized not in SLOT_TYPES:
            if isinstance(slot_type, str) and "." in slot_type:
                message = (
                    f"slot '{name}' has the custom slot class '{slot_type}', which botserver "
                    f"cannot load; use one of the built-in types: {', '.join(SLOT_TYPES)}"
                )
            else:
                message = (
                    f"slot '{name}' has unknown type '{slot_type}'; "
                    f"use one of {', '.join(SLOT_TYPES)}"
                )
            raise InvalidProjectFile(message, filename, type_line)
        if not self._from_archive:  # a model trained before this check still loads
            self._check_slot_keys(name, spec, str(normalized), filename, line)
        if "influence_conversation" in spec and not isinstance(
            spec["influence_conversation"], bool
        ):
            raise InvalidProjectFile(
                f"'influence_conversation' of slot '{name}' must be true or false",
                filename,
                line_of(spec, "influence_conversation", line),
            )
        for key in ("min_value", "max_value"):
            value = spec.get(key, 0.0)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or value != value
                or (isinstance(value, int) and abs(value) > sys.float_info.max)  # no float holds it
            ):
                raise InvalidProjectFile(
                    f"'{key}' of slot '{name}' must be a number", filename, line_of(spec, key)
                )
            if not math.isfinite(value) and not self._from_archive:  # trained before: loads
                # Every value of the slot featurizes alike (in Rasa too), and no JSON holds it.
                raise InvalidProjectFile(
                    f"'{key}' of slot '{name}' must be a finite number, not {value}: over an "
                    "infinite range every value featurizes alike, so the slot tells the "
                    "policies nothing",
                    filename,
                    line_of(spec, key),
                )
        low, high = spec.get("min_value", 0.0), spec.get("max_value", 1.0)
        if low > high or (low == high and not self._from_archive):
            # Rasa refuses this too; the slot's features would otherwise run backwards (or,
            # for an empty range, be the same for every value). An archive trained before
            # the empty range was refused still loads: its slot featurizes as it did.
            raise InvalidProjectFile(
                f"'min_value' of slot '{name}' ({low}) is not below its 'max_value' ({high})",
                filename,
                line_of(spec, "min_value", line),
            )
        if normalized == "float" and not _is_number(spec.get("initial_value")):
            # Rasa featurizes such a slot as 0.0 on every turn, without a word.
            raise InvalidProjectFile(
                f"'initial_value' of float slot '{name}' must be a number, "
                f"not {brief(spec['initial_value'])}",
                filename,
                line_of(spec, "initial_value", line),
            )
        initial = spec.get("initial_value")
        if normalized == "float" and initial is not None and not low <= float(initial) <= high:
            # Rasa's warning too.
            self.warn(
                f"the initial_value of float slot '{name}' ({initial}) is outside its range "
                f"({low} to {high}); it featurizes as the nearest end",
                filename,
                line_of(spec, "initial_value", line),
            )
        values = spec.get("values")
        if normalized == "categorical" and values is not None and not isinstance(values, list):
            raise InvalidProjectFile(
                f"'values' of categorical slot '{name}' must be a list",
                filename,
                line_of(spec, "values", line),
            )
        if normalized == "categorical" and not [v for v in values or () if v is not None]:
            # Rasa trains it (its schema does not ask for `values`): every value is `__other__`.
            self.warn(
                f"categorical slot '{name}' lists no values: every value it takes reads to the "
                "policies as `__other__` (as in Rasa), so they only see whether it is set",
                filename,
                line,
                unchecked=True,
            )
        if normalized == "categorical" and values and None in values:
            # Rasa's warning too: the slot keeps its values without it.
            self.warn(
                f"categorical slot '{name}' lists null among its values: null is the value of "
                'an unset slot, so it is ignored (write "null", quoted, for the text)',
                filename,
                line_of(spec, "values", line),
            )
        if normalized == "any" and spec.get("influence_conversation") is True:
            raise InvalidProjectFile(
                f"slot '{name}' of type any cannot influence the conversation",
                filename,
                line_of(spec, "influence_conversation", line),
            )
        mappings = spec.get("mappings")
        if "mappings" not in spec:
            self.warn(
                f"slot '{name}' has no 'mappings', which Rasa 3 requires (Rasa refuses this "
                "domain); botserver reads it as `mappings: []`: only actions set it, no message "
                "(`botserver data migrate` turns a Rasa 2 domain's auto_fill and form mappings "
                "into slot mappings)",
                filename,
                line,
            )
            return
        if not isinstance(mappings, list):
            raise InvalidProjectFile(
                f"'mappings' of slot '{name}' must be a list", filename, line_of(spec, "mappings")
            )
        if name in BUILT_IN_SLOTS and any(_fills(m) for m in mappings):
            # A bare `type: custom` says "set by actions" (Rasa 3 wants some mapping on
            # every slot): the one way to declare a categorical requested_slot quietly.
            self.warn(
                f"slot '{name}' is one the server sets itself: no message fills it, so its "
                "mappings are ignored",
                filename,
                line,
            )
        for index, mapping in enumerate(mappings):
            mapping_line = line_of(mappings, index, line)
            self.check_mapping(name, mapping, filename, mapping_line)

    def _check_slot_keys(
        self, name: str, spec: dict[str, Any], kind: str, filename: str, line: int | None
    ) -> None:
        """Rasa's slot classes take only their own keys: any other is a TypeError there."""
        for key in spec:
            if key in _SLOT_KEYS:
                continue
            where = line_of(spec, key, line)
            owner = _TYPED_SLOT_KEYS.get(key)
            if owner == kind:
                continue
            if key == "auto_fill":
                # Rasa 2's: named so `data validate` goes on to the form it also reports.
                self.warn(
                    f"slot '{name}' has Rasa 2's 'auto_fill', which Rasa 3 refuses and "
                    "botserver ignores: `botserver data migrate` turns it into a mapping",
                    filename,
                    where,
                )
                continue
            if owner is not None:
                message = f"'{key}' is a key of {owner} slots, and slot '{name}' is of type {kind}"
            else:
                message = (
                    f"unknown key '{key}' in slot '{name}'; a slot has type, initial_value, "
                    "influence_conversation, mappings (values for a categorical slot, "
                    "min_value and max_value for a float one)"
                )
            raise InvalidProjectFile(message, filename, where)

    def check_mapping(self, slot: str, mapping: Any, filename: str, line: int | None) -> None:
        if not isinstance(mapping, dict):
            raise InvalidProjectFile(
                f"each mapping of slot '{slot}' must be a mapping with a 'type'", filename, line
            )
        for key in mapping:
            if key not in _MAPPING_KEYS:
                raise InvalidProjectFile(
                    f"unknown key '{key}' in a mapping of slot '{slot}'",
                    filename,
                    line_of(mapping, key, line),
                )
        kind = mapping.get("type")
        if kind not in MAPPING_TYPES:
            raise InvalidProjectFile(
                f"slot '{slot}' has a mapping of unknown type '{kind}'; use one of "
                + ", ".join(MAPPING_TYPES),
                filename,
                line_of(mapping, "type", line),
            )
        if kind == "from_entity" and not isinstance(mapping.get("entity"), str):
            raise InvalidProjectFile(
                f"a from_entity mapping of slot '{slot}' needs an 'entity'", filename, line
            )
        if kind in _VALUE_MAPPINGS and mapping.get("value") is None and not self._from_archive:
            # As Rasa's domain refuses it: the slot would never be set (a model trained
            # before this check still loads).
            raise InvalidProjectFile(
                f"a {kind} mapping of slot '{slot}' needs a 'value': the value the slot takes "
                "when the intent comes",
                filename,
                line,
            )
        for key in ("intent", "not_intent"):
            names = mapping.get(key)
            if names is not None and not _is_names(names):
                raise InvalidProjectFile(
                    f"'{key}' of a mapping of slot '{slot}' must be an intent name or a list of "
                    f"them, not {brief(names)}",
                    filename,
                    line_of(mapping, key, line),
                )
        for key in ("entity", "role", "group", "action"):
            value = mapping.get(key)
            if value is not None and not isinstance(value, str):
                raise InvalidProjectFile(
                    f"'{key}' of a mapping of slot '{slot}' must be a name, not {brief(value)}",
                    filename,
                    line_of(mapping, key, line),
                )
        conditions = mapping.get("conditions")
        if conditions is not None:
            if not isinstance(conditions, list) or not all(isinstance(c, dict) for c in conditions):
                raise InvalidProjectFile(
                    f"'conditions' of a mapping of slot '{slot}' must be a list of "
                    "'active_loop' / 'requested_slot' mappings",
                    filename,
                    line_of(mapping, "conditions", line),
                )
            for condition in conditions:
                for key in condition:
                    if key not in ("active_loop", "requested_slot"):
                        raise InvalidProjectFile(
                            f"unknown key '{key}' in a mapping condition of slot '{slot}'",
                            filename,
                            line_of(condition, key, line),
                        )
                    name = condition[key]
                    if name is not None and not isinstance(name, str) and not self._from_archive:
                        # As Rasa's domain schema: a form's or a slot's name, or null.
                        raise InvalidProjectFile(
                            f"'{key}' of a mapping condition of slot '{slot}' must be a name or "
                            f"null, not {brief(name)}",
                            filename,
                            line_of(condition, key, line),
                        )

    def check_form(self, name: str, spec: Any, filename: str, line: int | None) -> None:
        if spec is None:
            return
        if not isinstance(spec, dict):
            raise InvalidProjectFile(f"form '{name}' must be a mapping", filename, line)
        if not self._from_archive:  # a model trained before these checks still loads
            self.check_form_keys(name, spec, filename, line)
        ignored = spec.get("ignored_intents")
        if ignored is not None and not _is_names(ignored):
            raise InvalidProjectFile(
                f"'ignored_intents' of form '{name}' must be an intent name or a list of them, "
                f"not {brief(ignored)}",
                filename,
                line_of(spec, "ignored_intents", line),
            )
        required = spec.get("required_slots")
        if required is None:
            return
        if isinstance(required, dict):
            self.warn(
                f"form '{name}' uses the Rasa 2 'required_slots' mapping; Rasa 3 wants a list "
                "of slot names (with the mappings on the slots): `botserver data migrate` "
                "rewrites the domain so",
                filename,
                line_of(spec, "required_slots", line),
            )
            return
        if not isinstance(required, list) or not all(isinstance(s, str) for s in required):
            raise InvalidProjectFile(
                f"'required_slots' of form '{name}' must be a list of slot names",
                filename,
                line_of(spec, "required_slots", line),
            )

    @staticmethod
    def check_form_keys(name: str, spec: dict[str, Any], filename: str, line: int | None) -> None:
        """Refuses what Rasa refuses in a form, each of which would train a form that asks
        for nothing: a key forms do not have (a typo, or Rasa 2.0's slot mappings under the
        form), and `ignored_intents` without `required_slots`."""
        for key, value in spec.items():
            if key in _FORM_KEYS:
                continue
            if "required_slots" not in spec and _are_mappings(value):
                raise InvalidProjectFile(
                    f"form '{name}' is in Rasa 2's format (slot mappings under the form); Rasa 3 "
                    "wants 'required_slots', a list of slot names, with the mappings on the "
                    "slots: `botserver data migrate` rewrites the domain so",
                    filename,
                    line_of(spec, key, line),
                )
            raise InvalidProjectFile(
                f"unknown key '{key}' in form '{name}'; a form has "
                + " and ".join(f"'{k}'" for k in _FORM_KEYS),
                filename,
                line_of(spec, key, line),
            )
        if "ignored_intents" in spec and "required_slots" not in spec:
            raise InvalidProjectFile(
                f"form '{name}' has 'ignored_intents', so it needs 'required_slots' too "
                "(a list of slot names, `[]` for none), as Rasa requires",
                filename,
                line_of(spec, "ignored_intents", line),
            )

    def check_session_config(self, data: dict[str, Any], filename: str) -> None:
        session = data.get("session_config") or {}
        expiration = session.get("session_expiration_time")
        if expiration is not None and (
            isinstance(expiration, bool)
            or not isinstance(expiration, (int, float))
            or expiration < 0
            # .inf, 1e400 or .nan: no JSON holds it (GET /domain, the action server's domain);
            # a model trained with one before reads it as 0, which it meant; nor does a float
            # hold 10**400 (an OverflowError, a 500 from POST /model/train)
            or (not finite_number(expiration) and not self._from_archive)
        ):
            raise InvalidProjectFile(
                "'session_expiration_time' must be a number of minutes, 0 or more (0: "
                "sessions never expire)",
                filename,
                line_of(session, "session_expiration_time"),
            )
        carry = session.get("carry_over_slots_to_new_session")
        if carry is not None and not isinstance(carry, bool):
            raise InvalidProjectFile(
                "'carry_over_slots_to_new_session' must be true or false",
                filename,
                line_of(session, "carry_over_slots_to_new_session"),
            )

    # -- semantics --------------------------------------------------------------------------
    def build(self, merged: dict[str, Any], filename: str) -> Domain:
        """Domain.from_dict, with semantic errors pointed at the file and line of the item."""
        try:
            domain = Domain.from_dict(merged)
        except InvalidProjectFile as exc:
            if exc.filename:
                raise
            where = self.locate(exc.reason) or (filename, None)
            raise InvalidProjectFile(exc.reason, where[0], where[1]) from None
        if not self._from_archive:  # a model trained before this check still loads
            self.check_form_names(domain, filename)
        self.check_mapping_names(domain, filename)
        return domain

    def check_form_names(self, domain: Domain, filename: str) -> None:
        """Refuses a form named like a built-in action or a response, as Rasa does (its
        domain would name the action twice); listed under `actions`, the name is the
        project's own action, run on the action server, and Rasa accepts it."""
        for name in domain.forms:
            if name in domain.user_actions:
                continue
            if name in DEFAULT_ACTIONS:
                what = "is named like the built-in action, which would run instead of the form"
            elif name in domain.responses:
                what = "has the name of a response, which would be uttered instead of the form"
            else:
                continue
            raise InvalidProjectFile(
                f"form '{name}' {what}; rename the form",
                *self.origins.get(f"forms:{name}", (filename, None)),
            )

    def check_response_ids(
        self, name: str, variations: list[dict[str, Any]], filename: str, line: int | None
    ) -> None:
        """Warns of an `id` given to several variations of a response (checked by
        `check_response`) that may be picked from together: the NLG server is sent no id
        then, as Rasa warns when it is. Variations for different channels, or with
        conditions no slot value meets at once, never are."""
        seen: dict[str, list[dict[str, Any]]] = {}
        for index, variation in enumerate(variations):
            response_id = variation.get("id")
            if not response_id:
                continue
            others = seen.setdefault(response_id, [])
            if any(_picked_from_together(other, variation) for other in others):
                self.warn(
                    f"response '{name}' gives the id '{response_id}' to more than one "
                    "variation: an NLG server is sent no id (null) when they may both be "
                    "said, as in Rasa",
                    filename,
                    line_of(variation, "id", line_of(variations, index, line)),
                )
            others.append(variation)

    def check_mapping_names(self, domain: Domain, filename: str) -> None:
        """Warns of slot mappings naming an entity (from_entity) or intent (from_intent) the
        domain does not list: often a typo, and a mapping Rasa skips at every message."""
        entities, intents = set(domain.entities), set(domain.intent_properties)
        for slot in domain.slots:
            for mapping in slot.mappings:
                if mapping.type == "from_entity":
                    missing = [mapping.entity] if mapping.entity not in entities else []
                elif mapping.type == "from_intent":
                    missing = [name for name in mapping.intent if name not in intents]
                else:
                    continue
                for name in missing:
                    where = self.origins.get(f"slots:{slot.name}", (filename, None))
                    kind = mapping.type.removeprefix("from_")
                    self.warn(
                        f"slot '{slot.name}' has a {mapping.type} mapping for the {kind} "
                        f"'{name}', which the domain does not list (Rasa skips this mapping)",
                        *where,
                        unchecked=True,  # Rasa's validator says nothing of it
                    )

    def locate(self, message: str) -> tuple[str, int | None] | None:
        kinds = ("forms", "slots", "responses", "intents", "entities", "actions")
        for quoted in re.findall(r"'([^']+)'", message):
            for kind in kinds:
                origin = self.origins.get(f"{kind}:{quoted}")
                if origin:
                    return origin
        return None


def check_response(
    name: str, variations: Any, filename: str, line: int | None, *, from_archive: bool = False
) -> None:
    """A response is a list of variations, each with a `text` or a `custom` payload (a
    model's domain, `from_archive`, may hold conditions trained before they were checked)."""
    if not isinstance(variations, list) or not variations:
        raise InvalidProjectFile(
            f"response '{name}' must be a non-empty list of variations such as '- text: Hi'",
            filename,
            line,
        )
    for index, variation in enumerate(variations):
        variation_line = line_of(variations, index, line)
        if not isinstance(variation, dict):
            raise InvalidProjectFile(
                f"each variation of response '{name}' must be a mapping such as "
                f"'- text: ...', not {brief(variation)}",
                filename,
                variation_line,
            )
        for key in variation:
            if key not in _RESPONSE_KEYS:
                raise InvalidProjectFile(
                    f"unknown key '{key}' in a variation of response '{name}'",
                    filename,
                    line_of(variation, key, variation_line),
                )
        _check_variation_values(name, variation, filename, variation_line)
        if not from_archive:
            _check_conditions(name, variation.get("condition") or [], filename, variation_line)
        if variation.get("text") is None and not variation.get("custom"):
            raise InvalidProjectFile(
                f"a variation of response '{name}' needs a 'text' or a 'custom' payload",
                filename,
                variation_line,
            )


def _picked_from_together(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether response variations `a` and `b` may be among those one is picked from (as
    `ResponseVariations.eligible` sorts them): for the same channel, both without a condition
    or both with conditions the slots may meet at once."""
    if (a.get("channel") or None) != (b.get("channel") or None):
        return False
    conditions_a, conditions_b = a.get("condition") or [], b.get("condition") or []
    if bool(conditions_a) != bool(conditions_b):
        return False
    wanted = {c.get("name"): c.get("value") for c in conditions_a}
    for condition in conditions_b:
        name, value = condition.get("name"), condition.get("value")
        if name not in wanted:
            continue
        other = wanted[name]
        if isinstance(value, str) and isinstance(other, str):
            if value.casefold() != other.casefold():  # (text is met without regard to case)
                return False
        elif value != other:
            return False
    return True


def _check_variation_values(
    name: str, variation: dict[Any, Any], filename: str, line: int | None
) -> None:
    """`text: 3` or `buttons: x` would fail (or send garbage) on the first turn that utters
    the response: refuse it here, as Rasa's schema does."""
    for key, value in variation.items():
        if value is None:
            continue
        if key in _RESPONSE_STRINGS and not isinstance(value, str):
            expected = "text"
        elif key in _RESPONSE_MAPS and not isinstance(value, dict):
            expected = "a mapping"
        elif key in _RESPONSE_LISTS and not (
            isinstance(value, list) and all(isinstance(item, dict) for item in value)
        ):
            expected = "a list of mappings"
        else:
            continue
        raise InvalidProjectFile(
            f"'{key}' in a variation of response '{name}' must be {expected}, not {brief(value)}",
            filename,
            line_of(variation, key, line),
        )


def _check_conditions(
    name: str, conditions: list[dict[Any, Any]], filename: str, line: int | None
) -> None:
    """Rasa's response schema: a condition has a `type`, a slot's `name` (both text) and a
    `value`; a name that is a list or a mapping failed every turn saying the response."""
    for condition in conditions:
        for key, value in condition.items():
            if key not in ("type", "name", "value"):
                raise InvalidProjectFile(
                    f"unknown key '{key}' in a condition of response '{name}' (a condition "
                    "has 'name', 'value' and 'type')",
                    filename,
                    line_of(condition, key, line),
                )
            if key == "name" and not isinstance(value, str):
                raise InvalidProjectFile(
                    f"'name' of a condition of response '{name}' must be the name of a slot, "
                    f"not {brief(value)}",
                    filename,
                    line_of(condition, key, line),
                )
            if key == "type" and not isinstance(value, str):
                raise InvalidProjectFile(
                    f"'type' of a condition of response '{name}' must be text, not {brief(value)}",
                    filename,
                    line_of(condition, key, line),
                )


def _is_names(value: Any) -> bool:
    """One name or a list of names (`intent: greet`, `intent: [greet, hi]`)."""
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(name, str) for name in value)
    )


def _are_mappings(value: Any) -> bool:
    """Whether `value` reads as one slot's mappings in a Rasa 2 form (a list of mappings,
    each with a `type`)."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and "type" in m for m in value)
    )


def _yaml_scalar(value: Any) -> bool:
    """Whether YAML read a name as a number or a boolean (`1`, `2.5`, `true`), not text."""
    return isinstance(value, (int, float))


def _yaml_text(value: Any) -> str:
    """A number or a boolean as YAML writes it (`true`, not Python's `True`)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _scalar_kind(value: Any) -> str:
    return "boolean" if isinstance(value, bool) else "number"


def _is_number(value: Any) -> bool:
    """None (no initial value), a finite number, or a string holding one."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    try:
        return math.isfinite(float(value))
    except (ValueError, OverflowError):  # (an integer no float holds)
        return False


def is_domain_data(data: Any) -> bool:
    """Whether parsed YAML is a domain file: Rasa's rule, any domain section (a file with
    `nlu:` and `responses:` is both training data and part of the domain)."""
    return isinstance(data, dict) and any(key in data for key in DOMAIN_KEYS - {"version"})


def read_domain(
    path: str | Path,
    extra_responses: dict[str, list[dict[str, Any]]] | None = None,
    warnings: list[str] | None = None,
) -> Domain:
    """Reads a domain file or directory; `extra_responses` (from NLU files) are added."""
    reader = DomainReader(warnings)
    merged = reader.read(path)
    if extra_responses:
        responses = dict(merged.get("responses") or {})
        for name, variations in extra_responses.items():
            responses.setdefault(name, variations)
        merged["responses"] = responses
    return reader.build(merged, str(path))


def _item_properties(item: Any) -> Any:
    """What an intent or entity entry says beyond its name (`greet` is `{greet: {}}`)."""
    return (item.get(_item_name(item)) or {}) if isinstance(item, dict) else {}


def _item_name(item: Any) -> str:
    return str(item) if not isinstance(item, dict) else str(next(iter(item)))


def _check_listed_once(key: str, items: list[Any], filename: str) -> None:
    """InvalidProjectFile naming an intent, entity or action a domain file lists more than
    once (how often, and any other), at its first repeat's line. Rasa refuses such a file
    ("Intents are not unique!", "Duplicate entities in domain", "Duplicate actions in
    domain") and then trains nothing of the domain, except for a default action listed
    twice, which it drops without a word (a warning here); a repeat across the files of a
    domain is only a warning there too."""
    places: dict[str, list[int]] = {}  # each name, at the indexes that list it
    for index, item in enumerate(items):
        name = _item_name(item)
        if not (key == "actions" and name in DEFAULT_ACTIONS):
            places.setdefault(name, []).append(index)
    # The repeated names, in the order of their first repeats.
    repeats = sorted((at for at in places.values() if len(at) > 1), key=lambda at: at[1])
    if not repeats:
        return
    first, *others = repeats
    name = _item_name(items[first[0]])
    more = ", ".join(f"'{_item_name(items[at[0]])}'" for at in others)
    more = f" (and {how_many(len(others), 'other')}: {more})" if others else ""
    item = _ITEM_OF[key]
    lines = [line_of(items, index) for index in first]
    raise InvalidProjectFile(
        f"{item} '{name}' is listed {_times_listed(lines)}{more}: list each {item} once",
        filename,
        lines[1],
    )


# A name listed more often gives its first lines, then how many more.
_LINES_SHOWN = 8


def _times_listed(lines: list[int | None]) -> str:
    """How often a name is listed: "twice" (the error's line is the repeat), or "3 times, on
    lines 2, 4 and 6", as deleting the repeat the error points at would only lead to the
    next one."""
    if len(lines) == 2:
        return "twice"
    times = f"{len(lines)} times"
    # (a flow list, `[greet, greet, greet]`, holds them on one line: each line once)
    distinct = list(dict.fromkeys(lines))
    if None in distinct or len(distinct) == 1:
        return times
    shown = [str(line) for line in distinct[:_LINES_SHOWN]]
    rest = len(distinct) - len(shown)
    last = f"{rest} more" if rest else shown.pop()
    return f"{times}, on lines {', '.join(shown)} and {last}"


def _fills(mapping: Any) -> bool:
    """Whether slot extraction would set a slot from `mapping`: every mapping but a bare
    `type: custom`, which names no action and declares a slot that actions set."""
    return not (
        isinstance(mapping, dict) and mapping.get("type") == "custom" and not mapping.get("action")
    )
