"""A corpus of hostile and foreign archives: every one is refused, nothing lands outside.

Each case is built here with tarfile, read into a fresh destination directory, and the test
checks the error type, its message, that the destination is left empty and that nothing
else on disk changed.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from server.errors import ModelError, UnsafeArchive, UnsupportedModel
from server.models import ArchiveLimits, read_archive, read_metadata

Member = tuple[tarfile.TarInfo, bytes | None]
GOOD_METADATA = {"format_version": 1, "botserver_version": "0.1.0", "model_id": "m1"}
OUTSIDE = Path("/tmp") / f"botserver-evil-{uuid.uuid4().hex}.json"


def regular(name: str, data: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def metadata(**extra) -> Member:
    return regular("metadata.json", json.dumps({**GOOD_METADATA, **extra}).encode())


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def npy_claiming(shape: tuple[int, ...], data: bytes) -> bytes:
    """A .npy file whose header declares `shape` of uint8, followed by `data`."""
    buffer = io.BytesIO()
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def tar_gz(path: Path, members: list[Member]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def huge_header_archive(
    path: Path, name: str = "components/huge.npy", size: int = 10 * 1024**3
) -> Path:
    """A member whose header claims 10 GiB, followed by only a little data."""
    info = tarfile.TarInfo(name)
    info.size = size
    header = info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
    meta_info, meta_data = metadata()
    assert meta_data is not None
    meta_header = meta_info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
    padded = meta_data + b"\0" * (-len(meta_data) % 512)
    path.write_bytes(gzip.compress(meta_header + padded + header + b"\0" * 4096))
    return path


def pax_bomb_archive(path: Path) -> Path:
    """A pax header record that expands to 8 MiB: tarfile would read it into memory."""
    info = tarfile.TarInfo("components/a.json")
    info.size = 2
    info.pax_headers = {"comment": "A" * (8 * 1024 * 1024)}
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b"{}"))
    return path


def raw_header(name: str, kind: bytes, size: int) -> bytes:
    """A bare ustar header block, for header types tarfile would not write by itself."""
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def metadata_blocks() -> bytes:
    info, data = metadata()
    assert data is not None
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape") + padded(data)


def with_extended_header(path: Path, kind: bytes, data: bytes) -> Path:
    """One extended header holding `data`, then a good metadata.json, written in a stream."""
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(raw_header("././@PaxHeader", kind, len(data)))
        out.write(padded(data))
        out.write(metadata_blocks() + b"\0" * 1024)
    return path


def pax_header_of_zeros(path: Path) -> Path:
    """A 64 MiB pax header (64 KB gzipped): tarfile read it whole, three times over in RAM."""
    return with_extended_header(path, tarfile.XHDTYPE, b"\0" * (64 * 1024 * 1024))


def pax_header_of_digits(path: Path) -> Path:
    """64 KiB of digits: tarfile's pax regex (CVE-2024-6232) spends seconds on it."""
    return with_extended_header(path, tarfile.XHDTYPE, b"1" * (64 * 1024))


def long_name_header(path: Path) -> Path:
    """A GNU long-name header of 16 MiB, read whole into memory as a name."""
    return with_extended_header(path, tarfile.GNUTYPE_LONGNAME, b"a" * (16 * 1024 * 1024))


def extended_header_chain(path: Path) -> Path:
    """Thousands of long-name headers in a row: tarfile recurses once per header."""
    long_name = raw_header("././@LongLink", tarfile.GNUTYPE_LONGNAME, 11) + padded(b"metadata.j\0")
    path.write_bytes(gzip.compress(long_name * 3000 + metadata_blocks() + b"\0" * 1024))
    return path


def many_extended_headers(path: Path) -> Path:
    """Members whose pax headers are each within the limit, but not all together."""
    members = [metadata()]
    for index in range(300):
        info, data = regular(f"components/f{index}.json", b"{}")
        info.pax_headers = {"comment": "c" * 3900}
        members.append((info, data))
    return tar_gz(path, members)


def gnu_sparse_map(path: Path) -> Path:
    """A pax-described GNU sparse 1.0 file whose map claims 10**12 entries: tarfile reads
    the stream line by line into a list until it ends."""
    info = tarfile.TarInfo("components/a.json")
    info.size = 2 * 1024 * 1024
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(metadata_blocks())
        out.write(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))
        out.write(b"999999999999\n" + b"0\n" * (1024 * 1024) + b"\0" * 1024)
    return path


