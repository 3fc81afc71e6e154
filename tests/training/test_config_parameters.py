"""config.yml component and policy parameters of the wrong type or out of range: training
stops with one error naming the component and the key, before any model is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from server.errors import InvalidProjectFile
from server.models.archive import read_archive, write_archive
from server.models.metadata import TRAINING_FINGERPRINT_KEY
from server.training.project import load_project
from server.training.train import TrainResult, _fingerprint, train
from server.training.validation import validate_project

DOMAIN = """
version: "3.1"
intents: [greet, bye]
responses:
  utter_greet: [{text: hi}]
  utter_bye: [{text: bye}]
"""

DATA = """
version: "3.1"
nlu:
- intent: greet
  examples: |
    - hello
    - hi there
- intent: bye
  examples: |
    - goodbye
    - see you
rules:
- rule: greet back
  steps:
  - intent: greet
  - action: utter_greet
"""

TOKENS = [{"name": "WhitespaceTokenizer"}, {"name": "CountVectorsFeaturizer"}]


def _train_config(tmp_path: Path, config: str) -> TrainResult:
    """Trains the small project with `config` as config.yml's text."""
    (tmp_path / "config.yml").write_text(config)
    (tmp_path / "domain.yml").write_text(DOMAIN)
    (tmp_path / "data.yml").write_text(DATA)
    return train(
        tmp_path / "config.yml",
        tmp_path / "domain.yml",
        [tmp_path / "data.yml"],
        tmp_path / "models",
        force=True,
    )


def _train(tmp_path: Path, pipeline: list[dict], policies: list[dict]) -> Path:
    config = {"language": "en", "pipeline": pipeline, "policies": policies}
    return _train_config(tmp_path, yaml.safe_dump(config)).path


NLU_CASES = [
    ({"name": "FallbackClassifier", "ambiguity_threshold": "x"}, "'ambiguity_threshold'"),
    ({"name": "FallbackClassifier", "threshold": 2}, "'threshold' must be between 0 and 1"),
    # Before: min_df "x" was a TypeError traceback; min_df -1, max_df 0 and max_features "x"
    # trained a model as if they were not there.
    # Before: trained as if 'features' were not there (Rasa refuses it).
    ({"name": "LexicalSyntacticFeaturizer", "features": [["bogus"]]}, "unknown feature 'bogus'"),
    ({"name": "LexicalSyntacticFeaturizer", "features": ["low"]}, "must be a list of lists"),
    ({"name": "CountVectorsFeaturizer", "min_df": "x"}, "'min_df' must be a whole number"),
    ({"name": "CountVectorsFeaturizer", "min_df": -1}, "'min_df' must be at least 0"),
    ({"name": "CountVectorsFeaturizer", "min_df": 1.5}, "'min_df' must be between 0 and 1"),
    ({"name": "CountVectorsFeaturizer", "max_df": 0}, "'max_df' (0) keeps fewer documents"),
    ({"name": "CountVectorsFeaturizer", "max_features": "x"}, "'max_features' must be a whole"),
    ({"name": "CountVectorsFeaturizer", "max_features": 0}, "'max_features' must be at least"),
    # An integer no float holds: before, OverflowError, a traceback (a 500 from the API).
    ({"name": "CountVectorsFeaturizer", "max_features": 10**400}, "'max_features' must be a"),
    ({"name": "CountVectorsFeaturizer", "OOV_words": "abc"}, "'OOV_words' must be a list of"),
    ({"name": "CountVectorsFeaturizer", "min_ngram": "x"}, "'min_ngram' must be a whole"),
    ({"name": "CountVectorsFeaturizer", "lowercase": "maybe"}, "'lowercase' must be true"),
    ({"name": "DIETClassifier", "ranking_length": "x"}, "'ranking_length'"),
    ({"name": "CRFEntityExtractor", "max_iterations": "x"}, "'max_iterations'"),
    ({"name": "CRFEntityExtractor", "L1_c": "x"}, "'L1_c' must be a number"),
    # Before: an unknown crfsuite algorithm was silently L-BFGS.
    ({"name": "CRFEntityExtractor", "algorithm": "sgd"}, "algorithm must be one of lbfgs"),
    ({"name": "LogisticRegressionClassifier", "C": -1}, "'C' must be above 0"),
    ({"name": "SklearnIntentClassifier", "C": "x"}, "'C' must be a number"),
    ({"name": "RegexFeaturizer", "case_sensitive": "x"}, "'case_sensitive' must be true"),
    ({"name": "DucklingEntityExtractor", "timeout": "x"}, "'timeout' must be a number"),
    # Before: a TypeError traceback (a 500 from POST /model/train).
    ({"name": "DucklingEntityExtractor", "dimensions": 5}, "'dimensions' must be a list of"),
    ({"name": "DucklingEntityExtractor", "dimensions": [["time"]]}, "'dimensions' must be"),
    # Before: ValueError and TypeError tracebacks.
    ({"name": "DenseFeaturizer", "weight": "x"}, "'weight' must be a number"),
    ({"name": "DenseFeaturizer", "threads": [1]}, "'threads' must be a whole number"),
    # Before: 100,000 onnxruntime threads asked for (10**10: a TypeError traceback).
    ({"name": "DenseFeaturizer", "threads": 100_000}, "'threads' must be between 1 and 64"),
    ({"name": "DenseFeaturizer", "train_threads": 10**10}, "'train_threads' must be between"),
    ({"name": "StaticEmbeddingFeaturizer", "train_threads": 65}, "between 1 and 64"),
    ({"name": "TeacherMapFeaturizer", "train_threads": 65}, "between 1 and 64"),
    ({"name": "StaticEmbeddingFeaturizer", "weight": "x"}, "'weight' must be a number"),
    ({"name": "StaticEmbeddingFeaturizer", "common_tokens": "x"}, "'common_tokens' must be"),
    ({"name": "StaticEmbeddingFeaturizer", "dimensions": [1]}, "'dimensions' must be a whole"),
    ({"name": "StaticEmbeddingFeaturizer", "sentences": -1}, "'sentences' must be at least 0"),
]


