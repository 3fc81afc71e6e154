"""state_key is byte for byte json.dumps(sort_keys, compact): archives' lookups hold it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.dialogue.policies.featurization import key_of, state_identity, state_key, state_text

STATES: list[list[Any]] = [
    [{}, {"user": {"intent": "greet", "entities": ("name",)}, "prev_action": {"action_name": "x"}}],
    [{"slots": {"b": (1.0,), "a": (0.0, 1.0), "c": (0.3333333333333333,)}}],
    [{"slots": {"tiny": (1e-05,), "small": (0.0001,), "huge": (1e16,), "neg": (-0.0,)}}],
    [{"slots": {"nan": (float("nan"),), "inf": (float("inf"),), "none": None}}],
    [{"user": {"text": 'Grüß dich \x7f \x00 "quoted" \\ /'}}],
    [{"slots": {"big": (2**70,)}}],
    [{"user": {1: "int key"}}],
]


@pytest.mark.parametrize("states", STATES)
def test_state_key_is_json_dumps(states: list[Any]) -> None:
    assert state_key(states) == json.dumps(states, sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize("states", STATES)
def test_state_texts_joined_are_the_state_key(states: list[Any]) -> None:
    assert key_of([state_text(state) for state in states]) == state_key(states)


def test_state_identities_are_equal_exactly_when_the_states_are() -> None:
    states = [state for group in STATES for state in group]
    states += [
        {"user": {"intent": "greet", "entities": ["name"]}},
        {"user": {"entities": ["name"], "intent": "greet"}},  # the same, other key order
        {"user": {"intent": "greet", "entities": ["name", "place"]}},
        {"user": {"intent": "greet"}, "slots": {"a": "set"}},
    ]
    for a in states:
        for b in states:
            assert (state_identity(a) == state_identity(b)) == (a == b), (a, b)