def gnu_sparse_member(path: Path) -> Path:
    """An old GNU sparse member with a long run of extension blocks."""
    info = tarfile.TarInfo("components/a.json")
    info.type = tarfile.GNUTYPE_SPARSE
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT, tarfile.ENCODING, "surrogateescape"))
    header[482] = 1  # isextended
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    extension = b"%011o\0" % 512 * 42 + b"\1" + b"\0" * 7
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(metadata_blocks() + bytes(header) + extension * 4096 + b"\0" * 1024)
    return path


SMALL = ArchiveLimits(max_members=20, max_member_bytes=1024 * 1024, max_total_bytes=2 * 1024**2)

# name -> (members or a builder, expected error, message fragment, limits)
CASES: dict[str, tuple[list[Member] | Callable[[Path], Path], type, str, ArchiveLimits | None]] = {
    "traversal": (
        [metadata(), regular("components/../../evil.json", b"{}")],
        UnsafeArchive,
        "'..'",
        None,
    ),
    "traversal-at-root": ([metadata(), regular("../evil.json", b"{}")], UnsafeArchive, "..", None),
    "absolute-path": ([metadata(), regular(str(OUTSIDE), b"{}")], UnsafeArchive, "absolute", None),
    "symlink": (
        [metadata(), special("components/passwd.json", tarfile.SYMTYPE, "/etc/passwd")],
        UnsafeArchive,
        "symbolic link",
        None,
    ),
    "symlink-dir-then-write-through": (
        [
            metadata(),
            special("components/escape", tarfile.SYMTYPE, "/tmp"),
            regular(f"components/escape/{OUTSIDE.name}", b"{}"),
        ],
        UnsafeArchive,
        "symbolic link",
        None,
    ),
    "hardlink": (
        [metadata(), special("components/shadow.json", tarfile.LNKTYPE, "/etc/shadow")],
        UnsafeArchive,
        "hard link",
        None,
    ),
    "char-device": (
        [metadata(), special("components/null.json", tarfile.CHRTYPE)],
        UnsafeArchive,
        "character device",
        None,
    ),
    "block-device": (
        [metadata(), special("components/sda.json", tarfile.BLKTYPE)],
        UnsafeArchive,
        "block device",
        None,
    ),
    "fifo": (
        [metadata(), special("components/f.json", tarfile.FIFOTYPE)],
        UnsafeArchive,
        "fifo",
        None,
    ),
    "huge-member": (huge_header_archive, UnsafeArchive, "limit", None),
    # 300 MiB of `[0,0,...` gzip to 300 KB, and JSON holds about six bytes of memory per
    # byte read: before, such a member (within the 1 GiB a member may hold) was extracted
    # and parsed, 100 MiB of it held 570 MB, 1 GiB about 6 GB, from an archive of 1 MB.
    "huge-json-member": (
        lambda path: huge_header_archive(path, "components/domain.json", 300 * 1024**2),
        UnsafeArchive,
        "text and JSON files may hold at most 268435456 bytes",
        None,
    ),
    "huge-yaml-member": (
        lambda path: huge_header_archive(path, "components/nlu/x.yml", 300 * 1024**2),
        UnsafeArchive,
        "text and JSON files may hold at most",
        None,
    ),
    "zip-bomb": (
        [metadata(), regular("components/zeros.npy", npy(np.zeros(2 * 1024 * 1024, np.uint8)))],
        UnsafeArchive,
        "limit",
        SMALL,
    ),
    "total-size": (
        [metadata()] + [regular(f"components/part{i}.txt", b"x" * 900_000) for i in range(3)],
        UnsafeArchive,
        "in total",
        SMALL,
    ),
    "pax-header-bomb": (pax_bomb_archive, UnsafeArchive, "extended tar header", SMALL),
    "pax-header-of-zeros": (pax_header_of_zeros, UnsafeArchive, "extended tar header", None),
    "pax-header-of-digits": (pax_header_of_digits, UnsafeArchive, "extended tar header", None),
    "gnu-long-name-header": (long_name_header, UnsafeArchive, "extended tar header", None),
    "extended-header-chain": (extended_header_chain, UnsafeArchive, "chain", None),
    "extended-headers-in-total": (
        many_extended_headers,
        UnsafeArchive,
        "bytes of extended tar headers",
        None,
    ),
    "gnu-sparse-map": (gnu_sparse_map, UnsafeArchive, "sparse file", None),
    "gnu-sparse-member": (gnu_sparse_member, UnsafeArchive, "sparse file", None),
    "too-many-members": (
        [metadata()] + [regular(f"components/f{i}.json", b"{}") for i in range(30)],
        UnsafeArchive,
        "more than 20 members",
        SMALL,
    ),
    "pickle-by-extension": (
        [metadata(), regular("components/model.pkl", pickle.dumps({"a": 1}))],
        UnsafeArchive,
        "pickle",
        None,
    ),
    "joblib-by-extension": (
        [metadata(), regular("components/model.joblib", b"anything")],
        UnsafeArchive,
        "pickle",
        None,
    ),
    "pickle-by-magic": (
        [metadata(), regular("components/state.json", pickle.dumps({"a": 1}, protocol=4))],
        UnsafeArchive,
        "pickle data",
        None,
    ),
    "npy-declaring-more-than-it-holds": (
        [metadata(), regular("components/w.npy", npy_claiming((2**33,), b"\0" * 64))],
        UnsafeArchive,
        "declares a (8589934592,) array of uint8 (8589934592 bytes) but holds 64 bytes",
        None,
    ),
    "npy-holding-more-than-it-declares": (
        [metadata(), regular("components/w.npy", npy_claiming((2, 3), b"\0" * 64))],
        UnsafeArchive,
        "(6 bytes) but holds 64 bytes",
        None,
    ),
    "npy-declaring-one-byte": (  # before, "(1 bytes) but holds 0 bytes"
        [metadata(), regular("components/w.npy", npy_claiming((1,), b""))],
        UnsafeArchive,
        "declares a (1,) array of uint8 (1 byte) but holds no data",
        None,
    ),
    "npy-holding-one-byte": (
        [metadata(), regular("components/w.npy", npy_claiming((2,), b"\0"))],
        UnsafeArchive,
        "(2 bytes) but holds 1 byte of data",
        None,
    ),
    "object-dtype-npy": (
        [metadata(), regular("components/w.npy", npy(np.array([1, None], dtype=object)))],
        UnsafeArchive,
        "object-dtype",
        None,
    ),
    "python-file": (
        [metadata(), regular("components/evil.py", b"import os")],
        UnsafeArchive,
        "not an allowed data file",
        None,
    ),
    "metadata-names-code": (
        [metadata(loader="os.system")],
        UnsafeArchive,
        "names code",
        None,
    ),
    "metadata-names-code-nested": (
        [metadata(pipeline=[{"name": "x", "uses": "evil.module.Component"}])],
        UnsafeArchive,
        "names code",
        None,
    ),
    "metadata-python-yaml-tag": (
        [metadata(config="!!python/object/apply:os.system")],
        UnsafeArchive,
        "YAML tag",
        None,
    ),
    "unexpected-top-level-file": (
        [metadata(), regular("setup.json", b"{}")],
        UnsafeArchive,
        "Unexpected file",
        None,
    ),
    "duplicate-member": (
        [metadata(), regular("components/a.json", b"{}"), regular("components/a.json", b"[]")],
        UnsafeArchive,
        "twice",
        None,
    ),
    "rasa-3": (
        [
            special("components", tarfile.DIRTYPE),
            regular("components/train_DIETClassifier3/model.pkl", pickle.dumps([1])),
            regular(
                "metadata.json",
                json.dumps(
                    {
                        "rasa_open_source_version": "3.6.21",
                        "train_schema": {"nodes": {"x": {"uses": "rasa.nlu.Thing"}}},
                    }
                ).encode(),
            ),
        ],
        UnsupportedModel,
        "This is a Rasa model; retrain it with `botserver train`",
        None,
    ),
    "rasa-3-data-only": (
        [regular("metadata.json", json.dumps({"rasa_open_source_version": "3.5.0"}).encode())],
        UnsupportedModel,
        "This is a Rasa model; retrain it with `botserver train`",
        None,
    ),
    "rasa-2": (
        [
            special("core", tarfile.DIRTYPE),
            regular("core/policy_metadata.json", b"{}"),
            regular("fingerprint.json", b'{"version": "2.8.0"}'),
            special("nlu", tarfile.DIRTYPE),
        ],
        UnsupportedModel,
        "This is a Rasa model; retrain it with `botserver train`",
        None,
    ),
    "older-format": ([metadata(format_version=0)], UnsupportedModel, "Retrain it", None),
    "newer-format": ([metadata(format_version=99)], UnsupportedModel, "Upgrade botserver", None),
    "no-metadata": ([regular("components/a.json", b"{}")], UnsupportedModel, "no metadata", None),
    "metadata-deeply-nested": (
        [regular("metadata.json", b'{"format_version": 1, "x": %s}' % (b"[" * 5000 + b"]" * 5000))],
        UnsafeArchive,
        "nested too deeply",
        None,
    ),
    "metadata-not-json": (
        [regular("metadata.json", b"\x00garbage")],
        UnsupportedModel,
        "not valid JSON",
        None,
    ),
}


