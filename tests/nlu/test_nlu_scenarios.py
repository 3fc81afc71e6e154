"""The intent classifier's scenario term (`scenario_weight`, `scenario_separator`): intents
named `scenario_intent` share their scenario's score (server/nlu/scenarios.py)."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.errors import InvalidConfig, ModelError
from server.nlu.pipeline import NLUPipeline
from server.nlu.scenarios import scenarios_of
from server.training.nlu_yaml import read_nlu_yaml

# "please ring" is in one sentence of each alarm intent, "jazz" in two of music_play's: each
# alarm intent alone has less evidence than music_play, the alarm scenario has more.
DATA = """
nlu:
- intent: alarm_set
  examples: |
    - set an alarm for six
    - wake me at seven
    - please ring tomorrow morning
- intent: alarm_query
  examples: |
    - which alarms are on
    - what time will you wake me
    - please ring list
- intent: alarm_remove
  examples: |
    - delete my alarm
    - cancel the wake up call
    - please ring no more
- intent: music_play
  examples: |
    - play some jazz
    - put on a song
    - play loud jazz now
- intent: music_query
  examples: |
    - what song is this
    - who sings this
    - name this tune
"""

PIPELINE: list[dict[str, Any]] = [
    {"name": "WhitespaceTokenizer"},
    {"name": "CountVectorsFeaturizer"},
]
TEXTS = ("please ring jazz", "please jazz", "wake me", "", "zzz")


def _train(data: str = DATA, **options: Any) -> NLUPipeline:
    return NLUPipeline.train(
        read_nlu_yaml(data), PIPELINE + [{"name": "DIETClassifier", **options}]
    )


def _intent(pipeline: NLUPipeline, text: str) -> str:
    return pipeline.parse(text)["intent"]["name"]


def test_the_scenario_of_the_message_decides_between_intents_of_different_scenarios():
    assert _intent(_train(), "please ring jazz") == "music_play"
    assert _intent(_train(scenario_weight=0), "please ring jazz") == "music_play"
    with_scenarios = _train(scenario_weight=1)
    assert _intent(with_scenarios, "please ring jazz").startswith("alarm_")
    # Where one intent has the evidence of its own scenario, it keeps it.
    assert _intent(with_scenarios, "please jazz") == "music_play"


def test_names_without_shared_scenarios_leave_the_classifier_as_it_is(tmp_path: Path):
    # Renamed so that no two intents share the part before "_": no hierarchy, no term.
    flat = DATA.replace("alarm_query", "query_alarm").replace("alarm_remove", "remove_alarm")
    flat = flat.replace("music_query", "query_music")
    plain, weighted = _train(flat), _train(flat, scenario_weight=1)
    for text in TEXTS:
        assert weighted.parse(text) == plain.parse(text)
    weighted.persist(tmp_path)
    assert not list(tmp_path.rglob("*scenario_*"))


def test_another_separator_names_other_scenarios():
    dotted = DATA.replace("alarm_", "alarm.").replace("music_", "music.")
    assert _intent(_train(dotted, scenario_weight=1), "please ring jazz") == "music.play"
    separated = _train(dotted, scenario_weight=1, scenario_separator=".")
    assert _intent(separated, "please ring jazz").startswith("alarm.")


def test_scenarios_of_needs_most_intents_to_share_a_scenario():
    assert scenarios_of(["a_x", "a_y", "b_x", "b_y"], "_") == ["a", "a", "b", "b"]
    assert scenarios_of(["a_x", "a_y", "a_z"], "_") is None  # one scenario
    assert scenarios_of(["a_x", "a_y", "b_x", "c_x"], "_") is None  # half shared
    assert scenarios_of(["a_x", "a_y", "a_z", "b_x"], "_") == ["a", "a", "a", "b"]  # 3 of 4
    assert scenarios_of(["a_x", "a_y", "b_x", "c_x", "d_x"], "_") is None  # 2 of 5
    assert scenarios_of(["ax", "ay", "bx"], "_") is None  # no separator: each its own


def test_the_scenario_term_survives_persistence_as_npy_and_json(tmp_path: Path):
    trained = _train(scenario_weight=1, neighbour_weight=0.3)
    trained.persist(tmp_path)
    assert list(tmp_path.rglob("*scenario_weights.npy"))
    reloaded = NLUPipeline.load(tmp_path)
    for text in TEXTS:
        assert reloaded.parse(text) == trained.parse(text)


def test_a_damaged_scenario_state_fails_loading_with_a_clear_error(tmp_path: Path):
    _train(scenario_weight=1).persist(tmp_path)
    (weights,) = tmp_path.rglob("*scenario_weights.npy")
    np.save(weights, np.zeros((3, 2), np.float32), allow_pickle=False)
    with pytest.raises(ModelError, match="scenario"):
        NLUPipeline.load(tmp_path)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"scenario_weight": -1}, "scenario_weight"),
        ({"scenario_weight": "high"}, "scenario_weight"),
        ({"scenario_weight": 1, "scenario_separator": ""}, "scenario_separator"),
        ({"scenario_weight": 1, "scenario_separator": 3}, "scenario_separator"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], key: str):
    with pytest.raises(InvalidConfig, match=key):
        _train(**options)


def test_a_weight_too_large_for_the_scores_is_refused_in_config_and_archive(tmp_path: Path):
    # 1e308 is a finite number, but the blended scores overflow: parses answered NaN
    # confidences, which JSON cannot carry (a 500 on every parse).
    with pytest.raises(InvalidConfig, match="scenario_weight"):
        _train(scenario_weight=1e308)
    _train(scenario_weight=1).persist(tmp_path)
    manifest = tmp_path / "pipeline.json"
    manifest.write_text(
        manifest.read_text().replace('"scenario_weight": 1.0', '"scenario_weight": 1e308')
    )
    with pytest.raises(ModelError, match="scenario weight"):
        NLUPipeline.load(tmp_path)
