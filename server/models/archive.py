"""The model archive: write it, read it safely, read its metadata.

`<name>.tar.gz` holding `metadata.json`, an optional `signature.json`, and the component
data under `components/`. Reading never trusts the archive; see docs/models.md.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import stat
import tarfile
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from server.errors import (
    CorruptArchive,
    ModelError,
    ModelNotFound,
    SignatureError,
    TrainingError,
    UnsafeArchive,
    UnsupportedModel,
)
from server.models import signing
from server.models.metadata import (
    ARCHIVE_SUFFIX,
    FORMAT_VERSION,
    METADATA_FILE,
    RASA2_MARKER,
    RASA_MESSAGE,
    build_metadata,
    is_rasa_metadata,
    parse_metadata,
)
from server.models.safety import (
    DEFAULT_LIMITS,
    SNIFF_BYTES,
    ArchiveLimits,
    check_file_head,
    check_file_name,
    check_member_type,
    checked_tarinfo_class,
    member_byte_limit,
    safe_member_name,
)

__all__ = [
    "ARCHIVE_SUFFIX",
    "COMPONENTS_DIR",
    "DEFAULT_LIMITS",
    "FORMAT_VERSION",
    "ArchiveLimits",
    "read_archive",
    "random_name",
    "read_metadata",
    "file_sha256",
    "write_archive",
]

COMPONENTS_DIR = "components"
SIGNATURE_FILE = signing.SIGNATURE_FILE
_CHUNK = 1024 * 1024
_MAX_SIGNATURE_BYTES = 16 * 1024 * 1024

_ADJECTIVES = (
    "amber brave calm clever crisp dapper eager fancy gentle glossy happy humble jolly keen "
    "lively lucky mellow nimble polite proud quiet rapid shiny sleek snappy steady sunny swift "
    "tidy upbeat vivid warm witty zesty"
).split()
_NOUNS = (
    "anchor badger beacon canyon cedar comet falcon fjord garnet harbor heron island jasper "
    "kettle lantern meadow marble nectar orbit otter pebble quartz raven river saddle spruce "
    "summit tulip valley walrus willow zephyr"
).split()


# --------------------------------------------------------------------------------- writing


def write_archive(
    content_dir: Path,
    metadata: dict[str, Any],
    out_dir: Path,
    fixed_name: str | None = None,
    signing_key: bytes | Path | None = None,
    prefix: str = "",
    limits: ArchiveLimits = DEFAULT_LIMITS,
) -> Path:
    """Pack `content_dir` as `components/` with `metadata.json`; return the archive path.

    The name is `<prefix><YYYYmmdd-HHMMSS>-<adjective>-<noun>.tar.gz` (Rasa's prefixes:
    `core-`, `nlu-` for partial trainings), or `<fixed_name>.tar.gz` (as Rasa's
    `--fixed-model-name`). With a signing key the archive carries an Ed25519
    signature over the sha256 of every member.
    """
    content_dir = Path(content_dir)
    full_metadata = build_metadata(metadata)
    metadata_bytes = json.dumps(full_metadata, indent=2, ensure_ascii=False).encode()
    entries = list(_content_entries(content_dir))
    _check_loadable(entries, len(metadata_bytes), limits)

    hashes = {METADATA_FILE: hashlib.sha256(metadata_bytes).hexdigest()}
    for relative, source in entries:
        if source.is_file():
            hashes[f"{COMPONENTS_DIR}/{relative}"] = file_sha256(source)
    signature = (
        signing.sign_manifest(hashes, FORMAT_VERSION, signing_key)
        if signing_key is not None
        else None
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _archive_name(fixed_name, prefix)  # an invalid fixed name fails before any writing
    partial = out_dir / f".{uuid.uuid4().hex}.partial"
    mtime = int(time.time())
    try:
        # The gzip layer is opened here, not by tarfile: tarfile would write the
        # temporary `.partial` name into the gzip header, where `gunzip -N` finds it.
        with (
            partial.open("xb") as raw,
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=mtime) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            # The signature goes first so a verifying reader checks it before parsing anything.
            if signature is not None:
                _add_bytes(tar, SIGNATURE_FILE, signature, mtime)
            _add_bytes(tar, METADATA_FILE, metadata_bytes, mtime)
            tar.addfile(_dir_info(COMPONENTS_DIR, mtime))
            for relative, source in entries:
                name = f"{COMPONENTS_DIR}/{relative}"
                if source.is_dir():
                    tar.addfile(_dir_info(name, mtime))
                else:
                    info = _file_info(name, source.stat().st_size, mtime)
                    with source.open("rb") as handle:
                        tar.addfile(info, handle)
        return _publish(partial, out_dir, fixed_name, prefix)
    finally:
        partial.unlink(missing_ok=True)


def _publish(partial: Path, out_dir: Path, fixed_name: str | None, prefix: str) -> Path:
    """Gives the finished archive its name. A fixed name replaces the archive it names, as
    Rasa's `--fixed-model-name` does; a generated one never replaces another training's
    archive that drew the same second and the same words."""
    if fixed_name:
        final = out_dir / _archive_name(fixed_name, prefix)
        os.replace(partial, final)
        return final
    while True:
        final = out_dir / _archive_name(None, prefix)
        try:
            os.link(partial, final)  # fails if the name is taken, atomically
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links
            if final.exists():
                continue
            os.replace(partial, final)
        return final


def check_archive_target(out_dir: Path, fixed_name: str | None) -> None:
    """Fails before a training whose archive could not be written under `fixed_name`: a
    name that is not a plain file name, or one a directory in `out_dir` already holds."""
    if not fixed_name:
        return
    final = Path(out_dir) / _archive_name(fixed_name)
    if final.is_dir():
        raise ModelError(f"Cannot write the model to {final}: it is a directory")


def _archive_name(fixed_name: str | None, prefix: str = "") -> str:
    if fixed_name:
        if "/" in fixed_name or "\\" in fixed_name or fixed_name.startswith("."):
            raise ModelError(f"Invalid fixed model name {fixed_name!r}: use a plain file name")
        return fixed_name if fixed_name.endswith(ARCHIVE_SUFFIX) else fixed_name + ARCHIVE_SUFFIX
    return f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}-{random_name()}{ARCHIVE_SUFFIX}"


def random_name() -> str:
    """`<adjective>-<noun>`: a model's file name, or an assistant_id made up at training."""
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}"