def snapshot(root: Path, skip: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if skip not in p.parents and p != skip}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_archive_is_refused_and_nothing_is_written(tmp_path: Path, case: str):
    members, error, fragment, limits = CASES[case]
    path = tmp_path / "hostile.tar.gz"
    if callable(members):
        members(path)
    else:
        tar_gz(path, members)
    dest = tmp_path / "dest"
    dest.mkdir()
    before = snapshot(tmp_path, dest)

    with pytest.raises(error) as raised:
        read_archive(path, dest, limits=limits or ArchiveLimits())

    assert fragment in str(raised.value)
    assert list(dest.iterdir()) == []
    assert snapshot(tmp_path, dest) == before
    assert not OUTSIDE.exists()
    assert not (tmp_path / "evil.json").exists()


def test_read_metadata_refuses_deeply_nested_metadata(tmp_path: Path):
    members = CASES["metadata-deeply-nested"][0]
    assert isinstance(members, list)
    with pytest.raises(UnsafeArchive, match="nested too deeply"):
        read_metadata(tar_gz(tmp_path / "deep.tar.gz", members))


def test_rasa_archives_are_named_by_read_metadata_too(tmp_path: Path):
    rasa3_members, rasa2_members = CASES["rasa-3"][0], CASES["rasa-2"][0]
    assert isinstance(rasa3_members, list) and isinstance(rasa2_members, list)
    rasa3 = tar_gz(tmp_path / "r3.tar.gz", rasa3_members)
    rasa2 = tar_gz(tmp_path / "r2.tar.gz", rasa2_members)
    for path in (rasa3, rasa2):
        with pytest.raises(UnsupportedModel, match="retrain it with `botserver train`"):
            read_metadata(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"not a gzip file at all", gzip.compress(b"gzip, but not a tar" * 100)],
    ids=["empty", "garbage", "gzip-not-tar"],
)
def test_corrupt_files_give_a_clear_model_error(tmp_path: Path, content: bytes):
    path = tmp_path / "corrupt.tar.gz"
    path.write_bytes(content)
    dest = tmp_path / "dest"
    with pytest.raises(ModelError, match="corrupt|no metadata"):
        read_archive(path, dest)
    assert list(dest.iterdir()) == []


def test_truncated_archive_is_refused_and_cleaned_up(tmp_path: Path, archive_factory):
    good = archive_factory().read_bytes()
    path = tmp_path / "truncated.tar.gz"
    path.write_bytes(good[: len(good) // 2])
    dest = tmp_path / "dest"
    with pytest.raises(ModelError, match="corrupt"):
        read_archive(path, dest)
    assert list(dest.iterdir()) == []


def test_plain_tar_without_gzip_is_refused(tmp_path: Path):
    path = tmp_path / "plain.tar.gz"
    with tarfile.open(path, "w") as tar:
        info, data = metadata()
        tar.addfile(info, io.BytesIO(data or b""))
    with pytest.raises(ModelError, match="corrupt or not a gzip"):
        read_archive(path, tmp_path / "dest")


def test_a_link_planted_in_the_destination_is_not_followed(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "components").symlink_to(outside)
    path = tar_gz(tmp_path / "ok.tar.gz", [metadata(), regular("components/a.json", b"{}")])

    with pytest.raises(UnsafeArchive, match="not a directory"):
        read_archive(path, dest)
    assert list(outside.iterdir()) == []
