"""A model trained before a role or group needed the domain's listing to count (every role
counted then) keeps reading them so, and `botserver train` retrains it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from server.models.archive import read_archive, write_archive
from server.training.evaluate import load_model_file
from server.training.train import train
from tests.dialogue.conversation_fixtures import make_agent, train_archive, write_files

# The story's role `to` is one the domain does not list (only the archive's copy below).
DOMAIN = """
version: "3.1"
intents: [travel]
entities: [city]
responses:
  utter_travel: [{text: travelling}]
"""
STORIES = """
version: "3.1"
stories:
- story: travel to a city
  steps:
  - intent: travel
    entities:
    - city: Berlin
      role: to
  - action: utter_travel
"""
CONFIG = "policies:\n- name: MemoizationPolicy\n- name: RulePolicy\n"
# Written by the trainers of this botserver, absent from the archives trained before.
NEW_KEYS = ("entity_roles",)


def project(folder: Path, domain: str = DOMAIN) -> Path:
    files = {"domain.yml": domain, "config.yml": CONFIG, "data/stories.yml": STORIES}
    return write_files(files, folder)


def as_trained_before(archive: Path, work: Path, domain: dict[str, Any] | None = None) -> Path:
    """`archive` repacked as the trainer before the change wrote it: no new metadata keys,
    and (when given) the domain it stored."""
    content = work / "content"
    metadata = read_archive(archive, content)
    if domain is not None:
        (content / "components" / "domain.json").write_text(json.dumps(domain), "utf-8")
    kept = {
        k: v
        for k, v in metadata.items()
        if k not in NEW_KEYS
        and k not in ("format_version", "botserver_version", "model_id", "trained_at")
    }
    old = write_archive(content / "components", kept, work / "old")
    # The same fingerprint, and the newest archive of the folder, as it was.
    return old.rename(archive.parent / old.name)


async def test_an_archive_trained_before_keeps_reading_unlisted_roles(tmp_path: Path) -> None:
    # What the trainer before made of these stories: its memory holds `city#to` (as the
    # domain listing the role gives today), its domain.json lists no role.
    listed = DOMAIN.replace("entities: [city]", "entities: [city: {roles: [to]}]")
    archive = train_archive(project(tmp_path / "bot", listed), tmp_path / "models")
    domain = json.loads(json.dumps(load_model_file(archive).domain.as_dict(full=True)))
    domain["entities"] = ["city"]
    old = as_trained_before(archive, tmp_path / "repack", domain)
    agent = make_agent(load_model_file(old))
    _, messages = await agent.trigger_intent(
        "u", "travel", [{"entity": "city", "value": "Paris", "role": "to"}]
    )
    # Before: nothing (the role no longer counted, the story's memory needing it).
    assert [m.get("text") for m in messages] == ["travelling"]


def test_train_retrains_an_archive_trained_before(tmp_path: Path) -> None:
    folder = project(tmp_path / "bot")
    out = tmp_path / "models"
    archive = train_archive(folder, out)
    as_trained_before(archive, tmp_path / "repack")
    archive.unlink()
    # Before: "Nothing changed since the last training" (the same files, the same
    # fingerprint), the model reading roles as it did.
    result = train(folder / "config.yml", folder / "domain.yml", [folder / "data"], out)
    assert not result.skipped
    assert load_model_file(Path(result.path)).metadata.get("entity_roles") == "listed"
