"""NLUPipeline: builds the components of a config.yml `pipeline:`, trains them, parses
messages into Rasa's parse JSON, and persists/loads learned state as data only."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

from server.errors import InvalidConfig, ModelError, about_config_item
from server.nlu.message import Message
from server.nlu.regex_message import parse_regex_message
from server.nlu.registry import (
    COMPONENTS,
    FEATURIZERS,
    Plan,
    Step,
    component_class,
    plan_pipeline,
)
from server.nlu.response_selector import DEFAULT_SELECTOR
from server.nlu.state_files import read_json
from server.nlu.training_data import NLUTrainingData
from server.unknown_options import ReadKeys

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "pipeline.json"

# Rasa's default pipeline, used when config.yml leaves `pipeline:` empty.
DEFAULT_PIPELINE: list[dict[str, Any]] = [
    {"name": "WhitespaceTokenizer"},
    {"name": "RegexFeaturizer"},
    {"name": "LexicalSyntacticFeaturizer"},
    {"name": "CountVectorsFeaturizer"},
    {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4},
    {"name": "DIETClassifier", "epochs": 100, "constrain_similarities": True},
    {"name": "EntitySynonymMapper"},
    {"name": "ResponseSelector", "epochs": 100, "constrain_similarities": True},
    {"name": "FallbackClassifier", "threshold": 0.3, "ambiguity_threshold": 0.1},
]


# Options read when the pipeline is planned, not by a component.
_PLANNER_OPTIONS = ("intent_classification", "entity_recognition")

# Components whose processing waits on a server or runs a neural network.
_BLOCKING_COMPONENTS = frozenset({"DucklingEntityExtractor", "DenseFeaturizer"})


def _plan_for(data: NLUTrainingData | None, pipeline: list[dict]) -> Plan:
    """The components to build for config.yml's `pipeline` and the warnings about it."""
    plan = plan_pipeline(pipeline or DEFAULT_PIPELINE)
    mapper = any(s.key == "EntitySynonymMapper" for s in plan.steps)
    if data is not None and data.synonyms and not mapper:
        # As Rasa warns: else the synonyms are read and silently never applied.
        plan.warnings.append(
            "You have defined synonyms in your training data, but your NLU configuration "
            "does not include an 'EntitySynonymMapper'. To map synonyms, add an "
            "'EntitySynonymMapper' to your configuration."
        )
    return plan


class NLUPipeline:
    """A trained pipeline. `parse` is thread-safe and allocation-light."""

    def __init__(
        self,
        components: list[tuple[str, Any]],
        language: str,
        warnings: list[str],
        entities: list[str],
    ):
        self._components = components  # (registry key, component)
        self.language = language
        self.warnings = warnings
        self._entities = entities
        self._has_classifier = any(k == "IntentClassifier" for k, _ in components)
        self._has_selector = any(k == "ResponseSelector" for k, _ in components)
        self._blocking = any(k in _BLOCKING_COMPONENTS for k, _ in components)
        # The domain's intents and entities, which `/intent{...}` messages must name (set by
        # `use_domain` once the model's domain is known; None accepts any, as in training).
        self._domain_intents: set[str] | None = None
        self._domain_entities: set[str] | None = None

    @classmethod
    def train(
        cls,
        data: NLUTrainingData,
        pipeline: list[dict],
        language: str = "en",
        said: Collection[str] = (),
    ) -> NLUPipeline:
        """`said`: warnings the command printed already (its project validation's), kept in
        the model's but not logged again."""
        plan = _plan_for(data, pipeline)
        for warning in plan.warnings:
            if warning not in said:
                logger.warning(warning)
        options = [ReadKeys(s.config) for s in plan.steps]
        components = [
            (s.key, _build_step(s, o, language)) for s, o in zip(plan.steps, options, strict=True)
        ]
        _name_entity_sources(components, [s.name for s in plan.steps])
        messages = [Message(e.text) for e in data.examples]
        for _, component in components:
            component.train(messages, data)
        for step, asked in zip(plan.steps, options, strict=True):
            for warning in asked.unasked_warnings(step.name, _PLANNER_OPTIONS):
                logger.warning(warning)
                plan.warnings.append(warning)
        entities = sorted(set(data.entities) | set(data.lookups) | {n for n, _ in data.regexes})
        return cls(components, language, plan.warnings, entities)

    @staticmethod
    def check(
        pipeline: list[dict], language: str = "en", data: NLUTrainingData | None = None
    ) -> list[str]:
        """The parameter checks of `train` without training: InvalidConfig if refused, else
        the warnings `train` gives before it trains (components run as our equivalents...)."""
        plan = _plan_for(data, pipeline)
        for step in plan.steps:
            _build_step(step, ReadKeys(step.config), language)
        return plan.warnings

    @property
    def intents(self) -> list[str]:
        for key, component in self._components:
            if key == "IntentClassifier" and component.model_ is not None:
                return list(component.model_.classes)
            if key == "KeywordIntentClassifier":
                return component.intents
        return []

    @property
    def blocking(self) -> bool:
        """Whether `parse` may wait on the network or compute for milliseconds (Duckling's
        HTTP call, a sentence encoder): callers on an event loop run it in a thread then,
        and inline otherwise (a sparse parse costs well under a millisecond)."""
        return self._blocking

    @property
    def entities(self) -> list[str]:
        return list(self._entities)

    def use_domain(self, intents: list[str], entities: list[str]) -> None:
        """The domain `/intent{"entity": ...}` messages are checked against, as Rasa's
        RegexMessageHandler checks them."""
        self._domain_intents = set(intents)
        self._domain_entities = set(entities)

    def parse(
        self, text: str, message_id: str | None = None, metadata: dict | None = None
    ) -> dict[str, Any]:
        """Rasa's parse result for `text` (message_id and metadata are the caller's to
        attach: Rasa's /model/parse does not echo them)."""
        shortcut = parse_regex_message(text, self._domain_intents, self._domain_entities)
        if shortcut is not None:
            return shortcut
        message = Message(text)
        for _, component in self._components:
            component.process(message)
        result: dict[str, Any] = {
            "text": text,
            "intent": message.intent or {"name": None, "confidence": 0.0},
            "entities": message.entities,
            # A text without words is one token of the whole text, as Rasa's tokenizer makes
            # it: an empty text too (ours gives it none, so that it has no features).
            "text_tokens": [[t.start, t.end] for t in message.tokens] or [[0, len(text)]],
        }
        if self._has_classifier:
            result["intent_ranking"] = message.intent_ranking
        if self._has_selector and message.response_selector is not None:
            result["response_selector"] = message.response_selector
            _name_full_retrieval_intent(result["intent"], message.response_selector)
        return result

    def persist(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        entries = []
        for index, (key, component) in enumerate(self._components):
            prefix = f"c{index}_"
            entries.append(
                {
                    "key": key,
                    "name": component.name,
                    "config": component.config,
                    "state": component.state(directory, prefix),
                }
            )
        manifest = {
            "format_version": FORMAT_VERSION,
            "language": self.language,
            "warnings": self.warnings,
            "entities": self._entities,
            "components": entries,
        }
        (directory / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False), "utf-8")

    @classmethod
    def load(cls, directory: Path) -> NLUPipeline:
        directory = Path(directory)
        manifest = read_json(directory, MANIFEST)
        if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
            raise ModelError("unsupported NLU pipeline format")
        language = manifest.get("language")
        warnings = manifest.get("warnings")
        entities = manifest.get("entities")
        entries = manifest.get("components")
        if not (
            isinstance(language, str)
            and isinstance(warnings, list)
            and isinstance(entities, list)
            and isinstance(entries, list)
        ):
            raise ModelError("malformed NLU pipeline manifest")
        components = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ModelError(f"NLU component {index} is malformed")
            key, name = entry.get("key"), entry.get("name")
            config, state = entry.get("config"), entry.get("state")
            if not isinstance(key, str) or key not in COMPONENTS:
                raise ModelError(f"unknown NLU component {key!r} in the model")
            if not (isinstance(name, str) and isinstance(config, dict) and isinstance(state, dict)):
                raise ModelError(f"NLU component {index} ({key}) is malformed")
            component_cls: Any = component_class(key)
            try:
                component = component_cls.from_state(config, state, directory, f"c{index}_", name)
            except ModelError:
                raise
            except Exception as e:  # a corrupt state must fail loading, not crash later
                raise ModelError(f"NLU component {index} ({key}) cannot load: {e}") from e
            if key == "DucklingEntityExtractor":
                component.locale = state.get("locale", component.locale)
            components.append((key, component))
        _check_feature_width(components)
        return cls(components, language, [str(w) for w in warnings], [str(e) for e in entities])


