"""Options in config.yml that botserver does not know are named at training, so a typo
(`max_histroy`, `max_ngrma`) does not silently train with the default."""

from __future__ import annotations

import logging

import pytest

from server.dialogue.policies.ensemble import PolicyEnsemble
from server.nlu.pipeline import NLUPipeline


def _option_warnings(policies: list[dict[str, object]]) -> list[str]:
    return [w for w in PolicyEnsemble.from_config(policies).warnings if "the option" in w]


def test_a_misspelt_option_is_named_with_the_option_meant() -> None:
    warnings = _option_warnings(
        [
            {"name": "MemoizationPolicy", "max_histroy": 3},
            {"name": "RulePolicy", "core_fallback_treshold": 0.4},
        ]
    )
    assert warnings == [
        "MemoizationPolicy: the option 'max_histroy' is unknown and ignored; "
        "did you mean 'max_history'?",
        "RulePolicy: the option 'core_fallback_treshold' is unknown and ignored; "
        "did you mean 'core_fallback_threshold'?",
    ]


def test_an_unknown_option_of_our_own_policy_lists_the_known_ones() -> None:
    (warning,) = _option_warnings([{"name": "MemoizationPolicy", "lookback": 3}])
    assert "'lookback' is unknown and ignored" in warning
    assert "known: priority, max_history" in warning


def test_rasa_options_are_taken_without_a_word() -> None:
    """TEDPolicy's many options (epochs...) and the Rasa-only flags of the memoization and
    rule policies are valid Rasa configuration: no warning about them."""
    assert (
        _option_warnings(
            [
                {"name": "MemoizationPolicy", "max_history": 3, "priority": 4},
                {"name": "RulePolicy", "use_nlu_confidence_as_score": True},
                {"name": "TEDPolicy", "epochs": 100, "constrain_similarities": True},
                {"name": "AugmentedMemoizationPolicy", "enable_feature_string_compression": 1},
            ]
        )
        == []
    )


def test_a_near_miss_on_tedpolicy_is_named() -> None:
    (warning,) = _option_warnings([{"name": "TEDPolicy", "max_histry": 3}])
    assert warning.startswith("TEDPolicy: the option 'max_histry'")
    assert "did you mean 'max_history'?" in warning


def _pipeline_option_warnings(load_bot, pipeline: list[dict[str, object]]) -> list[str]:
    trained = NLUPipeline.train(load_bot("moodbot"), pipeline)
    return [w for w in trained.warnings if "the option" in w]


def test_a_misspelt_component_option_is_named_and_logged(
    load_bot, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline: list[dict[str, object]] = [
        {"name": "WhitespaceTokenizer"},
        {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "max_ngrma": 4},
        {"name": "DIETClassifier", "epochs": 100, "temprature": 2},
    ]
    with caplog.at_level(logging.WARNING):
        warnings = _pipeline_option_warnings(load_bot, pipeline)
    assert warnings == [
        "CountVectorsFeaturizer: the option 'max_ngrma' is unknown and ignored; "
        "did you mean 'max_ngram'?",
        "DIETClassifier: the option 'temprature' is unknown and ignored; "
        "did you mean 'temperature'?",
    ]
    assert all(w in caplog.text for w in warnings)


def test_rasa_component_options_are_taken_without_a_word(load_bot) -> None:
    """Rasa's default pipeline, with DIET's and the ResponseSelector's training options that
    change nothing in their stand-ins, and the options the planner reads."""
    pipeline: list[dict[str, object]] = [
        {"name": "WhitespaceTokenizer", "intent_tokenization_flag": False},
        {"name": "RegexFeaturizer"},
        {"name": "LexicalSyntacticFeaturizer"},
        {"name": "CountVectorsFeaturizer"},
        {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4},
        {"name": "DIETClassifier", "epochs": 100, "constrain_similarities": True},
        {"name": "DIETClassifier", "entity_recognition": False, "intent_classification": True},
        {"name": "EntitySynonymMapper"},
        {"name": "FallbackClassifier", "threshold": 0.3, "ambiguity_threshold": 0.1},
    ]
    assert _pipeline_option_warnings(load_bot, pipeline) == []
