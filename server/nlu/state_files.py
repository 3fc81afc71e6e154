"""Reading and writing component state as data only: JSON and .npy (no pickle)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from server.errors import ModelError

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _path(directory: Path, name: str) -> Path:
    if not _SAFE_NAME.match(name) or name.startswith("."):
        raise ModelError(f"unsafe component state file name {name!r}")
    return directory / name


def write_array(directory: Path, name: str, array: np.ndarray) -> None:
    np.save(_path(directory, name), np.ascontiguousarray(array), allow_pickle=False)


def read_array(
    directory: Path, name: str, dtype: Any | None = None, ndim: int | None = None
) -> np.ndarray:
    """Load a .npy file refusing object arrays; check dtype kind and rank when asked."""
    path = _path(directory, name)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read component state {name}: {e}") from e
    if ndim is not None and array.ndim != ndim:
        raise ModelError(f"component state {name} has {array.ndim} dimensions, not {ndim}")
    if dtype is not None and not np.can_cast(array.dtype, dtype, casting="same_kind"):
        raise ModelError(f"component state {name} has dtype {array.dtype}, not {dtype}")
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        # Training never writes one; loaded, every answer computed from it held NaN, which
        # JSON cannot carry (a 500 on every parse).
        raise ModelError(f"component state {name} holds NaN or inf")
    return array if dtype is None else array.astype(dtype, copy=False)


def write_json(directory: Path, name: str, value: Any) -> None:
    _path(directory, name).write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")


def read_json(directory: Path, name: str) -> Any:
    try:
        return json.loads(_path(directory, name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read component state {name}: {e}") from e


def expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    """Return `value` if it has the expected type, else fail loading with a clear message."""
    if not isinstance(value, kind):
        raise ModelError(f"component state {what} has an unexpected type")
    return value
