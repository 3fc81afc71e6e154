"""Policy options in config.yml that botserver does not know are named at training, so a
typo (`max_histroy`) does not silently train with the default."""

from __future__ import annotations

from server.dialogue.policies.ensemble import PolicyEnsemble


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