def _content_entries(content_dir: Path) -> Iterator[tuple[str, Path]]:
    """Every directory and file below content_dir, sorted, each checked as a reader would."""
    if not content_dir.is_dir():
        raise ModelError(f"Model content directory '{content_dir}' does not exist")
    for root, dirs, files in os.walk(content_dir, followlinks=False):
        dirs.sort()
        root_path = Path(root)
        for name in dirs:
            path = root_path / name
            if path.is_symlink():
                raise ModelError(f"Model content '{path}' is a symbolic link; archives hold files")
            yield path.relative_to(content_dir).as_posix(), path
        for name in sorted(files):
            path = root_path / name
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                raise ModelError(f"Model content '{path}' is not a regular file")
            relative = path.relative_to(content_dir).as_posix()
            check_file_name(tuple(f"{COMPONENTS_DIR}/{relative}".split("/")))
            with path.open("rb") as handle:
                check_file_head(relative, handle.read(SNIFF_BYTES), path.lstat().st_size)
            yield relative, path


def _check_loadable(
    entries: list[tuple[str, Path]], metadata_size: int, limits: ArchiveLimits
) -> None:
    """TrainingError for a file the loader would refuse for its size, or too many files or
    bytes in all: an archive that trained but never loads is written by no training."""
    members = len(entries) + 3  # metadata.json, components/ and a signature
    if metadata_size > limits.max_metadata_bytes:
        # (It holds the domain and the config: a domain of that many bytes of responses.)
        raise TrainingError(
            f"The model's {METADATA_FILE} is {metadata_size:,} bytes, more than a model may "
            f"hold ({limits.max_metadata_bytes:,}; it holds the domain and the config): it "
            "would never load. The domain is too big for one model."
        )
    if members > limits.max_members:
        raise TrainingError(
            f"The model would hold {members:,} files and folders, more than a model may "
            f"hold ({limits.max_members:,}): it would never load."
        )
    total = metadata_size + sum(s.stat().st_size for _, s in entries if s.is_file())
    if total > limits.max_total_bytes:
        raise TrainingError(
            f"The model would hold {total:,} bytes in all, more than a model may hold "
            f"({limits.max_total_bytes:,}): it would never load. The project is too big "
            "for one model."
        )
    for relative, source in entries:
        if source.is_file():
            name = f"{COMPONENTS_DIR}/{relative}"
            size = source.stat().st_size
            limit, which = member_byte_limit(tuple(name.split("/")), limits)
            if size > limit:
                raise TrainingError(
                    f"The model's file '{name}' is {size:,} bytes, more than a model may "
                    f"hold ({which}): it would never load. The project is too big for one "
                    "model."
                )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, mtime
    return info