def _check_feature_width(components: list[tuple[str, Any]]) -> None:
    """ModelError unless each intent classifier's and response selector's weights have a row
    for each feature column its featurizers give (an empty message through them): a
    featurizer's state with one more word or type than at training, or weights with fewer
    rows, made every parse that hit the missing row an IndexError (a 500)."""
    message = Message("")
    for key, component in components:
        if key in FEATURIZERS:
            component.process(message)
        elif key in ("IntentClassifier", "ResponseSelector") and component.model_ is not None:
            rows = component.model_.weights.shape[0]
            if rows != message.feature_width:
                raise ModelError(
                    f"{component.name} has weights for {rows} features, its featurizers "
                    f"give {message.feature_width}"
                )


def _name_full_retrieval_intent(intent: dict[str, Any], selector: dict[str, Any]) -> None:
    """Adds Rasa's `full_retrieval_intent_name` (`chitchat/ask_name`) to a predicted retrieval
    intent (`chitchat`): the response its own selector chose, or the default selector's when
    that response belongs to this intent (Rasa reads only a selector named after the intent,
    so with the usual default selector it gives null)."""
    name = intent.get("name")
    if not name or name not in selector.get("all_retrieval_intents", []):
        return
    own = selector.get(name)
    if own is None:
        own = selector.get(DEFAULT_SELECTOR)
    key = ((own or {}).get("response") or {}).get("intent_response_key")
    in_intent = isinstance(key, str) and key.startswith(f"{name}/")
    intent["full_retrieval_intent_name"] = key if in_intent else None


def _name_entity_sources(components: list[tuple[str, Any]], names: list[str]) -> None:
    """Tells each EntityTypeFeaturizer which extractors' entities to read: the CRF extractors
    before it. Without one it would learn from CRF tags it never gets at parse time."""
    crf_names: list[str] = []
    for (key, component), name in zip(components, names, strict=True):
        if key == "CRFEntityExtractor":
            crf_names.append(name)
        elif key == "EntityTypeFeaturizer":
            if not crf_names:
                raise InvalidConfig(
                    f"{name} needs a CRF entity extractor (CRFEntityExtractor, or "
                    "DIETClassifier with entity_recognition) before it in the pipeline"
                )
            component.sources = list(crf_names)


def _build_step(step: Step, config: dict[str, Any], language: str) -> Any:
    """The component of a planned step; a refused parameter names its config.yml item."""
    component_cls: Any = component_class(step.key)
    with about_config_item("pipeline", step.position):
        if step.key == "DucklingEntityExtractor":
            return component_cls(config, step.name, language)
        return component_cls(config, step.name)
