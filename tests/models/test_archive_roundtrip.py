"""Writing an archive and reading it back; metadata; names; local resolution; fingerprints."""

from __future__ import annotations

import json
import os
import re
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

import server
from server.errors import ModelError, ModelNotFound
from server.models import (
    FORMAT_VERSION,
    find_archive_with_fingerprint,
    fingerprint_inputs,
    read_archive,
    read_metadata,
    resolve_local_model,
    write_archive,
)


def test_round_trip_restores_content_and_adds_metadata(tmp_path: Path, archive_factory):
    archive = archive_factory("hi there", fingerprint="abc")
    dest = tmp_path / "dest"

    metadata = read_archive(archive, dest)

    assert metadata["format_version"] == FORMAT_VERSION
    assert metadata["botserver_version"] == server.__version__
    assert re.fullmatch(r"[0-9a-f]{32}", metadata["model_id"])
    assert metadata["trained_at"].endswith("+00:00")
    assert metadata["domain"] == {"intents": ["greet"]}
    assert metadata["fingerprint"] == "abc"
    state = json.loads((dest / "components/nlu/classifier/state.json").read_text())
    assert state == {"greeting": "hi there"}
    weights = np.load(dest / "components/nlu/classifier/weights.npy", allow_pickle=False)
    assert weights.tolist() == list(range(12))
    assert read_metadata(archive) == metadata


def test_default_name_is_timestamp_and_words(tmp_path: Path):
    content = tmp_path / "content"
    content.mkdir()
    (content / "a.json").write_text("{}")

    archive = write_archive(content, {}, tmp_path / "models")

    assert archive.parent == tmp_path / "models"
    assert re.fullmatch(r"\d{8}-\d{6}-[a-z]+-[a-z]+\.tar\.gz", archive.name)
    assert not [p for p in archive.parent.iterdir() if p.name.startswith(".")]


def test_the_gzip_header_names_no_temporary_file(tmp_path: Path):
    """`gunzip -N` and `file` read a name from the gzip header: it must not be the
    `.<uuid>.partial` the archive was written under before it got its name."""
    content = tmp_path / "content"
    content.mkdir()
    (content / "a.json").write_text("{}")

    archive = write_archive(content, {}, tmp_path / "models", fixed_name="mine")

    header = archive.read_bytes()[:10]
    assert header[:2] == b"\x1f\x8b"
    assert not header[3] & 0x08, "the gzip header carries a file name (FNAME)"
    assert b"partial" not in archive.read_bytes()[:200]


