"""Rasa's module paths of its NLU components and policies, by which a config.yml may name
them (`rasa.nlu.classifiers.diet_classifier.DIETClassifier`): only the module that holds a
class names it, as Rasa imports the path."""

from __future__ import annotations

# Where Rasa 3.6 defines each of its components and policies.
_RASA_3_MODULES = {
    "WhitespaceTokenizer": "rasa.nlu.tokenizers.whitespace_tokenizer",
    "SpacyTokenizer": "rasa.nlu.tokenizers.spacy_tokenizer",
    "MitieTokenizer": "rasa.nlu.tokenizers.mitie_tokenizer",
    "JiebaTokenizer": "rasa.nlu.tokenizers.jieba_tokenizer",
    "CountVectorsFeaturizer": "rasa.nlu.featurizers.sparse_featurizer.count_vectors_featurizer",
    "LexicalSyntacticFeaturizer": (
        "rasa.nlu.featurizers.sparse_featurizer.lexical_syntactic_featurizer"
    ),
    "RegexFeaturizer": "rasa.nlu.featurizers.sparse_featurizer.regex_featurizer",
    "ConveRTFeaturizer": "rasa.nlu.featurizers.dense_featurizer.convert_featurizer",
    "LanguageModelFeaturizer": "rasa.nlu.featurizers.dense_featurizer.lm_featurizer",
    "MitieFeaturizer": "rasa.nlu.featurizers.dense_featurizer.mitie_featurizer",
    "SpacyFeaturizer": "rasa.nlu.featurizers.dense_featurizer.spacy_featurizer",
    "DIETClassifier": "rasa.nlu.classifiers.diet_classifier",
    "FallbackClassifier": "rasa.nlu.classifiers.fallback_classifier",
    "KeywordIntentClassifier": "rasa.nlu.classifiers.keyword_intent_classifier",
    "LogisticRegressionClassifier": "rasa.nlu.classifiers.logistic_regression_classifier",
    "MitieIntentClassifier": "rasa.nlu.classifiers.mitie_intent_classifier",
    "SklearnIntentClassifier": "rasa.nlu.classifiers.sklearn_intent_classifier",
    "CRFEntityExtractor": "rasa.nlu.extractors.crf_entity_extractor",
    "DucklingEntityExtractor": "rasa.nlu.extractors.duckling_entity_extractor",
    "EntitySynonymMapper": "rasa.nlu.extractors.entity_synonyms",
    "MitieEntityExtractor": "rasa.nlu.extractors.mitie_entity_extractor",
    "RegexEntityExtractor": "rasa.nlu.extractors.regex_entity_extractor",
    "SpacyEntityExtractor": "rasa.nlu.extractors.spacy_entity_extractor",
    "ResponseSelector": "rasa.nlu.selectors.response_selector",
    "MitieNLP": "rasa.nlu.utils.mitie_utils",
    "SpacyNLP": "rasa.nlu.utils.spacy_utils",
    "MemoizationPolicy": "rasa.core.policies.memoization",
    "AugmentedMemoizationPolicy": "rasa.core.policies.memoization",
    "RulePolicy": "rasa.core.policies.rule_policy",
    "TEDPolicy": "rasa.core.policies.ted_policy",
    "UnexpecTEDIntentPolicy": "rasa.core.policies.unexpected_intent_policy",
}
# Rasa 2's components that Rasa 3 dropped and botserver still reads by name: their Rasa 2
# modules.
_RASA_2_MODULES = {
    "ConveRTTokenizer": "rasa.nlu.tokenizers.convert_tokenizer",
    "LanguageModelTokenizer": "rasa.nlu.tokenizers.lm_tokenizer",
    "HFTransformersNLP": "rasa.nlu.utils.hugging_face.hf_transformers",
    "DucklingHTTPExtractor": "rasa.nlu.extractors.duckling_http_extractor",
    "EmbeddingIntentClassifier": "rasa.nlu.classifiers.embedding_intent_classifier",
}
_MODULES = {**_RASA_3_MODULES, **_RASA_2_MODULES}
# Rasa 3's registry of its components imports each of them, so Rasa finds them there too.
_REGISTRY_MODULE = "rasa.engine.recipes.default_components"


def is_rasa_path(name: str) -> bool:
    """Whether a config.yml `name` is written as one of Rasa's module paths."""
    return name.startswith("rasa.")


def rasa_class(path: str) -> str | None:
    """The class a Rasa module path names (`rasa.core.policies.ted_policy.TEDPolicy`:
    `TEDPolicy`) when the module is one Rasa holds that class in; None for any other."""
    module, _, name = path.rpartition(".")
    if module == _MODULES.get(name) or (module == _REGISTRY_MODULE and name in _RASA_3_MODULES):
        return name
    return None


def rasa_path_hint(path: str, known: set[str] | frozenset[str]) -> str:
    """For a Rasa path naming a class of `known` in a module Rasa does not hold it in, where
    Rasa has it (`Rasa's TEDPolicy is rasa.core.policies.ted_policy.TEDPolicy (or name it
    TEDPolicy)`); "" otherwise."""
    name = path.rpartition(".")[2]
    if name not in known or name not in _MODULES:
        return ""
    return f"Rasa's {name} is {_MODULES[name]}.{name} (or name it {name})"
