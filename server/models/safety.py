"""The checks an archive member must pass before a byte of it is written.

Names, member types, size and count limits, allowed file types, and content sniffing
(pickle by magic bytes, `.npy` files with an object dtype).
"""

from __future__ import annotations

import io
import math
import re
import tarfile
from dataclasses import dataclass

import numpy as np
from numpy.lib import format as npy_format

from server.errors import UnsafeArchive, how_many

MiB = 1024 * 1024

# Formats the NLU and dialogue components store; nothing here can carry code.
ALLOWED_SUFFIXES = (".json", ".npy", ".txt", ".crfsuite", ".yml", ".yaml")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".npz", ".dill", ".sav")
# How many leading bytes of a file are sniffed before it is written.
SNIFF_BYTES = 64 * 1024

_NPY_MAGIC = b"\x93NUMPY"
_NAME_PART = re.compile(r"^[^\x00-\x1f\\:]+$")


@dataclass(frozen=True)
class ArchiveLimits:
    """How much an archive may hold. Sizes count bytes actually streamed, not headers."""

    max_members: int = 10_000
    max_member_bytes: int = 1024 * MiB
    # JSON, YAML and text members are parsed whole into Python values, about six bytes of
    # memory per byte; arrays (.npy) load at their size. The largest state training writes
    # is a memoization lookup, about 570 bytes per turn window (21 MB for 2,000 stories
    # of 10 turns); training refuses to write a file over it (write_archive).
    max_text_member_bytes: int = 256 * MiB
    max_total_bytes: int = 4096 * MiB
    max_metadata_bytes: int = 64 * MiB
    max_name_length: int = 512
    max_depth: int = 16
    # Extended headers (pax records, GNU long names) in front of members: each, and all.
    max_extended_header_bytes: int = 4096
    max_total_extended_header_bytes: int = 1 * MiB


DEFAULT_LIMITS = ArchiveLimits()


# How many extended headers may stand in front of one member (pax, global pax, long name...).
_MAX_EXTENDED_HEADERS_IN_A_ROW = 8
_EXTENDED_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)
_SPARSE_REFUSED = "Archive holds a sparse file; only files are allowed"


def checked_tarinfo_class(limits: ArchiveLimits) -> type[tarfile.TarInfo]:
    """A `tarinfo=` class for reading one archive that checks headers before tarfile reads on.

    tarfile reads an extended header whole into memory, and (before Python 3.11.10 and
    3.12.6, CVE-2024-6232) parses pax records in time that grows with the square of their
    size: a 4 KB gzip of a 4 GB pax header would hold gigabytes of RAM or a CPU for hours.
    Here each extended header is checked against the limits before a byte of it is read,
    and sparse files are refused before tarfile reads their maps (which a hostile archive
    can make as long as the stream).
    """
    total = 0
    in_a_row = 0

    class CheckedTarInfo(tarfile.TarInfo):
        def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
            nonlocal total, in_a_row
            if self.type == tarfile.GNUTYPE_SPARSE:
                raise UnsafeArchive(f"{_SPARSE_REFUSED} ('{self.name}')")
            if self.type not in _EXTENDED_TYPES:
                return super()._proc_member(tar)  # type: ignore[misc]
            if self.size > limits.max_extended_header_bytes:
                raise UnsafeArchive(
                    f"Archive has an extended tar header of {self.size} bytes; "
                    f"limit {limits.max_extended_header_bytes}"
                )
            total += self.size
            if total > limits.max_total_extended_header_bytes:
                raise UnsafeArchive(
                    "Archive has more than "
                    f"{limits.max_total_extended_header_bytes} bytes of extended tar headers"
                )
            in_a_row += 1
            if in_a_row > _MAX_EXTENDED_HEADERS_IN_A_ROW:
                raise UnsafeArchive("Archive has a chain of extended tar headers")
            try:
                return super()._proc_member(tar)  # type: ignore[misc]
            finally:
                in_a_row -= 1

        # GNU sparse files described by pax records (formats 0.0, 0.1 and 1.0).
        def _proc_gnusparse_00(self, *args: object) -> None:
            raise UnsafeArchive(_SPARSE_REFUSED)

        def _proc_gnusparse_01(self, *args: object) -> None:
            raise UnsafeArchive(_SPARSE_REFUSED)

        def _proc_gnusparse_10(self, *args: object) -> None:
            raise UnsafeArchive(_SPARSE_REFUSED)

    return CheckedTarInfo