@pytest.mark.parametrize(("component", "expected"), NLU_CASES, ids=lambda c: str(c)[:40])
def test_a_bad_component_parameter_names_component_and_key(
    tmp_path: Path, component: dict, expected: str
) -> None:
    # Before: a ValueError traceback from float()/int() (a 500 from POST /model/train), or,
    # for threshold: 2, a model that answered nlu_fallback to every message.
    with pytest.raises(InvalidProjectFile) as error:
        _train(tmp_path, [*TOKENS, component], [{"name": "RulePolicy"}])
    assert error.value.filename == str(tmp_path / "config.yml")
    assert error.value.reason.startswith(f"{component['name']}: ")
    assert expected in str(error.value)
    assert not (tmp_path / "models").exists()


POLICY_CASES = [
    ({"name": "MemoizationPolicy", "priority": "high"}, "'priority' must be a whole number"),
    ({"name": "MemoizationPolicy", "max_history": 1.5}, "'max_history' must be a whole"),
    ({"name": "RulePolicy", "core_fallback_threshold": None}, "'core_fallback_threshold'"),
    ({"name": "RulePolicy", "core_fallback_threshold": "x"}, "'core_fallback_threshold'"),
    ({"name": "RulePolicy", "core_fallback_threshold": 2}, "between 0 and 1"),
    ({"name": "RulePolicy", "enable_fallback_prediction": "x"}, "must be true or false"),
    ({"name": "RulePolicy", "core_fallback_action_name": 3}, "must be an action name"),
    ({"name": "TEDPolicy", "max_history": True}, "'max_history' must be a whole number"),
]


@pytest.mark.parametrize(("policy", "expected"), POLICY_CASES, ids=lambda c: str(c)[:40])
def test_a_bad_policy_parameter_names_policy_and_key(
    tmp_path: Path, policy: dict, expected: str
) -> None:
    # Before: core_fallback_threshold null or "x" trained, then every turn that reached the
    # fallback failed with a TypeError; a string priority was a ValueError traceback;
    # max_history 1.5 quietly became 1.
    with pytest.raises(InvalidProjectFile) as error:
        _train(tmp_path, TOKENS, [policy])
    assert error.value.filename == str(tmp_path / "config.yml")
    assert error.value.reason.startswith(f"{policy['name']}: ")
    assert expected in str(error.value)


def test_numbers_and_flags_from_environment_variables_still_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALLBACK", "0.4")
    monkeypatch.setenv("CASE", "false")
    result = _train_config(
        tmp_path,
        "language: en\npipeline:\n- name: WhitespaceTokenizer\n"
        "- name: RegexFeaturizer\n  case_sensitive: ${CASE}\n"
        "- name: CountVectorsFeaturizer\n- name: LogisticRegressionClassifier\n"
        "- name: FallbackClassifier\n  threshold: ${FALLBACK}\n"
        "policies:\n- name: RulePolicy\n  core_fallback_threshold: ${FALLBACK}\n",
    )
    assert result.path.exists()


