"""The training format: `botserver train` retrains an archive made from the same files in
another format (saying why), skips one of today's, and every format still loads."""

from __future__ import annotations

import errno
import itertools
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from server.dialogue.policies.ensemble import POLICY_CLASSES
from server.errors import ModelError, NewerModel
from server.models import loading
from server.models.archive import read_archive, write_archive
from server.models.metadata import TRAINING_FORMAT
from server.training.evaluate import load_model_file
from server.training.project import load_project
from server.training.train import (
    DRY_RUN_NEEDS_TRAINING,
    _fingerprint,
    dry_run,
    train,
    train_core,
    train_nlu,
)
from tests.dialogue.conversation_fixtures import make_agent, train_archive, write_files

# The story's role `to` is one the domain does not list (only the archive's copy, below).
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

# The metadata the trainer of each older format wrote beyond the common keys.
FORMAT_MARKERS: dict[int, dict[str, Any]] = {
    0: {},
    1: {"entity_roles": "listed"},
    2: {"training_format": 2, "entity_roles": "listed"},
    3: {"training_format": 3, "entity_roles": "listed"},
    4: {"training_format": 4, "entity_roles": "listed"},
    5: {"training_format": 5, "entity_roles": "listed"},
    6: {"training_format": 6, "entity_roles": "listed"},
}


def as_made_in(
    archive: Path, folder: Path, work: Path, made_in: int, domain: dict[str, Any] | None = None
) -> Path:
    """`archive` repacked as the trainer of format `made_in` wrote it from `folder`: its
    marker, the fingerprint it computed, and (when given) the domain it stored."""
    content = work / "content"
    metadata = read_archive(archive, content)
    if domain is not None:
        (content / "components" / "domain.json").write_text(json.dumps(domain), "utf-8")
    kept = {
        k: v
        for k, v in metadata.items()
        if k not in ("training_format", "entity_roles")
        and k not in ("format_version", "botserver_version", "model_id", "trained_at")
    }
    kept["fingerprint"] = _fingerprint(load_project(*inputs(folder)), training_format=made_in)
    # Written beside `archive` by the writer itself, which never takes a name in use: moved
    # there by rename, it replaced `archive` when both drew the same second and words (1 in
    # 1,088), and the test then deleted it (failed once in CI: "trained ... in format 0").
    return write_archive(
        content / "components", {**kept, **FORMAT_MARKERS[made_in]}, archive.parent
    )


def project(folder: Path, domain: str = DOMAIN) -> Path:
    files = {"domain.yml": domain, "config.yml": CONFIG, "data/stories.yml": STORIES}
    return write_files(files, folder)


def inputs(folder: Path) -> tuple[Path, Path, list[Path]]:
    """The project's config, domain and data, as `botserver train` reads them."""
    return folder / "config.yml", folder / "domain.yml", [folder / "data"]


def train_again(folder: Path, out: Path) -> Any:
    return train(*inputs(folder), out)


@pytest.mark.parametrize("made_in", [0, 1, 2, 3, 4, 5, 6])
def test_train_retrains_an_archive_of_an_older_training_format(
    tmp_path: Path, made_in: int, caplog: pytest.LogCaptureFixture
) -> None:
    folder = project(tmp_path / "bot")
    out = tmp_path / "models"
    archive = train_archive(folder, out)
    old = as_made_in(archive, folder, tmp_path / "repack", made_in)
    archive.unlink()

    with caplog.at_level(logging.INFO, logger="server.training.train"):
        assert dry_run(load_project(*inputs(folder)), out)[0] == DRY_RUN_NEEDS_TRAINING
        result = train_again(folder, out)

    # Before (format 1): "Nothing changed since the last training", the old archive reused.
    assert not result.skipped
    metadata = load_model_file(Path(result.path)).metadata
    assert metadata["training_format"] == TRAINING_FORMAT
    said = f"{old} was trained from these files in training format {made_in}"
    assert caplog.text.count(said) == 2  # by the dry run, and by the training


def test_train_skips_an_archive_of_this_training_format(tmp_path: Path) -> None:
    folder = project(tmp_path / "bot")
    out = tmp_path / "models"
    archive = train_archive(folder, out)

    result = train_again(folder, out)

    assert result.skipped
    assert Path(result.path) == archive


