"""`botserver data migrate`: a Rasa 2 domain rewritten in Rasa 3's format, as Rasa's `rasa data
migrate` rewrites it: form slot mappings and `auto_fill` become slot `mappings`."""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.errors import InvalidProjectFile
from server.training.yaml_io import dump_yaml, is_yaml_file, line_of, read_yaml_file

logger = logging.getLogger(__name__)

LATEST_VERSION = "3.1"
BACKUP_NAME = "original_domain"
NEW_NAME = "new_domain"
_DOMAIN_KEYS = {
    "intents",
    "entities",
    "slots",
    "forms",
    "responses",
    "actions",
    "session_config",
    "e2e_actions",
}
# Form mappings of these types fill the slot whichever slot the form asks for; the others
# only when the form asks for this one (Rasa 3's `requested_slot` condition).
_ANY_REQUESTED_SLOT = {"from_entity", "from_trigger_intent"}


@dataclass
class Migration:
    """What `data migrate` writes: each file's new content, and where the originals are
    copied to."""

    domain: Path
    out: Path
    backup: Path
    files: dict[Path, dict[str, Any]] = field(default_factory=dict)  # source -> new content
    warnings: list[str] = field(default_factory=list)

    def write(self) -> None:
        """Copies the originals to the backup, then writes the migrated files; on a failure,
        removes what it wrote (the originals are never changed)."""
        made_out_dir = self.domain.is_dir() and not self.out.exists()
        try:
            if self.domain.is_dir():
                self.backup.mkdir()
                self.out.mkdir(parents=True, exist_ok=True)
                for source, content in self.files.items():
                    shutil.copyfile(source, self.backup / source.name)
                    (self.out / source.name).write_text(dump_yaml(content), "utf-8")
            else:
                shutil.copyfile(self.domain, self.backup)
                self.out.write_text(dump_yaml(self.files[self.domain]), "utf-8")
        except OSError:
            if self.backup.is_dir():
                shutil.rmtree(self.backup)
            else:
                self.backup.unlink(missing_ok=True)
            if made_out_dir:
                shutil.rmtree(self.out, ignore_errors=True)
            elif self.domain.is_dir():
                for source in self.files:
                    (self.out / source.name).unlink(missing_ok=True)
            else:
                self.out.unlink(missing_ok=True)
            raise


def _is_domain_file(path: Path, content: Any) -> bool:
    return is_yaml_file(path) and isinstance(content, dict) and bool(_DOMAIN_KEYS & set(content))


def plan_migration(domain: Path, out: Path | None = None) -> Migration:
    """Reads and checks the domain (a file or a directory of files) and computes the migrated
    files; writes nothing."""
    if not domain.exists():
        raise InvalidProjectFile("domain file not found", str(domain))
    as_dir = domain.is_dir()
    backup = domain.parent / (BACKUP_NAME if as_dir else f"{BACKUP_NAME}.yml")
    if backup.exists():
        raise InvalidProjectFile(
            f"{backup} already exists, where the original domain is copied to: move it away first",
            str(domain),
        )
    if out is None:
        out = domain.parent / (NEW_NAME if as_dir else f"{NEW_NAME}.yml")
    if as_dir and out.is_file():
        raise InvalidProjectFile(
            f"--out {out} is a file; a domain directory migrates into a directory", str(domain)
        )
    if as_dir and out.is_dir() and any(out.iterdir()):
        raise InvalidProjectFile(f"--out {out} is a directory that is not empty", str(domain))
    if not as_dir and out.exists():
        raise InvalidProjectFile(
            f"--out {out} already exists: remove it or name another", str(domain)
        )

    sources = sorted(domain.iterdir()) if as_dir else [domain]
    contents: dict[Path, dict[str, Any]] = {}
    for file in sources:
        if not file.is_file() or not is_yaml_file(file):
            continue
        content = read_yaml_file(file)
        if not _is_domain_file(file, content):
            if not as_dir:
                raise InvalidProjectFile(
                    "not a domain file: no intents, slots, forms, ...", str(file)
                )
            continue
        if str(content.get("version", "")) == LATEST_VERSION:
            raise InvalidProjectFile(
                f'already in Rasa 3\'s format (version: "{LATEST_VERSION}"): nothing to migrate',
                str(file),
                line_of(content, "version"),
            )
        contents[file] = content
    if not contents:
        raise InvalidProjectFile("no domain files to migrate", str(domain))

    migration = Migration(domain, out, backup)
    slots: dict[str, Any] = {}
    forms: dict[str, Any] = {}
    entities: list[str] = []
    holders: dict[str, Path] = {}
    for file, content in contents.items():
        for key in ("slots", "forms"):
            if key not in content:
                continue
            if key in holders:
                raise InvalidProjectFile(
                    f"'{key}' is also in {holders[key]}: keep it in one file of the domain",
                    str(file),
                    line_of(content, key),
                )
            holders[key] = file
            section = content[key] or {}
            if not isinstance(section, dict):
                raise InvalidProjectFile(
                    f"'{key}' must be a mapping", str(file), line_of(content, key)
                )
            (slots if key == "slots" else forms).update(copy.deepcopy(section))
        for entity in content.get("entities") or []:
            entities.append(str(next(iter(entity))) if isinstance(entity, dict) else str(entity))

    new_forms = _migrate_forms(forms, slots, holders.get("forms"))
    new_slots = _migrate_slots(slots, set(entities), holders.get("slots"), migration.warnings)
    for file, content in contents.items():
        migrated: dict[str, Any] = {}
        for key, value in content.items():
            if key == "slots":
                value = new_slots
            elif key == "forms":
                value = new_forms
            elif key == "version":
                value = LATEST_VERSION
            migrated[key] = value
        migration.files[file] = migrated
    return migration


