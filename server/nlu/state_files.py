"""Reading and writing component state as data only: JSON and .npy (no pickle)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.errors import ModelError

if TYPE_CHECKING:
    import numpy as np

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _path(directory: Path, name: str) -> Path:
    if not _SAFE_NAME.match(name) or name.startswith("."):
        raise ModelError(f"unsafe component state file name {name!r}")
    return directory / name


def write_array(directory: Path, name: str, array: np.ndarray) -> None:
    import numpy as np

    np.save(_path(directory, name), np.ascontiguousarray(array), allow_pickle=False)


def read_array(
    directory: Path, name: str, dtype: Any | None = None, ndim: int | None = None
) -> np.ndarray:
    """Load a .npy file refusing object arrays; check dtype kind and rank when asked."""
    import numpy as np

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
    return array if dtype is None else _cast(array, np.dtype(dtype), name)


def _cast(array: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """`array` as `dtype`, refused unless every value survives: a float64 1e300 read as a
    float32 became inf (NaN confidences on every parse), an int64 2**32 + 1 read as an int32
    became 1 (an index that passed every bounds check)."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.astype(dtype, copy=False)
    if cast is not array and (
        not np.isfinite(cast).all() if dtype.kind in "fc" else not np.array_equal(cast, array)
    ):
        article = "an" if dtype.name[0] in "aeiou" else "a"
        raise ModelError(f"component state {name} holds values beyond {article} {dtype.name}")
    return cast


def write_json(directory: Path, name: str, value: Any) -> None:
    _path(directory, name).write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")


def read_json(directory: Path, name: str) -> Any:
    """A JSON state file, refused (ModelError naming it) unless it is strict JSON: NaN,
    Infinity and numbers beyond a double (`1e400`) are not, and training never writes them."""
    try:
        text = _path(directory, name).read_text(encoding="utf-8")
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read component state {name}: {e}") from e
    return loads_state(text, f"component state {name}")


def loads_state(text: str, what: str) -> Any:
    """`text` of the state file `what` names (`component state x.json`), read strictly as
    `read_json` reads it."""
    try:
        return json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except _NotFinite as e:
        # Loaded, every answer computed from it held NaN, which JSON cannot carry (a 500 on
        # every parse or prediction), or a threshold compared false against everything.
        raise ModelError(f"{what} holds {e}, which is not JSON") from e
    except (ValueError, RecursionError) as e:
        raise ModelError(f"cannot read {what}: {e}") from e


class _NotFinite(ValueError):
    """A number JSON cannot hold."""


def _not_json(constant: str) -> Any:
    raise _NotFinite(constant)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"{text} (beyond a double)")
    return value


def expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    """Return `value` if it has the expected type, else fail loading with a clear message."""
    if not isinstance(value, kind):
        raise ModelError(f"component state {what} has an unexpected type")
    return value
