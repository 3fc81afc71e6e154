"""Signed archives: a server with a verify key loads only untampered, signed models."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from server.errors import SignatureError
from server.models import ModelHolder, read_archive
from server.models.signing import generate_keypair


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_keypair()


def body_of(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes | None:
    """A regular file's bytes; None for directories and other non-files."""
    if not member.isfile():
        return None
    file = tar.extractfile(member)
    assert file is not None  # tarfile gives every regular file a body
    return file.read()


def rewrite(archive: Path, out: Path, change) -> Path:
    """Copy an archive member by member, letting `change(name, data)` alter file bodies."""
    buffer = io.BytesIO()
    with tarfile.open(archive) as source, tarfile.open(fileobj=buffer, mode="w") as target:
        for member in source.getmembers():
            data = body_of(source, member)
            if data is not None:
                data = change(member.name, data)
                if data is None:
                    continue
                member.size = len(data)
            target.addfile(member, io.BytesIO(data) if data is not None else None)
    out.write_bytes(gzip.compress(buffer.getvalue()))
    return out


def test_good_signature_loads(tmp_path: Path, archive_factory, keys):
    private, public = keys
    archive = archive_factory(signing_key=private)
    metadata = read_archive(archive, tmp_path / "dest", verify_key=public)
    assert metadata["format_version"] == 1


def test_keys_can_be_files(tmp_path: Path, archive_factory, keys):
    private, public = keys
    (tmp_path / "k").write_bytes(private)
    (tmp_path / "k.pub").write_bytes(public)
    archive = archive_factory(signing_key=tmp_path / "k")
    read_archive(archive, tmp_path / "dest", verify_key=tmp_path / "k.pub")


def test_signed_archive_loads_without_a_verify_key(tmp_path: Path, archive_factory, keys):
    read_archive(archive_factory(signing_key=keys[0]), tmp_path / "dest")


def test_unsigned_archive_is_refused_with_a_verify_key(tmp_path: Path, archive_factory, keys):
    dest = tmp_path / "dest"
    with pytest.raises(SignatureError, match="not signed"):
        read_archive(archive_factory(), dest, verify_key=keys[1])
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize(
    "target",
    ["components/nlu/classifier/state.json", "metadata.json", "components/nlu/vocabulary.txt"],
)
def test_tampered_member_is_refused(tmp_path: Path, archive_factory, keys, target: str):
    archive = archive_factory(signing_key=keys[0])
    tampered = rewrite(
        archive,
        tmp_path / "tampered.tar.gz",
        lambda name, data: data.replace(b"e", b"E") if name == target else data,
    )
    dest = tmp_path / "dest"
    with pytest.raises(SignatureError, match="tampered"):
        read_archive(tampered, dest, verify_key=keys[1])
    assert list(dest.iterdir()) == []


def test_removed_member_is_refused(tmp_path: Path, archive_factory, keys):
    archive = archive_factory(signing_key=keys[0])
    gone = "components/policies/rules.json"
    stripped = rewrite(
        archive, tmp_path / "stripped.tar.gz", lambda name, data: None if name == gone else data
    )
    with pytest.raises(SignatureError, match="missing"):
        read_archive(stripped, tmp_path / "dest", verify_key=keys[1])


def test_added_member_is_refused(tmp_path: Path, archive_factory, keys):
    archive = archive_factory(signing_key=keys[0])
    with tarfile.open(archive) as source:
        members = [(m, body_of(source, m)) for m in source]
    extra = tarfile.TarInfo("components/extra.json")
    extra.size = 2
    members.append((extra, b"{}"))
    out = tmp_path / "added.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    with pytest.raises(SignatureError, match="extra.json"):
        read_archive(out, tmp_path / "dest", verify_key=keys[1])


def test_another_key_is_refused(tmp_path: Path, archive_factory, keys):
    _, other_public = generate_keypair()
    with pytest.raises(SignatureError, match="does not verify"):
        read_archive(
            archive_factory(signing_key=keys[0]), tmp_path / "dest", verify_key=other_public
        )


async def test_holder_with_verify_key_refuses_unsigned_uploads(archive_factory, loader, keys):
    holder = ModelHolder(loader, verify_key=keys[1])
    await holder.load_bytes(archive_factory("signed", signing_key=keys[0]).read_bytes())

    with pytest.raises(SignatureError):
        await holder.load_bytes(archive_factory("unsigned").read_bytes())

    assert holder.current is not None and holder.current.answer() == "signed"
    assert holder.last_error is not None and "not signed" in holder.last_error


@pytest.mark.parametrize(
    "document",
    [b"[" * 5000 + b"]" * 5000, b'{"algorithm": "Ed25519", "files": [], "signature": 1}', b"[]"],
    ids=["nested-too-deeply", "wrong-types", "a-list"],
)
def test_a_malformed_signature_document_is_refused(
    tmp_path: Path, archive_factory, keys, document: bytes
):
    archive = archive_factory(signing_key=keys[0])
    forged = rewrite(
        archive,
        tmp_path / "forged.tar.gz",
        lambda name, data: document if name == "signature.json" else data,
    )
    with pytest.raises(SignatureError, match="malformed"):
        read_archive(forged, tmp_path / "dest", verify_key=keys[1])
    assert list((tmp_path / "dest").iterdir()) == []
