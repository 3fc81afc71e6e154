"""Training a project: what the user is told along the way."""

from __future__ import annotations

import logging
import re
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from server.dialogue.policies import ensemble
from server.dialogue.policies.ensemble import PolicyEnsemble
from server.errors import InvalidProjectFile, TrainingError
from server.models.archive import read_metadata
from server.training import train as train_module
from server.training.config_yaml import config_from_dict, read_config
from server.training.train import train, train_core
from server.training.validation import check_config

DOMAIN = """
version: "3.1"
intents: [greet, bye]
responses:
  utter_greet:
  - text: hello
  utter_bye:
  - text: bye
"""
STORIES = """
version: "3.1"
stories:
- story: greet
  steps:
  - intent: greet
  - action: utter_greet
- story: after nothing
  steps:
  - checkpoint: never_reached
  - intent: bye
  - action: utter_bye
rules:
- steps:
  - intent: bye
  - action: utter_bye
"""


def test_training_shows_what_rasa_warns_about_in_the_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "domain.yml").write_text(DOMAIN)
    (tmp_path / "config.yml").write_text(
        "policies:\n- name: RulePolicy\n- name: MemoizationPolicy\n"
    )
    stories = tmp_path / "stories.yml"
    stories.write_text(STORIES)
    with caplog.at_level(logging.WARNING):
        result = train(tmp_path / "config.yml", tmp_path / "domain.yml", [stories], tmp_path / "m")
    expected = [
        # the story's line (before: 11, its first step after the checkpoint)
        f"{stories}:8: story 'after nothing' starts from checkpoint 'never_reached' "
        "but no story ends with it (it is never reached, so not trained)",
        f"{stories}:14: an item under 'rules' has no 'rule' name; it is ignored "
        "(give it a 'rule:' key to train it)",
    ]
    for warning in expected:
        assert warning in result.warnings
        assert warning in caplog.text


def test_training_warns_of_story_steps_naming_what_the_domain_lacks(tmp_path: Path) -> None:
    (tmp_path / "domain.yml").write_text(DOMAIN)
    stories = tmp_path / "stories.yml"
    stories.write_text(
        'version: "3.1"\nstories:\n- story: typo\n  steps:\n  - intent: greet\n'
        "  - action: utter_greet\n  - intent: thanks\n  - action: utter_bye\n"
    )
    result = train(None, tmp_path / "domain.yml", [stories], tmp_path / "m")
    assert (
        f"{stories}:7: intent 'thanks' is used in story 'typo' but is not listed in the "
        "domain" in result.warnings
    )


@pytest.mark.parametrize("core_only", [False, True])
def test_training_stops_on_story_actions_the_domain_lacks(tmp_path: Path, core_only: bool) -> None:
    """As Rasa 3.6's training (`ActionNotFoundException: Cannot access action 'utter_gret'`):
    no policy can predict such an action. Before, botserver trained with a warning and the
    bot never followed that step (a typo's bot answered with its fallback)."""
    (tmp_path / "domain.yml").write_text(DOMAIN)
    stories = tmp_path / "stories.yml"
    stories.write_text(
        'version: "3.1"\nstories:\n- story: typo\n  steps:\n  - intent: greet\n'
        "  - action: utter_gret\nrules:\n- rule: bye\n  steps:\n  - intent: bye\n"
        "  - action: action_bye\n  - action: utter_gret\n"
    )
    trainer = train_core if core_only else train
    with pytest.raises(InvalidProjectFile) as info:
        trainer(None, tmp_path / "domain.yml", [stories], tmp_path / "m")
    assert str(info.value) == (
        f"{stories}:6: action 'utter_gret' is used in story 'typo' but is not listed in the "
        "domain (as a response, action or form) (and 1 other: 'action_bye'), so no policy "
        "can predict it and nothing was trained: add it to the domain, or correct the name"
    )
    assert not (tmp_path / "m").exists()


TYPOS = (
    'version: "3.1"\nstories:\n- story: typo\n  steps:\n  - intent: greet\n'
    "  - action: utter_gret\nrules:\n- rule: bye\n  steps:\n  - intent: bye\n"
    "  - action: action_bye\n  - action: utter_gret\n"
)