@pytest.mark.parametrize("recipe", ["graph.v1", "defualt.v1"])
def test_a_recipe_other_than_default_names_config_and_line(tmp_path: Path, recipe: str) -> None:
    # Before: graph.v1 (or a typo) trained the pipeline and policies as if default.v1, and
    # with graph.v1's train_schema instead of them, a model with no NLU and no policies.
    with pytest.raises(InvalidProjectFile) as error:
        _train_config(tmp_path, f"recipe: {recipe}\nlanguage: en\n")
    assert (error.value.filename, error.value.line) == (str(tmp_path / "config.yml"), 1)
    assert f"recipe '{recipe}' is not supported" in str(error.value)


def test_options_we_do_not_apply_and_a_repeated_classifier_are_warned_about(tmp_path: Path) -> None:
    # Before: both trained without a word; the first DIETClassifier was trained for nothing.
    result = _train_config(
        tmp_path,
        "language: en\npipeline:\n- name: WhitespaceTokenizer\n  token_pattern: (?u)\\b\\w+\\b\n"
        "- name: CountVectorsFeaturizer\n  OOV_token: oov\n"
        "- name: DIETClassifier\n- name: DIETClassifier\n"
        "policies:\n- name: RulePolicy\n",
    )
    assert any("DIETClassifier is listed 2 times" in w for w in result.warnings)
    assert any("'token_pattern' is not applied" in w for w in result.warnings)
    assert any("'OOV_token' and 'OOV_words' are not applied" in w for w in result.warnings)


def test_a_token_pattern_that_is_no_regex_names_tokenizer_and_key(tmp_path: Path) -> None:
    # Before: it trained (Rasa fails with a re.error traceback).
    tokenizer = {"name": "WhitespaceTokenizer", "token_pattern": "(("}
    with pytest.raises(InvalidProjectFile) as error:
        _train(tmp_path, [tokenizer, TOKENS[1]], [{"name": "RulePolicy"}])
    assert error.value.filename == str(tmp_path / "config.yml")
    assert "WhitespaceTokenizer: 'token_pattern' '((' is not a valid regex" in str(error.value)


def test_an_archive_trained_from_a_setting_now_refused_is_not_reused(tmp_path: Path) -> None:
    """After an upgrade the server refuses such an archive and says to retrain; `botserver
    train` then refuses the setting instead of answering that nothing changed."""
    rule = {"name": "RulePolicy", "core_fallback_threshold": 2}
    refused = {"language": "en", "pipeline": TOKENS, "policies": [rule]}
    accepted = {**refused, "policies": [{**rule, "core_fallback_threshold": 0.3}]}
    trained = _train_config(tmp_path, yaml.safe_dump(accepted)).path
    # What an older botserver, whose checks let the value through, wrote for this config.
    (tmp_path / "config.yml").write_text(yaml.safe_dump(refused))
    project = load_project(
        tmp_path / "config.yml", tmp_path / "domain.yml", [tmp_path / "data.yml"]
    )
    metadata = read_archive(trained, tmp_path / "x")
    metadata[TRAINING_FINGERPRINT_KEY] = _fingerprint(project)
    trained.unlink()
    write_archive(tmp_path / "x" / "components", metadata, tmp_path / "models", "older")

    with pytest.raises(InvalidProjectFile, match="'core_fallback_threshold' must be between"):
        train(
            tmp_path / "config.yml",
            tmp_path / "domain.yml",
            [tmp_path / "data.yml"],
            tmp_path / "models",
        )


CONFIG_LINE_CASES = [
    # (the item written at line 6 of config.yml, the section, what the error says)
    ("- name: FooBarComponent", "pipeline", "Unknown NLU component 'FooBarComponent'"),
    ("- name: my_module.MyComponent", "pipeline", "is a custom component: botserver never"),
    ("- name: FallbackClassifier\n  threshold: high", "pipeline", "'threshold' must be a"),
    ("- name: DIETClassifier\n- name: CountVectorsFeaturizer", "pipeline", "comes before every"),
    ("- name: FooPolicy", "policies", "the policy 'FooPolicy' is not provided by botserver"),
    ("- name: my_module.MemoizationPolicy", "policies", "is a custom policy: botserver never"),
    ("- name: MemoizationPolicy\n  max_history: -3", "policies", "'max_history' must be at"),
    # Before: any `rasa.<anything>.X` trained as X. Rasa 3.6 imports the path, so only the
    # module that holds X names it.
    (
        "- name: rasa.nlu.classifiers.DIETClassifier",
        "pipeline",
        "Unknown NLU component 'rasa.nlu.classifiers.DIETClassifier' in the pipeline (item 2): "
        "Rasa's DIETClassifier is rasa.nlu.classifiers.diet_classifier.DIETClassifier (or "
        "name it DIETClassifier). Known components: ",
    ),
    ("- name: rasa.anything.WhitespaceTokenizer", "pipeline", "Unknown NLU component 'rasa.any"),
    # One of botserver's own components, which Rasa has not.
    ("- name: rasa.nlu.classifiers.IntentClassifier", "pipeline", "Unknown NLU component 'ra"),
    (
        "- name: rasa.core.policies.TEDPolicy",
        "policies",
        "the policy 'rasa.core.policies.TEDPolicy' is not provided by botserver: Rasa's "
        "TEDPolicy is rasa.core.policies.ted_policy.TEDPolicy (or name it TEDPolicy); use one of",
    ),
    ("- name: rasa.x.RulePolicy", "policies", "the policy 'rasa.x.RulePolicy' is not provided"),
    ("- name: rasa.core.policies.ml.MLPolicy", "policies", "the policy 'rasa.core.policies.ml"),
]


