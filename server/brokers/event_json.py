"""The JSON texts of events the brokers send, byte for byte `json.dumps`'s, from its C encoder
made once: `json.dumps` makes that encoder again at each call (and a JSONEncoder first when
given arguments), about 40 % of its time for an event of a few hundred bytes."""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

# Checked at import against `json.dumps` (a Python whose C encoder takes other arguments, or
# has none, keeps `json.dumps`).
_SAMPLE = {"é": [1.5, 1e16, float("nan"), None, True, 2**70], "a": {"b": "\u2028\x7f"}}


def _made_once(**settings: Any) -> Callable[[Any], str]:
    """`json.dumps(value, **settings)`, without its check for cycles (an event, read from
    JSON, holds none: one would recurse until RecursionError instead of a ValueError)."""

    def dumps(value: Any) -> str:
        return json.dumps(value, **settings)

    encoder = json.JSONEncoder(**settings)
    try:
        encode = c_make_encoder(
            None,  # the markers of the cycle check: none
            encoder.default,
            encode_basestring_ascii,
            None,  # indent
            encoder.key_separator,
            encoder.item_separator,
            encoder.sort_keys,
            encoder.skipkeys,
            encoder.allow_nan,
        )

        def text(value: Any) -> str:
            return "".join(encode(value, 0))

        if text(_SAMPLE) == dumps(_SAMPLE):
            return text
    except TypeError:  # no C encoder (None), or one of another signature
        pass
    return dumps


# What Rasa's brokers send: `json.dumps(event)`.
rasa_text = _made_once()
# An event's content as its message id hashes it: keys sorted, no spaces, any value JSON has
# no type for as its str().
canonical_text = _made_once(sort_keys=True, separators=(",", ":"), default=str)