def test_two_archives_never_take_the_same_generated_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Before, two trainings (two POST /model/train at once) finishing in the same second
    with the same random words (1 in 1,088) wrote one file: the later archive replaced the
    earlier, and both clients were given the one archive."""
    import server.models.archive as archive_module

    words = iter(["lucky-otter", "lucky-otter", "lucky-otter", "calm-fox"])
    monkeypatch.setattr(archive_module, "random_name", lambda: next(words))
    first_content, second_content = tmp_path / "one", tmp_path / "two"
    for directory, text in ((first_content, "one"), (second_content, "two")):
        directory.mkdir()
        (directory / "a.json").write_text(json.dumps(text))
    when = time.strftime("%Y%m%d-%H%M%S")
    monkeypatch.setattr(archive_module.time, "strftime", lambda _format: when)

    first = write_archive(first_content, {"fingerprint": "one"}, tmp_path / "models")
    second = write_archive(second_content, {"fingerprint": "two"}, tmp_path / "models")

    assert first.name == f"{when}-lucky-otter.tar.gz"
    assert second.name == f"{when}-calm-fox.tar.gz"
    assert read_metadata(first)["fingerprint"] == "one"
    assert read_metadata(second)["fingerprint"] == "two"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == sorted(
        [first.name, second.name]
    )


def test_fixed_name_gets_the_suffix_once(tmp_path: Path):
    content = tmp_path / "content"
    content.mkdir()
    assert write_archive(content, {}, tmp_path, fixed_name="mybot").name == "mybot.tar.gz"
    assert write_archive(content, {}, tmp_path, fixed_name="x.tar.gz").name == "x.tar.gz"
    with pytest.raises(ModelError):
        write_archive(content, {}, tmp_path, fixed_name="../escape")


def test_writer_refuses_content_a_reader_would_refuse(tmp_path: Path):
    content = tmp_path / "content"
    content.mkdir()
    (content / "model.pkl").write_bytes(b"\x80\x04.")
    with pytest.raises(ModelError, match="pickle"):
        write_archive(content, {}, tmp_path / "models")


def test_writer_refuses_metadata_naming_code(tmp_path: Path):
    content = tmp_path / "content"
    content.mkdir()
    with pytest.raises(ModelError, match="names code"):
        write_archive(content, {"loader": "os.system"}, tmp_path / "models")


def test_archive_members_are_plain_files_and_dirs(archive_factory):
    with tarfile.open(archive_factory()) as tar:
        members = tar.getmembers()
    assert members[0].name == "metadata.json"
    assert all(m.isfile() or m.isdir() for m in members)
    assert {m.name.split("/")[0] for m in members} == {"metadata.json", "components"}


def test_resolve_local_model_picks_newest_by_mtime(tmp_path: Path):
    older, newer = tmp_path / "b-older.tar.gz", tmp_path / "a-newer.tar.gz"
    older.write_bytes(b"x")
    newer.write_bytes(b"x")
    now = time.time()
    os.utime(older, (now - 100, now - 100))
    (tmp_path / "notes.txt").write_text("not a model")

    assert resolve_local_model(tmp_path) == newer
    assert resolve_local_model(older) == older


def test_resolve_local_model_explains_what_is_missing(tmp_path: Path):
    with pytest.raises(ModelNotFound, match="botserver train"):
        resolve_local_model(tmp_path)
    with pytest.raises(ModelNotFound, match="No model found"):
        resolve_local_model(tmp_path / "nowhere")
    (tmp_path / "model.zip").write_bytes(b"x")
    with pytest.raises(ModelNotFound, match=r"\.tar\.gz"):
        resolve_local_model(tmp_path / "model.zip")


def test_fingerprint_depends_on_content_names_and_config_only(tmp_path: Path):
    (tmp_path / "data").mkdir()
    nlu, domain = tmp_path / "data" / "nlu.yml", tmp_path / "domain.yml"
    nlu.write_text("nlu: []")
    domain.write_text("intents: []")
    config = {"pipeline": [{"name": "A"}], "language": "en"}

    first = fingerprint_inputs([nlu, domain], config)
    assert fingerprint_inputs([domain, nlu], dict(reversed(config.items()))) == first
    assert fingerprint_inputs([nlu, domain], {**config, "language": "de"}) != first
    nlu.write_text("nlu: [x]")
    assert fingerprint_inputs([nlu, domain], config) != first


def test_find_archive_with_fingerprint(tmp_path: Path, archive_factory):
    assert find_archive_with_fingerprint(tmp_path / "models", "fp-1") is None
    archive = archive_factory("one", fingerprint="fp-1")
    archive_factory("two", fingerprint="fp-2")
    (tmp_path / "models" / "broken.tar.gz").write_bytes(b"not gzip")

    assert find_archive_with_fingerprint(tmp_path / "models", "fp-1") == archive
    assert find_archive_with_fingerprint(tmp_path / "models", "fp-3") is None


def test_training_never_writes_an_archive_the_loader_would_refuse(tmp_path: Path) -> None:
    # Before: a policy's JSON over the loader's limit (256 MiB; a memoization lookup of
    # about 25,000 stories of 10 turns) was written, and then every load of the model was
    # refused. Now the training fails naming the member and the limit, and writes nothing.
    from server.errors import TrainingError
    from server.models.safety import ArchiveLimits

    limits = ArchiveLimits(max_text_member_bytes=1024)
    content = tmp_path / "content"
    (content / "policies").mkdir(parents=True)
    (content / "policies" / "policy.json").write_text(json.dumps({"lookup": "x" * 2000}))
    np.save(content / "weights.npy", np.zeros(500, np.float32))  # an array may hold more
    with pytest.raises(TrainingError, match=r"components/policies/policy\.json.*2,01\d bytes"):
        write_archive(content, {}, tmp_path / "models", limits=limits)
    assert not list((tmp_path / "models").glob("*"))


@pytest.mark.parametrize(
    ("limits", "message"),
    [({"max_total_bytes": 3000}, "bytes in all"), ({"max_members": 2}, "files and folders")],
)
def test_training_never_writes_a_model_too_big_in_all_to_load(
    tmp_path: Path, limits: dict, message: str
) -> None:
    from server.errors import TrainingError
    from server.models.safety import ArchiveLimits

    content = tmp_path / "content"
    (content / "policies").mkdir(parents=True)
    for index in range(2):
        (content / "policies" / f"p{index}.json").write_text(json.dumps("x" * 2000))
    with pytest.raises(TrainingError, match=message):
        write_archive(content, {}, tmp_path / "models", limits=ArchiveLimits(**limits))
    assert not list((tmp_path / "models").glob("*"))


def test_training_never_writes_a_metadata_file_the_loader_would_refuse(tmp_path: Path) -> None:
    """metadata.json holds the domain and the config: before, one over the loader's limit
    (64 MiB: a domain of that many bytes of responses) was written, and every load of the
    model was then refused. Now the training fails naming the file and the limit."""
    from server.errors import TrainingError
    from server.models.safety import ArchiveLimits

    content = tmp_path / "content"
    content.mkdir()
    metadata = {"domain": {"responses": {"utter_long": [{"text": "x" * 2000}]}}}
    limits = ArchiveLimits(max_metadata_bytes=1024)
    with pytest.raises(TrainingError, match=r"metadata\.json is 2,\d{3} bytes.*1,024"):
        write_archive(content, metadata, tmp_path / "models", limits=limits)
    assert not list((tmp_path / "models").glob("*"))
    write_archive(content, metadata, tmp_path / "models")  # (under the default limit)