@pytest.mark.parametrize(("made_in", "followed"), [(0, True), (1, False)])
async def test_an_older_archive_reads_entity_roles_as_it_was_trained(
    tmp_path: Path, made_in: int, followed: bool
) -> None:
    """Format 0 learnt every role and keeps reading them so; from format 1 on, a role counts
    only where the domain lists it. The story's memory needs the role `to`, which the
    stored domain does not list."""
    listed = DOMAIN.replace("entities: [city]", "entities: [city: {roles: [to]}]")
    folder = project(tmp_path / "bot", listed)
    archive = train_archive(folder, tmp_path / "models")
    domain = json.loads(json.dumps(load_model_file(archive).domain.as_dict(full=True)))
    domain["entities"] = ["city"]
    old = as_made_in(archive, folder, tmp_path / "repack", made_in, domain)

    agent = make_agent(load_model_file(old))
    _, messages = await agent.trigger_intent(
        "u", "travel", [{"entity": "city", "value": "Paris", "role": "to"}]
    )

    assert ("travelling" in [m.get("text") for m in messages]) is followed


def test_an_older_botserver_reads_a_new_archive_as_trained(tmp_path: Path) -> None:
    """A rollback: the botserver before format 2 decided by `entity_roles` alone whether a
    role counts only where the domain lists it (`!= "listed"`: every role counts). Before,
    a new archive lacked the marker, so the older server read it as format 0 and followed
    stories by roles the domain does not list."""
    folder = project(tmp_path / "bot")
    # `train nlu` needs an example (Rasa skips training without one).
    nlu = "nlu:\n- intent: travel\n  examples: |\n    - to [Berlin](city)\n"
    (folder / "data" / "nlu.yml").write_text(nlu)
    archives = [
        train_archive(folder, tmp_path / "models"),
        Path(train_core(*inputs(folder), tmp_path / "core", force=True).path),
        Path(train_nlu(folder / "config.yml", [folder / "data"], tmp_path / "nlu").path),
    ]
    for archive in archives:
        metadata = load_model_file(archive).metadata
        assert metadata.get("entity_roles") == "listed", archive.name


def with_metadata(archive: Path, work: Path, **changes: Any) -> Path:
    """`archive` repacked with these metadata values (None: the key removed)."""
    content = work / "content"
    metadata = read_archive(archive, content)
    for key in ("format_version", "botserver_version", "model_id", "trained_at"):
        del metadata[key]
    for key, value in changes.items():
        metadata.pop(key, None)
        if value is not None:
            metadata[key] = value
    return write_archive(content / "components", metadata, work / "out")


@pytest.mark.parametrize("value", ["2", 2.0, -1, True, [2], {"format": 2}])
@pytest.mark.parametrize(("marker", "followed"), [("listed", False), (None, True)])
async def test_an_odd_training_format_reads_the_archive_by_its_marker(
    tmp_path: Path, value: Any, marker: str | None, followed: bool
) -> None:
    """A `training_format` that is no format number (hand-edited, another tool's) neither
    crashes the loader nor overrides the archive's own marker: before, every such value
    read the archive as format 0 (every role counts), even one saying `2.0`."""
    listed = DOMAIN.replace("entities: [city]", "entities: [city: {roles: [to]}]")
    folder = project(tmp_path / "bot", listed)
    archive = train_archive(folder, tmp_path / "models")
    domain = json.loads(json.dumps(load_model_file(archive).domain.as_dict(full=True)))
    domain["entities"] = ["city"]
    repacked = as_made_in(archive, folder, tmp_path / "repack", 0, domain)
    odd = with_metadata(repacked, tmp_path / "odd", training_format=value, entity_roles=marker)

    agent = make_agent(load_model_file(odd))
    _, messages = await agent.trigger_intent(
        "u", "travel", [{"entity": "city", "value": "Paris", "role": "to"}]
    )

    assert ("travelling" in [m.get("text") for m in messages]) is followed