def safe_member_name(name: str, limits: ArchiveLimits) -> tuple[str, ...]:
    """The path parts of a member name, or UnsafeArchive if it could escape or confuse."""
    if len(name) > limits.max_name_length:
        raise UnsafeArchive(f"Archive member name is too long ({len(name)} characters)")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchive(f"Archive member '{name}' has an absolute path")
    stripped = name[2:] if name.startswith("./") else name
    stripped = stripped.rstrip("/")
    if stripped in ("", "."):
        return ()
    parts = tuple(stripped.split("/"))
    for part in parts:
        if part == "..":
            raise UnsafeArchive(f"Archive member '{name}' climbs out of the archive ('..')")
        if part in ("", ".") or not _NAME_PART.match(part):
            raise UnsafeArchive(f"Archive member '{name}' has an invalid path component")
    if len(parts) > limits.max_depth:
        raise UnsafeArchive(f"Archive member '{name}' is nested too deeply")
    return parts


def check_member_type(member: tarfile.TarInfo) -> None:
    """Only regular files and directories; links, devices, fifos and sparse files refused."""
    if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
        return
    kinds = {
        tarfile.SYMTYPE: "a symbolic link",
        tarfile.LNKTYPE: "a hard link",
        tarfile.CHRTYPE: "a character device",
        tarfile.BLKTYPE: "a block device",
        tarfile.FIFOTYPE: "a fifo",
        tarfile.CONTTYPE: "a contiguous file",
        tarfile.GNUTYPE_SPARSE: "a sparse file",
    }
    kind = kinds.get(member.type, f"of unsupported type {member.type!r}")
    raise UnsafeArchive(f"Archive member '{member.name}' is {kind}; only files are allowed")


def check_file_name(parts: tuple[str, ...]) -> None:
    """Refuse pickles by name, and anything outside the allowed data formats."""
    filename = parts[-1].lower()
    name = "/".join(parts)
    if filename.endswith(PICKLE_SUFFIXES):
        raise UnsafeArchive(f"Archive member '{name}' is a pickle file; pickles are never loaded")
    if not filename.endswith(ALLOWED_SUFFIXES):
        allowed = ", ".join(ALLOWED_SUFFIXES)
        raise UnsafeArchive(f"Archive member '{name}' is not an allowed data file ({allowed})")


# Members read whole into Python values (not arrays): held at several times their size.
TEXT_SUFFIXES = (".json", ".txt", ".yml", ".yaml")


def member_byte_limit(parts: tuple[str, ...], limits: ArchiveLimits) -> tuple[int, str]:
    """The most bytes the member may hold, and how a refusal names that limit."""
    if parts[-1].lower().endswith(TEXT_SUFFIXES):
        limit = min(limits.max_text_member_bytes, limits.max_member_bytes)
        return limit, f"text and JSON files may hold at most {limit} bytes"
    return limits.max_member_bytes, f"limit {limits.max_member_bytes}"


def check_file_head(name: str, head: bytes, size: int) -> None:
    """Sniff the first bytes of a file of `size` bytes: no pickle stream, no object-dtype
    `.npy`, and a `.npy` holds exactly the data its header declares."""
    # Pickle protocol 2+ opens with the PROTO opcode 0x80 and the protocol number.
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise UnsafeArchive(f"Archive member '{name}' holds pickle data; pickles are never loaded")
    if name.lower().endswith(".npy"):
        _check_npy_header(name, head, size)


def _check_npy_header(name: str, head: bytes, size: int) -> None:
    if not head.startswith(_NPY_MAGIC):
        raise UnsafeArchive(f"Archive member '{name}' is not a NumPy .npy file")
    stream = io.BytesIO(head)
    try:
        major, _minor = npy_format.read_magic(stream)
        if major == 1:
            shape, _order, dtype = npy_format.read_array_header_1_0(stream)
        elif major in (2, 3):
            shape, _order, dtype = npy_format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unknown .npy version {major}")
    except (ValueError, SyntaxError, EOFError) as exc:
        raise UnsafeArchive(f"Archive member '{name}' has a bad .npy header: {exc}") from exc
    if np.dtype(dtype).hasobject:
        raise UnsafeArchive(
            f"Archive member '{name}' is an object-dtype array, which needs pickle to load"
        )
    # Python integers: a shape of absurd dimensions cannot overflow here.
    declared = math.prod(shape) * np.dtype(dtype).itemsize
    held = size - stream.tell()
    if declared != held:
        holds = f"{how_many(held, 'byte')} of data" if held else "no data"
        raise UnsafeArchive(
            f"Archive member '{name}' declares a {shape} array of {np.dtype(dtype)} "
            f"({how_many(declared, 'byte')}) but holds {holds}"
        )