@pytest.mark.parametrize(("item", "section", "expected"), CONFIG_LINE_CASES)
def test_a_refused_component_or_policy_names_its_line(
    tmp_path: Path, item: str, section: str, expected: str
) -> None:
    # Before: "config.yml: Unknown NLU component ..." without a line (and "config.yml: config.yml
    # names the policy ..."); a custom policy path such as my_module.MemoizationPolicy trained
    # as our MemoizationPolicy without a word; DIETClassifier before the featurizers was a
    # ValueError traceback.
    other = "policies" if section == "pipeline" else "pipeline"
    fillers = {"pipeline": "- name: WhitespaceTokenizer", "policies": "- name: RulePolicy"}
    config = f"language: en\n{other}:\n{fillers[other]}\n{section}:\n{fillers[section]}\n{item}\n"
    with pytest.raises(InvalidProjectFile) as error:
        _train_config(tmp_path, config)
    assert (error.value.filename, error.value.line) == (str(tmp_path / "config.yml"), 6)
    assert expected in error.value.reason
    assert not (tmp_path / "models").exists()


def test_rasa_module_paths_of_rasa_components_train(tmp_path: Path) -> None:
    # Rasa accepts a component or policy by its module path. Before: "Unknown NLU component
    # 'rasa.nlu.tokenizers.whitespace_tokenizer.WhitespaceTokenizer'".
    _train(
        tmp_path,
        [
            {"name": "rasa.nlu.tokenizers.whitespace_tokenizer.WhitespaceTokenizer"},
            {
                "name": "rasa.nlu.featurizers.sparse_featurizer.count_vectors_featurizer."
                "CountVectorsFeaturizer"
            },
            {"name": "rasa.nlu.classifiers.diet_classifier.DIETClassifier"},
            # Rasa 3's registry of its components, which imports each of them.
            {"name": "rasa.engine.recipes.default_components.EntitySynonymMapper"},
        ],
        [
            {"name": "rasa.core.policies.rule_policy.RulePolicy"},
            {"name": "rasa.core.policies.memoization.AugmentedMemoizationPolicy"},
            {"name": "rasa.core.policies.unexpected_intent_policy.UnexpecTEDIntentPolicy"},
        ],
    )
    assert len(list((tmp_path / "models").glob("*.tar.gz"))) == 1


@pytest.mark.parametrize("key", ["1", "true", "null", "1.5"])
@pytest.mark.parametrize("section", ["pipeline", "policies"])
def test_an_option_named_by_no_text_names_config_and_line(
    tmp_path: Path, section: str, key: str
) -> None:
    # Before: `data validate` and `train` stopped on a TypeError traceback ("keywords must be
    # strings" for a policy, a sort of the fingerprint's keys for a component).
    fillers = {"pipeline": "- name: WhitespaceTokenizer", "policies": "- name: RulePolicy"}
    other = "policies" if section == "pipeline" else "pipeline"
    config = (
        f"language: en\n{other}:\n{fillers[other]}\n{section}:\n{fillers[section]}\n  {key}: x\n"
    )
    with pytest.raises(InvalidProjectFile) as error:
        _train_config(tmp_path, config)
    assert (error.value.filename, error.value.line) == (str(tmp_path / "config.yml"), 6)
    assert f"the option {key} of " in error.value.reason
    assert "is not a name" in error.value.reason
    report = validate_project(tmp_path / "config.yml", tmp_path / "domain.yml", [tmp_path])
    assert report.errors == [str(error.value)]