def test_an_archive_of_a_newer_training_format_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rollback: a newer botserver's archive (a format this one does not know, maybe with
    a component or a reading it lacks) is read as today's format, and the log says so.
    Before, it loaded silently."""
    archive = train_archive(project(tmp_path / "bot"), tmp_path / "models")
    newer = with_metadata(archive, tmp_path / "newer", training_format=TRAINING_FORMAT + 1)

    with caplog.at_level(logging.WARNING, logger="server.models.loading"):
        load_model_file(newer)
        load_model_file(archive)

    assert [r.getMessage() for r in caplog.records if r.name == "server.models.loading"] == [
        f"The model was trained in training format {TRAINING_FORMAT + 1}, newer than this "
        f"botserver's {TRAINING_FORMAT}; it is read as format {TRAINING_FORMAT} and may answer "
        "otherwise than where it was trained. Upgrade botserver, or retrain the model with "
        "this version (`botserver train`)."
    ]


def _repacked(archive: Path, work: Path, policy_edit: Any, **metadata: Any) -> Path:
    """`archive` with its RulePolicy's ensemble entry or stored options changed by
    `policy_edit(entry, options)`, and these metadata values."""
    content = work / "content"
    read_archive(archive, content)
    policies = content / "components" / "policies"
    ensemble = json.loads((policies / "ensemble.json").read_text())
    (entry,) = [e for e in ensemble["policies"] if e["class"] == "RulePolicy"]
    stored_path = policies / entry["directory"] / "policy.json"
    stored = json.loads(stored_path.read_text())
    policy_edit(entry, stored["options"])
    (policies / "ensemble.json").write_text(json.dumps(ensemble))
    stored_path.write_text(json.dumps(stored))
    repacked = write_archive(content / "components", read_archive(archive, work / "m"), work)
    return with_metadata(repacked, work / "out", **metadata)


def _unknown_policy(entry: dict[str, Any], options: dict[str, Any]) -> None:
    entry["class"] = "FuturePolicy"


def _refused_setting(entry: dict[str, Any], options: dict[str, Any]) -> None:
    options["core_fallback_threshold"] = 2


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (_unknown_policy, "the model names an unknown policy"),
        (_refused_setting, "RulePolicy: 'core_fallback_threshold' must be between 0 and 1"),
    ],
)
def test_what_a_newer_format_holds_and_this_version_cannot_read_says_the_archive_is_newer(
    tmp_path: Path, edit: Any, why: str
) -> None:
    """A rollback: a newer botserver's archive names a policy this version lacks, or a
    setting its checks refuse (a newer one may accept it). Before: a ModelError as if the
    archive were broken (a 500), or an OutdatedModel saying "an older botserver accepted
    it"; now a NewerModel (a 400) saying the archive is newer, and what this version lacks."""
    archive = train_archive(project(tmp_path / "bot"), tmp_path / "models")
    newer = _repacked(archive, tmp_path / "newer", edit, training_format=TRAINING_FORMAT + 1)
    today = _repacked(archive, tmp_path / "today", edit)

    with pytest.raises(NewerModel) as refused:
        load_model_file(newer)
    with pytest.raises(ModelError) as broken:
        load_model_file(today)

    message = str(refused.value)
    assert message.startswith(
        f"the model was trained in training format {TRAINING_FORMAT + 1} by a newer "
        f"botserver; this botserver reads format {TRAINING_FORMAT}: {why}"
    )
    assert message.endswith(
        "Upgrade botserver, or retrain the model with this version (`botserver train`)."
    )
    assert not isinstance(broken.value, NewerModel)  # today's format: broken, or outdated


@pytest.mark.parametrize("value", [float("inf"), "99", -5, 4.0, True])
def test_a_corrupt_archive_claiming_an_odd_training_format_is_not_called_newer(
    tmp_path: Path, value: Any
) -> None:
    """`"training_format": 1e309` (read as infinity), a string, a negative, a float: no format
    number, so a broken archive claiming one is broken (a ModelError naming what), not a
    newer botserver's to upgrade for."""
    archive = train_archive(project(tmp_path / "bot"), tmp_path / "models")
    odd = _repacked(archive, tmp_path / "odd", _unknown_policy, training_format=value)

    with pytest.raises(ModelError) as broken:
        load_model_file(odd)

    assert not isinstance(broken.value, NewerModel)
    assert "the model names an unknown policy" in str(broken.value)