def _dir_info(name: str, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    tar.addfile(_file_info(name, len(data), mtime), io.BytesIO(data))


# --------------------------------------------------------------------------------- reading


def read_archive(
    path: Path,
    dest_dir: Path,
    verify_key: bytes | Path | None = None,
    limits: ArchiveLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """Check and extract an archive into dest_dir; return its metadata.

    Every member is checked before it is written; any refusal removes what was written, so
    dest_dir is left as it was. With a verify key, unsigned or tampered archives are refused.
    Sync and CPU-bound: call it from a worker thread in async code.
    """
    public_key = signing.load_verify_key(verify_key) if verify_key is not None else None
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    extractor = _Extractor(dest_dir, limits, public_key)
    try:
        with _open_tar(Path(path), limits) as tar:
            extractor.extract_all(tar)
        extractor.finish()
    except (UnsafeArchive, SignatureError) as exc:
        extractor.rollback()
        if extractor.metadata is None and _looks_like_rasa(Path(path), limits):
            raise UnsupportedModel(f"{RASA_MESSAGE}.") from exc
        raise
    except BaseException:
        extractor.rollback()
        raise
    finally:
        extractor.close()
    assert extractor.metadata is not None
    return extractor.metadata


def read_metadata(path: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The metadata of an archive, without extracting its components (not signature-checked)."""
    with _open_tar(Path(path), limits) as tar:
        for count, member in enumerate(tar, start=1):
            if count > limits.max_members:
                break
            parts = safe_member_name(member.name, limits)
            if parts == (RASA2_MARKER,):
                raise UnsupportedModel(f"{RASA_MESSAGE} (a Rasa 2 archive).")
            if parts == (METADATA_FILE,):
                check_member_type(member)
                return parse_metadata(_read_small(tar, member, limits.max_metadata_bytes))
    raise UnsupportedModel(
        f"'{path}' has no {METADATA_FILE}; it is not a botserver model. "
        "Train one with `botserver train`."
    )


@contextlib.contextmanager
def _open_tar(path: Path, limits: ArchiveLimits) -> Iterator[tarfile.TarFile]:
    """A streaming tar reader over a byte-counted gzip stream, with errors mapped to ours."""
    try:
        raw = path.open("rb")
    except FileNotFoundError as exc:
        raise ModelNotFound(f"Model archive '{path}' does not exist") from exc
    except IsADirectoryError as exc:
        raise ModelError(f"Model archive '{path}' is a directory, not a .tar.gz file") from exc
    # Tar headers and padding add at most a few blocks per member on top of the data.
    budget = limits.max_total_bytes + (limits.max_members + 16) * 3 * 1024
    try:
        with raw, gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
            counted = _CountingReader(unzipped, budget)
            with tarfile.open(  # type: ignore[call-overload]
                fileobj=counted, mode="r|", tarinfo=checked_tarinfo_class(limits)
            ) as tar:
                yield tar
    except (tarfile.ReadError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise CorruptArchive(
            f"Model archive '{path.name}' is corrupt or not a gzip-compressed tar file ({exc}). "
            "Check the download or retrain with `botserver train`."
        ) from exc
    except tarfile.TarError as exc:
        raise CorruptArchive(f"Model archive '{path.name}' cannot be read: {exc}") from exc


class _CountingReader:
    """Counts decompressed bytes and stops at a budget: a gzip bomb ends here, not in RAM."""

    def __init__(self, inner: IO[bytes] | gzip.GzipFile, budget: int):
        self._inner = inner
        self._budget = budget
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._budget - self.count + 1
        data = self._inner.read(min(size, self._budget - self.count + 1))
        self.count += len(data)
        if self.count > self._budget:
            raise UnsafeArchive(
                f"Archive expands beyond {self._budget} bytes when decompressed (a gzip bomb?)"
            )
        return data


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if member.size > limit:
        raise UnsafeArchive(f"Archive member '{member.name}' is larger than {limit} bytes")
    handle = tar.extractfile(member)
    if handle is None:
        raise UnsafeArchive(f"Archive member '{member.name}' is not a regular file")
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise UnsafeArchive(f"Archive member '{member.name}' is larger than {limit} bytes")
    return data


def _looks_like_rasa(path: Path, limits: ArchiveLimits) -> bool:
    """After a refusal: was it a Rasa model? Then the user deserves the retrain message."""
    try:
        with _open_tar(path, limits) as tar:
            for count, member in enumerate(tar, start=1):
                if count > limits.max_members:
                    return False
                name = member.name[2:] if member.name.startswith("./") else member.name
                if name == RASA2_MARKER:
                    return True
                if name == METADATA_FILE and member.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    raw = _read_small(tar, member, limits.max_metadata_bytes)
                    metadata = json.loads(raw)
                    return isinstance(metadata, dict) and is_rasa_metadata(metadata)
    except (ModelError, ValueError, OSError, RecursionError):
        return False
    return False


class _Extractor:
    """Writes checked members under dest_dir through directory file descriptors only."""

    def __init__(self, dest_dir: Path, limits: ArchiveLimits, public_key: Any):
        self.dest_dir = dest_dir
        self.limits = limits
        self.public_key = public_key
        self.metadata: dict[str, Any] | None = None
        self.hashes: dict[str, str] = {}
        self.signed: dict[str, str] | None = None
        self._seen_signature = False
        self.total_bytes = 0
        self._created_top: set[str] = set()
        self._root_fd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY)
        self._dir_fds: dict[tuple[str, ...], int] = {(): self._root_fd}

    def extract_all(self, tar: tarfile.TarFile) -> None:
        for count, member in enumerate(tar, start=1):
            if count > self.limits.max_members:
                raise UnsafeArchive(f"Archive has more than {self.limits.max_members} members")
            self._extract_member(tar, member)

    def _extract_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = safe_member_name(member.name, self.limits)
        if parts == (RASA2_MARKER,):
            raise UnsupportedModel(f"{RASA_MESSAGE} (a Rasa 2 archive).")
        check_member_type(member)
        if not parts:
            if not member.isdir():
                raise UnsafeArchive("Archive has a file without a name")
            return
        name = "/".join(parts)
        if member.isdir():
            if parts[0] != COMPONENTS_DIR:
                raise UnsafeArchive(f"Unexpected directory '{name}' in the archive")
            self._open_dir(parts)
            return
        if parts == (SIGNATURE_FILE,):
            if self._seen_signature:
                raise UnsafeArchive(f"Archive holds {SIGNATURE_FILE} twice")
            self._seen_signature = True
            raw = _read_small(tar, member, _MAX_SIGNATURE_BYTES)
            if self.public_key is not None:
                self.signed = signing.verify_signature_document(raw, self.public_key)
            return
        if self.public_key is not None and self.signed is None:
            # With a verify key nothing is parsed or written before the signature verifies.
            raise SignatureError(
                "The archive is not signed, and this server only loads signed models "
                "(sign it with `botserver train --signing-key`)"
            )
        if parts == (METADATA_FILE,):
            if self.metadata is not None:
                raise UnsafeArchive(f"Archive holds {METADATA_FILE} twice")
            raw = _read_small(tar, member, self.limits.max_metadata_bytes)
            self._record_hash(name, hashlib.sha256(raw).hexdigest())
            self.metadata = parse_metadata(raw)
            self._write_bytes(parts, raw)
        elif parts[0] == COMPONENTS_DIR and len(parts) > 1:
            check_file_name(parts)
            self._stream_file(tar, member, parts)
        else:
            raise UnsafeArchive(f"Unexpected file '{name}' in the archive")

    def _stream_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parts: tuple) -> None:
        name = "/".join(parts)
        limit, which = member_byte_limit(parts, self.limits)
        if member.size > limit:
            raise UnsafeArchive(f"Archive member '{name}' is {member.size} bytes; {which}")
        if self.total_bytes + member.size > self.limits.max_total_bytes:
            raise UnsafeArchive(
                f"Archive content exceeds {self.limits.max_total_bytes} bytes in total"
            )
        source = tar.extractfile(member)
        if source is None:
            raise UnsafeArchive(f"Archive member '{name}' is not a regular file")
        head = source.read(SNIFF_BYTES)
        check_file_head(name, head, member.size)
        digest = hashlib.sha256()
        fd = self._create_file(parts)
        with os.fdopen(fd, "wb") as out:
            chunk = head
            written = 0
            while chunk:
                written += len(chunk)
                self.total_bytes += len(chunk)
                if written > limit:
                    raise UnsafeArchive(
                        f"Archive member '{name}' streams more than {limit} bytes; {which}"
                    )
                if self.total_bytes > self.limits.max_total_bytes:
                    raise UnsafeArchive(
                        f"Archive content exceeds {self.limits.max_total_bytes} bytes in total"
                    )
                digest.update(chunk)
                out.write(chunk)
                chunk = source.read(_CHUNK)
        self._record_hash(name, digest.hexdigest())

    def _record_hash(self, name: str, digest: str) -> None:
        self.hashes[name] = digest
        if self.signed is not None:
            self._check_signed(name, digest)

    def _check_signed(self, name: str, digest: str) -> None:
        assert self.signed is not None
        if self.signed.get(name) != digest:
            raise SignatureError(
                f"Archive member '{name}' does not match the signed manifest (tampered)"
            )

    def finish(self) -> None:
        if self.metadata is None:
            raise UnsupportedModel(
                f"The archive has no {METADATA_FILE}; it is not a botserver model. "
                "Train one with `botserver train`."
            )
        if self.public_key is None:
            return
        if self.signed is None:
            raise SignatureError(
                "The archive is not signed, and this server only loads signed models "
                "(sign it with `botserver train --signing-key`)"
            )
        missing = sorted(set(self.signed) - set(self.hashes))
        if missing:
            raise SignatureError(f"Signed archive members are missing: {', '.join(missing)}")

    # Everything below writes relative to directory descriptors opened with O_NOFOLLOW, so a
    # link planted by anyone cannot redirect a write outside dest_dir.

    def _open_dir(self, parts: tuple[str, ...]) -> int:
        fd = self._dir_fds.get(parts)
        if fd is not None:
            return fd
        parent = self._open_dir(parts[:-1])
        try:
            os.mkdir(parts[-1], 0o755, dir_fd=parent)
            if len(parts) == 1:
                self._created_top.add(parts[0])
        except FileExistsError:
            pass
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        except OSError as exc:
            raise UnsafeArchive(f"Archive path '{'/'.join(parts)}' is not a directory") from exc
        self._dir_fds[parts] = fd
        return fd

    def _create_file(self, parts: tuple[str, ...]) -> int:
        parent = self._open_dir(parts[:-1])
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            fd = os.open(parts[-1], flags, 0o644, dir_fd=parent)
        except FileExistsError as exc:
            raise UnsafeArchive(f"Archive holds '{'/'.join(parts)}' twice") from exc
        except OSError as exc:
            raise UnsafeArchive(f"Cannot create '{'/'.join(parts)}': {exc.strerror}") from exc
        if len(parts) == 1:
            self._created_top.add(parts[0])
        return fd

    def _write_bytes(self, parts: tuple[str, ...], data: bytes) -> None:
        with os.fdopen(self._create_file(parts), "wb") as out:
            out.write(data)

    def rollback(self) -> None:
        for name in self._created_top:
            target = self.dest_dir / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        self._created_top.clear()

    def close(self) -> None:
        for fd in self._dir_fds.values():
            os.close(fd)
        self._dir_fds.clear()