def _form_mappings(
    form: str, spec: Any, filename: str
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """A Rasa 2 form's slot mappings (slot -> mappings) and its ignored intents."""
    if spec is None:
        return {}, []
    if not isinstance(spec, dict):
        raise InvalidProjectFile(f"form '{form}' must be a mapping", filename, line_of(spec))
    ignored = list(spec.get("ignored_intents") or [])
    required = spec.get("required_slots", {k: v for k, v in spec.items() if k != "ignored_intents"})
    if isinstance(required, list):
        raise InvalidProjectFile(
            f"form '{form}' is already in Rasa 3's format (required_slots is a list of slot "
            "names): nothing to migrate",
            filename,
            line_of(spec, "required_slots"),
        )
    if not isinstance(required, dict):
        raise InvalidProjectFile(
            f"form '{form}': required_slots must map each slot to its mappings",
            filename,
            line_of(spec, "required_slots"),
        )
    mappings: dict[str, list[dict[str, Any]]] = {}
    for slot, slot_mappings in required.items():
        items = slot_mappings or []
        if not isinstance(items, list) or not all(
            isinstance(m, dict) and isinstance(m.get("type"), str) for m in items
        ):
            raise InvalidProjectFile(
                f"form '{form}': the mappings of slot '{slot}' must be a list of mappings, each "
                "with a 'type'",
                filename,
                line_of(required, slot),
            )
        mappings[str(slot)] = [dict(m) for m in items]
    return mappings, ignored


def _migrate_forms(
    forms: dict[str, Any], slots: dict[str, Any], file: Path | None
) -> dict[str, Any]:
    """Rasa 3 forms (`required_slots` a list of names); each form mapping moves to its slot,
    with the condition that the form is active (and, but for entity and trigger-intent
    mappings, that it asks for this slot). A mapping the slot already has gets the condition
    added to its own."""
    filename = str(file)
    new_forms: dict[str, Any] = {}
    for form, spec in forms.items():
        form = str(form)
        by_slot, ignored = _form_mappings(form, spec, filename)
        for slot, mappings in by_slot.items():
            properties = slots.get(slot)
            if properties is None:
                properties = slots[slot] = {}
            elif not isinstance(properties, dict):
                raise InvalidProjectFile(f"slot '{slot}' must be a mapping", filename)
            existing: list[dict[str, Any]] = list(properties.get("mappings") or [])
            for mapping in mappings:
                condition: dict[str, Any] = {"active_loop": form}
                if mapping["type"] not in _ANY_REQUESTED_SLOT:
                    condition["requested_slot"] = slot
                same = next(
                    (
                        m
                        for m in existing
                        if {k: v for k, v in m.items() if k != "conditions"} == mapping
                    ),
                    None,
                )
                if same is not None:
                    same["conditions"] = [*(same.get("conditions") or []), condition]
                else:
                    existing.append({**mapping, "conditions": [condition]})
            properties["mappings"] = existing
        new_forms[form] = {"required_slots": list(by_slot)}
        if ignored:
            new_forms[form]["ignored_intents"] = ignored
    return new_forms


def _migrate_slots(
    slots: dict[str, Any], entities: set[str], file: Path | None, warnings: list[str]
) -> dict[str, Any]:
    """`auto_fill` (true by default in Rasa 2) of a slot named as an entity becomes a
    `from_entity` mapping; a slot still without mappings gets a `custom` one, as Rasa's.
    Rasa 2's `unfeaturized` type, which Rasa 3 no longer has, becomes `any` that does not
    influence the conversation (what it was): Rasa's migration kept it, and the domain
    did not train."""
    new_slots: dict[str, Any] = {}
    for slot, properties in slots.items():
        slot = str(slot)
        if not isinstance(properties, dict):
            raise InvalidProjectFile(
                f"slot '{slot}' must be a mapping of its properties",
                str(file),
                line_of(slots, slot),
            )
        properties = dict(properties)
        if str(properties.get("type")).lower() == "unfeaturized":
            properties["type"] = "any"
            properties["influence_conversation"] = False
        mappings = list(properties.get("mappings") or [])
        if slot in entities and properties.get("auto_fill", True) is True:
            from_entity = {"type": "from_entity", "entity": slot}
            if from_entity not in mappings:
                mappings.append(from_entity)
        properties.pop("auto_fill", None)
        if not mappings:
            mappings = [{"type": "custom"}]
            warnings.append(
                f"slot '{slot}' got a custom mapping (no form or entity fills it): check that "
                "an action sets it"
            )
        properties["mappings"] = mappings
        new_slots[slot] = properties
    return new_slots