@pytest.mark.parametrize(
    ("failure", "newer"),
    [
        (MemoryError(), False),
        (PermissionError(13, "Permission denied"), False),
        (OSError(24, "Too many open files"), False),
        (OSError(errno.EIO, "Input/output error"), False),
        (OSError(errno.ENFILE, "Too many open files in system"), False),
        (FileNotFoundError(2, "No such file or directory"), True),
        (FileNotFoundError("no errno"), True),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory"), True),
        (IsADirectoryError(errno.EISDIR, "Is a directory"), True),
        # A name the archive gives that no file system holds: the archive's, not the server's.
        (OSError(errno.ENAMETOOLONG, "File name too long"), True),
        (OSError(errno.ELOOP, "Too many levels of symbolic links"), True),
    ],
)
def test_a_newer_archive_that_fails_for_the_servers_own_trouble_is_not_called_newer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException, newer: bool
) -> None:
    """The server's own trouble while loading a newer botserver's archive (no memory left, a
    file it cannot open) is not the archive's: before, a 400 NewerModel told the client to
    upgrade botserver or retrain, and a model server's archive refused so was not loaded
    again. A state file missing is what a newer format may lay out otherwise."""
    archive = train_archive(project(tmp_path / "bot"), tmp_path / "models")
    newer_archive = with_metadata(archive, tmp_path / "new", training_format=TRAINING_FORMAT + 1)

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise failure

    monkeypatch.setattr(POLICY_CLASSES["RulePolicy"], "load", fail)
    with pytest.raises(ModelError) as failed:
        load_model_file(newer_archive)

    assert isinstance(failed.value, NewerModel) is newer
    assert type(failure).__name__ in str(failed.value)


def _long_directory(entry: dict[str, Any], options: dict[str, Any]) -> None:
    entry["directory"] = "p" * 300  # longer than any file name (255 bytes): ENAMETOOLONG


def test_a_newer_archive_naming_a_file_no_file_system_holds_is_newer_not_server_trouble(
    tmp_path: Path,
) -> None:
    """A newer botserver's archive whose ensemble.json names a policy directory of 300
    bytes: opening it fails with ENAMETOOLONG, the archive's doing. Before, an OSError
    counted as the server's own trouble: a 500 LoadingError, and a model server's archive
    downloaded and loaded again at every pull; now the NewerModel (a 400) such an archive
    is, refused for its bytes."""
    archive = train_archive(project(tmp_path / "bot"), tmp_path / "models")
    newer = _repacked(
        archive, tmp_path / "newer", _long_directory, training_format=TRAINING_FORMAT + 1
    )

    with pytest.raises(NewerModel) as refused:
        load_model_file(newer)

    assert "File name too long" in str(refused.value)


def test_a_cause_chain_that_loops_is_walked_once() -> None:
    """An exception that is its own cause, two steps down (set by hand, or by re-raising a
    kept exception `from` its own consequence): walking the chain ends. Before, the walk
    never ended, and the load hung its worker thread for ever."""
    top, below = ModelError("x"), ValueError("y")
    top.__cause__, below.__cause__ = below, top

    assert list(itertools.islice(loading._causes(top), 5)) == [top, below]
    assert loading._refused_setting(top) is None


def test_a_dry_run_says_the_archive_needs_training_and_trains_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: "Training again: ..." from `train --dry-run`, which trains nothing.
    folder = project(tmp_path / "bot")
    out = tmp_path / "models"
    archive = train_archive(folder, out)
    old = as_made_in(archive, folder, tmp_path / "repack", 1)
    archive.unlink()
    caplog.clear()

    with caplog.at_level(logging.INFO, logger="server.training.train"):
        dry_run(load_project(*inputs(folder)), out)

    assert [r.getMessage() for r in caplog.records if r.name == "server.training.train"] == [
        f"Needs training again: {old} was trained from these files in training format 1; "
        f"this botserver trains in format {TRAINING_FORMAT}."
    ]
    assert [p.name for p in out.iterdir()] == [old.name]