@pytest.mark.parametrize(
    ("policies", "refused"),
    [
        ("- name: MemoizationPolicy\n- name: AugmentedMemoizationPolicy\n", None),
        ("- name: RulePolicy\n  check_for_contradictions: false\n", None),
        ("- name: RulePolicy\n", "11: action 'action_bye' is used in rule 'bye'"),
        ("- name: UnexpecTEDIntentPolicy\n", "6: action 'utter_gret' is used in story 'typo'"),
        # Rasa's module paths, which Rasa reads as the policies they name (they trained)
        (
            "- name: rasa.core.policies.rule_policy.RulePolicy\n",
            "11: action 'action_bye' is used in rule 'bye'",
        ),
        (
            "- name: rasa.core.policies.ted_policy.TEDPolicy\n",
            "6: action 'utter_gret' is used in story 'typo'",
        ),
    ],
)
def test_story_actions_the_domain_lacks_stop_training_as_rasas_policies_do(
    tmp_path: Path, policies: str, refused: str | None
) -> None:
    """Rasa 3.6 trains such stories with memoization alone (only its TEDPolicy and
    UnexpecTEDIntentPolicy look up every action, its RulePolicy those rules run as it checks
    them for contradictions): a bot Rasa trains is trained, with a warning per action."""
    (tmp_path / "domain.yml").write_text(DOMAIN)
    (tmp_path / "config.yml").write_text(f"assistant_id: typos\npolicies:\n{policies}")
    stories = tmp_path / "stories.yml"
    stories.write_text(TYPOS)
    trainer = partial(train, tmp_path / "config.yml", tmp_path / "domain.yml", [stories])
    if refused is not None:
        with pytest.raises(InvalidProjectFile, match=f"^{re.escape(str(stories))}:{refused}"):
            trainer(tmp_path / "m")
        assert not (tmp_path / "m").exists()
        return
    result = trainer(tmp_path / "m")
    assert result.path.exists()
    assert sorted(w for w in result.warnings if "domain (as a response" in w) == [
        f"{stories}:11: action 'action_bye' is used in rule 'bye' but is not listed in the "
        "domain (as a response, action or form)",
        f"{stories}:6: action 'utter_gret' is used in story 'typo' but is not listed in the "
        "domain (as a response, action or form)",
    ]


def test_a_config_without_assistant_id_trains_a_model_with_a_random_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # As Rasa 3.5+: before, the model had no assistant_id, so its events carried none (Rasa's
    # carry the random name it makes up at training, with a warning to add the key).
    (tmp_path / "domain.yml").write_text(DOMAIN)
    (tmp_path / "config.yml").write_text("policies:\n- name: RulePolicy\n")
    stories = tmp_path / "stories.yml"
    stories.write_text(STORIES)
    with caplog.at_level(logging.WARNING):
        result = train(tmp_path / "config.yml", tmp_path / "domain.yml", [stories], tmp_path / "m")
    made_up = read_metadata(result.path)["assistant_id"]
    assert re.fullmatch(r"[a-z]+-[a-z]+", made_up)
    warning = next(w for w in result.warnings if "'assistant_id' key is missing" in w)
    assert warning in caplog.text
    # `data validate` says it in the same words, without the name it cannot know.
    (validated,) = [
        w for w in check_config(read_config(tmp_path / "config.yml")) if "assistant_id" in w
    ]
    assert warning == validated.replace("assistant_id.", f"assistant_id ('{made_up}' this time).")

    (tmp_path / "config.yml").write_text("assistant_id: shop-bot\npolicies:\n- name: RulePolicy\n")
    named = train(tmp_path / "config.yml", tmp_path / "domain.yml", [stories], tmp_path / "n")
    assert read_metadata(named.path)["assistant_id"] == "shop-bot"
    assert not any("assistant_id" in w for w in named.warnings)

    # `rasa init`'s placeholder is kept, as Rasa 3.6 keeps it, with Rasa's warning to replace it.
    config = "assistant_id: placeholder_default\npolicies:\n- name: RulePolicy\n"
    (tmp_path / "config.yml").write_text(config)
    placeholder = train(tmp_path / "config.yml", tmp_path / "domain.yml", [stories], tmp_path / "p")
    assert read_metadata(placeholder.path)["assistant_id"] == "placeholder_default"
    assert any("still the placeholder 'placeholder_default'" in w for w in placeholder.warnings)


def test_forms_without_a_rule_policy_stop_training_before_the_nlu_trains(tmp_path: Path) -> None:
    # As Rasa, which checks the policies against the domain before training anything: the
    # error came only once the NLU pipeline had trained (minutes on a large project).
    (tmp_path / "domain.yml").write_text(DOMAIN + "forms:\n  f_form:\n    required_slots: []\n")
    (tmp_path / "config.yml").write_text(
        "pipeline:\n- name: WhitespaceTokenizer\n- name: CountVectorsFeaturizer\n"
        "- name: IntentClassifier\npolicies:\n- name: MemoizationPolicy\n"
    )
    data = tmp_path / "data.yml"
    data.write_text(
        STORIES + "nlu:\n- intent: greet\n  examples: |\n    - hi\n    - hello\n"
        "- intent: bye\n  examples: |\n    - bye\n    - ciao\n"
    )
    said: list[str] = []
    with pytest.raises(TrainingError, match="have not added the 'RulePolicy'"):
        train(
            tmp_path / "config.yml",
            tmp_path / "domain.yml",
            [data],
            tmp_path / "m",
            progress=said.append,
        )
    assert not any(message.startswith("training NLU") for message in said), said
    assert not (tmp_path / "m").exists()


