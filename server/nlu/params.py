"""Typed reading of component and policy parameters from config.yml: a wrong type or an
out-of-range value is an InvalidConfig naming the component and the key, never a ValueError
from deep inside training or a silently different model."""

from __future__ import annotations

import math
from typing import Any

from server.errors import InvalidConfig

# The largest weight of a term blended into the intent scores (the nearest sentences, the
# scenarios): beyond it the blended term alone orders the intents anyway; far beyond it
# (1e308) the blended scores overflow to inf and every parse answers NaN confidences.
MAX_BLEND_WEIGHT = 1000.0

# The longest `timeout` of a synchronous HTTP call (Duckling's, the NLU server's), about 31
# years: a socket or a lock waits at most ~9.2e9 s, and a longer wait raised OverflowError at
# every call.
MAX_SYNC_TIMEOUT_SECONDS = 1e9

_TRUE = frozenset({"true", "yes", "on"})
_FALSE = frozenset({"false", "no", "off"})


def number(
    config: dict[str, Any],
    key: str,
    default: float,
    component: str,
    *,
    whole: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
) -> Any:
    """`config[key]` as an int (`whole`) or a float within [minimum, maximum] (above 0 when
    `positive`). A numeric string (what `${VAR}` substitution gives) is read as its number."""
    value = config.get(key, default)
    parsed: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            parsed = float(value)
        except OverflowError:  # an integer no float holds
            parsed = None
    elif isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            parsed = None
    kind = "a whole number" if whole else "a number"
    if parsed is None or not math.isfinite(parsed) or (whole and not parsed.is_integer()):
        raise InvalidConfig(f"{component}: '{key}' must be {kind}, not {value!r}")
    if (minimum is not None and parsed < minimum) or (maximum is not None and parsed > maximum):
        bounds = (
            f"between {minimum:g} and {maximum:g}"
            if minimum is not None and maximum is not None
            else f"at least {minimum:g}"
            if minimum is not None
            else f"at most {maximum:g}"
        )
        raise InvalidConfig(f"{component}: '{key}' must be {bounds}, not {value!r}")
    if positive and parsed <= 0:
        raise InvalidConfig(f"{component}: '{key}' must be above 0, not {value!r}")
    return int(parsed) if whole else parsed


def flag(config: dict[str, Any], key: str, default: bool, component: str) -> bool:
    """`config[key]` as true or false; a string such as "false" means false, not true."""
    value = config.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidConfig(f"{component}: '{key}' must be true or false, not {value!r}")
