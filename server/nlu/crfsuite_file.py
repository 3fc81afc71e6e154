"""Checks a crfsuite model file before libcrfsuite reads it.

libcrfsuite trusts every offset, count and id in the file: a truncated or altered model
crashes the process (a segmentation fault) when it is opened, or when a message is tagged,
or loops for ever looking up an attribute. Here every structure the tagger reads is checked
to lie inside the file and to name only labels, attributes and features that exist.
"""

from __future__ import annotations

import struct

import numpy as np

from server.errors import ModelError, how_many

# An entity extractor's labels are its BIO tags; the tagger holds a labels x labels matrix.
MAX_LABELS = 2048

_HEADER = struct.Struct("<4sI4s9I")  # magic, size, type, version, counts and offsets
_CHUNK = struct.Struct("<4sII")  # chunk id, chunk size, number of items
_CQDB_HEADER = struct.Struct("<4s5I")  # chunk id, size, flag, byte order, bwd size, bwd offset
_CQDB_TABLES = 256
_CQDB_DATA = _CQDB_HEADER.size + _CQDB_TABLES * 8
_CQDB_BYTE_ORDER = 0x62445371
_FEATURE = np.dtype([("type", "<u4"), ("src", "<u4"), ("dst", "<u4"), ("weight", "<f8")])
_U32 = np.dtype("<u4")


class _Invalid(Exception):
    """What is wrong with the file, said once by `check_crfsuite_model`."""


def check_crfsuite_model(data: bytes, name: str) -> None:
    """A ModelError naming `name` unless `data` is a crfsuite CRF model the tagger can use."""
    try:
        _check(data)
    except (_Invalid, struct.error, ValueError) as exc:
        raise ModelError(f"{name}: invalid crfsuite model ({exc})") from None


def _check(data: bytes) -> None:
    if len(data) < _HEADER.size:
        raise _Invalid("shorter than its header")
    header = _HEADER.unpack_from(data)
    # The header's feature count is not kept up to date by crfsuite: the chunk's counts.
    magic, _size, kind, version, _, labels, attrs = header[:7]
    off_features, off_labels, off_attrs, off_labelrefs, off_attrrefs = header[7:]
    if magic != b"lCRF" or kind != b"FOMC" or version != 100:
        raise _Invalid("not a crfsuite CRF model")
    if not 0 < labels <= MAX_LABELS:
        raise _Invalid(f"{labels} labels")
    _check_cqdb(data, off_labels, labels, "labels")
    _check_cqdb(data, off_attrs, attrs, "attributes")
    table = _features(data, off_features)
    features = len(table)
    state = table["type"] == 0
    if not np.all((table["type"] <= 1) & (table["dst"] < labels)):
        raise _Invalid("a feature of an unknown type or label")
    if not np.all(np.where(state, table["src"] < attrs, table["src"] < labels)):
        raise _Invalid("a feature from an unknown attribute or label")
    _check_references(data, off_labelrefs, b"LFRF", labels, features)
    _check_references(data, off_attrrefs, b"AFRF", attrs, features)


def _inside(data: bytes, offset: int, size: int) -> None:
    if offset < 0 or size < 0 or offset + size > len(data):
        raise _Invalid("an offset beyond the end of the file")


def _u32s(data: bytes, offset: int, count: int) -> np.ndarray:
    _inside(data, offset, 4 * count)
    return np.frombuffer(data, _U32, count, offset)


def _features(data: bytes, offset: int) -> np.ndarray:
    _inside(data, offset, _CHUNK.size)
    chunk, _size, count = _CHUNK.unpack_from(data, offset)
    if chunk != b"FEAT":
        raise _Invalid("a malformed feature chunk")
    _inside(data, offset + _CHUNK.size, _FEATURE.itemsize * count)
    return np.frombuffer(data, _FEATURE, count, offset + _CHUNK.size)


def _check_references(data: bytes, offset: int, chunk_id: bytes, count: int, features: int) -> None:
    """The list of feature ids of each of the first `count` labels (or attributes), as the
    tagger walks them (crfsuite writes a few more entries than it reads)."""
    _inside(data, offset, _CHUNK.size)
    chunk, _size, num = _CHUNK.unpack_from(data, offset)
    if chunk != chunk_id or num < count:
        raise _Invalid(f"a malformed {chunk_id.decode()} chunk")
    for start in _u32s(data, offset + _CHUNK.size, count).tolist():
        (length,) = _u32s(data, start, 1).tolist()
        if not np.all(_u32s(data, start + 4, length) < features):
            raise _Invalid("a reference to an unknown feature")


def _check_cqdb(data: bytes, base: int, count: int, what: str) -> None:
    """A constant quark database: string <-> id, by hash tables and a backward array."""
    _inside(data, base, _CQDB_DATA)
    chunk, size, _flag, byte_order, bwd_size, bwd_offset = _CQDB_HEADER.unpack_from(data, base)
    # libcrfsuite reads no database at all (and then crashes) when its size runs past the file.
    if chunk != b"CQDB" or byte_order != _CQDB_BYTE_ORDER or base + size > len(data):
        raise _Invalid(f"a malformed {what} database")
    tables = _u32s(data, base + _CQDB_HEADER.size, 2 * _CQDB_TABLES).reshape(-1, 2).tolist()
    # The database counts its records as half its buckets, and that count is used as is.
    if any(buckets and not offset for offset, buckets in tables) or (
        sum(buckets // 2 for _, buckets in tables) != count
    ):
        raise _Invalid(f"the {what} database does not hold {how_many(count, 'record')}")
    for table_offset, buckets in tables:
        if not table_offset:
            continue
        pairs = _u32s(data, base + table_offset, 2 * buckets).reshape(-1, 2)
        records = pairs[:, 1]
        if np.all(records != 0):  # a lookup probes until an empty bucket: none, no end
            raise _Invalid(f"a full hash table in the {what} database")
        for record in records[records != 0].tolist():
            _check_record(data, base + record, count, what)
    if bwd_size < count or not bwd_offset:
        raise _Invalid(f"the {what} database cannot name every id")
    for record in _u32s(data, base + bwd_offset, bwd_size)[:count].tolist():
        if not record:
            raise _Invalid(f"the {what} database cannot name every id")
        _check_record(data, base + record, count, what)


def _check_record(data: bytes, offset: int, count: int, what: str) -> None:
    """An id, a length, and that many bytes of UTF-8 text ending in NUL (labels come back
    from the tagger as `str`)."""
    ident, length = _u32s(data, offset, 2).tolist()
    _inside(data, offset + 8, length)
    if ident >= count or length == 0 or data[offset + 8 + length - 1] != 0:
        raise _Invalid(f"a malformed record in the {what} database")
    text = data[offset + 8 : offset + 8 + length - 1]
    try:
        text.split(b"\0", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        raise _Invalid(f"a record of the {what} database is not UTF-8") from None