def test_a_training_builds_and_checks_the_policies_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the policies were built and checked against the domain's forms before the
    NLU trained, then built and checked again when they trained."""
    calls: list[str] = []
    check = ensemble.check_forms_have_rule_policy
    build = PolicyEnsemble.from_config.__func__  # type: ignore[attr-defined]

    def counted_check(*args: Any) -> None:
        calls.append("check")
        check(*args)

    def counted_build(cls: type[PolicyEnsemble], *args: Any) -> PolicyEnsemble:
        calls.append("build")
        return build(cls, *args)

    for module in (ensemble, train_module):
        monkeypatch.setattr(module, "check_forms_have_rule_policy", counted_check, raising=False)
    monkeypatch.setattr(PolicyEnsemble, "from_config", classmethod(counted_build))
    (tmp_path / "domain.yml").write_text(DOMAIN + "forms:\n  f_form:\n    required_slots: []\n")
    (tmp_path / "config.yml").write_text("policies:\n- name: RulePolicy\n")
    (tmp_path / "stories.yml").write_text(STORIES)
    result = train_core(
        tmp_path / "config.yml", tmp_path / "domain.yml", [tmp_path / "stories.yml"], tmp_path
    )
    assert result.path.exists()
    assert sorted(calls) == ["build", "check"]


def test_a_misspelt_config_section_is_named_at_training(tmp_path: Path) -> None:
    """Rasa's config schema takes any top-level key, and so did botserver: `polices:` trained
    the default policies without a word. A near miss of a key read is now a warning."""
    (tmp_path / "domain.yml").write_text(DOMAIN)
    (tmp_path / "config.yml").write_text(
        "assistant_id: bot\nlanguage: en\npipeline:\n- name: WhitespaceTokenizer\n"
        "- name: CountVectorsFeaturizer\n- name: IntentClassifier\n"
        "polices:\n- name: RulePolicy\nmy_own_key: 1\n"
    )
    data = tmp_path / "data.yml"
    data.write_text(
        STORIES + "nlu:\n- intent: greet\n  examples: |\n    - hi\n    - hello\n"
        "- intent: bye\n  examples: |\n    - bye\n    - ciao\n"
    )
    result = train(tmp_path / "config.yml", tmp_path / "domain.yml", [data], tmp_path / "m")
    config = tmp_path / "config.yml"
    said = [w for w in result.warnings if "unknown key" in w]
    assert said == [
        f"{config}:7: unknown key 'polices' is not read (nor by Rasa); did you mean "
        "'policies'? Without it, the default policies are trained",
    ]


def test_data_validate_names_a_misspelt_config_section_as_training_does() -> None:
    config = config_from_dict({"langauge": "de", "policies": [{"name": "RulePolicy"}]}, "c.yml")
    assert check_config(config, with_nlu=False)[0] == (
        "c.yml: unknown key 'langauge' is not read (nor by Rasa); did you mean 'language'? "
        "Without it, the language is English"
    )


def test_a_custom_payload_keyed_by_numbers_and_text_trains(tmp_path: Path) -> None:
    # YAML reads `1:` as a number and `null:` as None; JSON (the model's domain, an action
    # server, a channel) holds them as text. Before: a TypeError traceback from sorting the
    # keys for the training fingerprint.
    domain = (
        DOMAIN + "  utter_card:\n  - custom:\n      1: one\n      a: letter\n      null: none\n"
    )
    (tmp_path / "domain.yml").write_text(domain)
    (tmp_path / "config.yml").write_text("policies:\n- name: RulePolicy\n")
    stories = tmp_path / "stories.yml"
    stories.write_text(STORIES)
    result = train(tmp_path / "config.yml", tmp_path / "domain.yml", [stories], tmp_path / "m")
    card = read_metadata(result.path)["domain"]["responses"]["utter_card"]
    assert card == [{"custom": {"1": "one", "a": "letter", "null": "none"}}]
    again = train(tmp_path / "config.yml", tmp_path / "domain.yml", [stories], tmp_path / "m")
    assert again.skipped
