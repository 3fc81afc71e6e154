"""NLU training data as plain values: examples, entity annotations, synonyms, regexes,
lookup tables and retrieval-intent responses."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class EntityAnnotation:
    """One annotated span of an example's (cleaned) text."""

    start: int
    end: int
    value: Any
    entity: str
    role: str | None = None
    group: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Rasa's entity JSON: start, end, value, entity, and role and group when set."""
        out: dict[str, Any] = {
            "start": self.start,
            "end": self.end,
            "value": self.value,
            "entity": self.entity,
        }
        if self.role is not None:
            out["role"] = self.role
        if self.group is not None:
            out["group"] = self.group
        return out


@dataclass
class Example:
    """One training utterance; a retrieval intent keeps its full name (`faq/ask_name`)."""

    text: str
    intent: str | None
    entities: list[EntityAnnotation] = field(default_factory=list)
    metadata: dict | None = None

    @property
    def base_intent(self) -> str | None:
        """The intent without its retrieval suffix (`faq/ask_name` -> `faq`)."""
        if self.intent is None:
            return None
        return self.intent.split("/", 1)[0]


@dataclass
class NLUTrainingData:
    """Everything the NLU pipeline learns from."""

    examples: list[Example] = field(default_factory=list)
    synonyms: dict[str, str] = field(default_factory=dict)
    # Where each synonym was read ("data/nlu.yml:12"), to name both places of a conflict.
    synonym_sources: dict[str, str] = field(default_factory=dict, compare=False)
    # Each synonym's texts as written ("NYC", "nyc"): `synonyms` is keyed by their lower case,
    # and the data written back (convert, split) keeps every spelling.
    synonym_texts: dict[str, list[str]] = field(default_factory=dict, compare=False)
    regexes: list[tuple[str, str]] = field(default_factory=list)
    lookups: dict[str, list[str]] = field(default_factory=dict)
    responses: dict[str, list[dict]] = field(default_factory=dict)
    # The files of one element a line that lookup tables named (Rasa's JSON format), read
    # with the data: the training fingerprint covers them, so that an edit retrains.
    lookup_files: list[Path] = field(default_factory=list, compare=False)

    @classmethod
    def merge(cls, parts: Iterable[NLUTrainingData]) -> NLUTrainingData:
        """Combine the data of several files into one."""
        merged = cls()
        regexes_seen: set[tuple[str, str]] = set()
        for part in parts:
            merged.examples.extend(part.examples)
            for key, value in part.synonyms.items():
                source = part.synonym_sources.get(key, "training data")
                for text in part.synonym_texts.get(key, [key]):
                    merged.add_synonym(text, value, source)
            for regex in part.regexes:
                if regex not in regexes_seen:
                    regexes_seen.add(regex)
                    merged.regexes.append(regex)
            for name, elements in part.lookups.items():
                merged.add_lookup_elements(name, elements)
            merged.responses.update(part.responses)
            merged.lookup_files.extend(f for f in part.lookup_files if f not in merged.lookup_files)
        return merged

    def add_lookup_elements(self, name: str, elements: Iterable[str]) -> None:
        """Add to lookup table `name` the elements it does not hold yet, in their order.
        Looked up in a set: among those of a list, 125,000 elements took minutes."""
        bucket = self.lookups.setdefault(name, [])
        held = set(bucket)
        for element in elements:
            if element not in held:
                held.add(element)
                bucket.append(element)

    def add_synonym(self, text: str, value: str, source: str) -> None:
        """Map `text` (case-insensitively) to `value`. As in Rasa, a text spelled exactly as
        its value maps nothing, and of two values for one text the last one read wins, with
        a warning naming both places."""
        if text == value:
            return
        key = text.lower()
        previous = self.synonyms.get(key)
        if previous is not None and previous != value:
            previous_source = self.synonym_sources.get(key, "training data")
            warn_inconsistent_synonym(source, text, value, previous, previous_source)
        self.synonyms[key] = value
        self.synonym_sources[key] = source
        texts = self.synonym_texts.setdefault(key, [])
        if text not in texts:
            texts.append(text)

    def synonyms_by_value(self) -> dict[str, list[str]]:
        """Each synonym value with the texts mapped to it, as written, for writing the data."""
        by_value: dict[str, list[str]] = {}
        for key, value in self.synonyms.items():
            by_value.setdefault(value, []).extend(self.synonym_texts.get(key, [key]))
        return by_value

    @property
    def intent_examples(self) -> list[Example]:
        return [e for e in self.examples if e.intent]

    @property
    def intents(self) -> list[str]:
        """Sorted base intent names (retrieval intents without their suffix)."""
        return sorted({e.base_intent for e in self.examples if e.base_intent})

    @property
    def entities(self) -> list[str]:
        return sorted({a.entity for e in self.examples for a in e.entities})

    @property
    def retrieval_intents(self) -> list[str]:
        names = {e.intent for e in self.examples if e.intent and "/" in e.intent}
        return sorted({name.split("/", 1)[0] for name in names})


def annotated_text(
    text: str,
    entities: Iterable[EntityAnnotation],
    left_out: list[EntityAnnotation] | None = None,
) -> str:
    """`text` in Rasa's training-data markup: `[span](entity)`, `[span]{"entity": ...}` with
    the role, group and value (when not the span's text) in Rasa's order, or
    `[span][{...}, {...}]` for several entities on one span. An entity overlapping an earlier
    one, or outside the text, is left out (added to `left_out`) and its text left as it is
    (Rasa writes the overlapped text twice, or fails when both start at one character)."""
    spans: dict[tuple[int, int], list[EntityAnnotation]] = {}
    for entity in sorted(entities, key=lambda e: e.start):
        spans.setdefault((entity.start, entity.end), []).append(entity)
    parts: list[str] = []
    position = 0
    for (start, end), same_span in spans.items():
        if start < position or end > len(text) or start >= end:
            if left_out is not None:
                left_out.extend(same_span)
            continue
        span = text[start:end]
        fields = [_markup_fields(entity, span) for entity in same_span]
        if len(fields) > 1:
            markup = "[" + ", ".join(json.dumps(f, ensure_ascii=False) for f in fields) + "]"
        elif len(fields[0]) == 1:
            markup = f"({fields[0]['entity']})"
        else:
            markup = json.dumps(fields[0], ensure_ascii=False)
        parts.append(f"{text[position:start]}[{span}]{markup}")
        position = end
    parts.append(text[position:])
    return "".join(parts)


def _markup_fields(entity: EntityAnnotation, span: str) -> dict[str, Any]:
    """An entity's markup fields in the order Rasa writes them: its value only when it is
    not the span's text."""
    fields: dict[str, Any] = {"entity": entity.entity}
    if entity.role is not None:
        fields["role"] = entity.role
    if entity.group is not None:
        fields["group"] = entity.group
    if entity.value is not None and entity.value != span:
        fields["value"] = entity.value
    return fields


def message_markup(text: str, entities: Iterable[Any]) -> str:
    """A user message (its text and parsed entities) as Rasa's stories write it: marked up
    with `annotated_text`, except a `/intent{...}` message, written as it is since its JSON
    gives its entities (marked up over that JSON, a number's value read back as no text)."""
    if text.lstrip().startswith("/"):
        return text
    return annotated_text(text, annotations_of(entities))


def annotations_of(entities: Iterable[Any]) -> list[EntityAnnotation]:
    """The entities of a parse result or a user event (Rasa's entity JSON) that mark a span
    of its text (an int start and end, and an entity name); others have no markup."""
    return [
        EntityAnnotation(
            e["start"], e["end"], e.get("value"), e["entity"], e.get("role"), e.get("group")
        )
        for e in entities
        if isinstance(e, dict)
        and isinstance(e.get("start"), int)
        and isinstance(e.get("end"), int)
        and isinstance(e.get("entity"), str)
    ]


def warn_inconsistent_synonym(
    source: str, text: str, value: str, previous: str, previous_source: str
) -> None:
    """The warning for `text` mapped to `value` at `source`, having been mapped to `previous`
    at `previous_source`: the one read last is used."""
    logger.warning(
        "%s: found inconsistent entity synonyms: %r maps to %r (%s) and to %r; "
        "using %r, the last one read",
        source,
        text,
        previous,
        previous_source,
        value,
        value,
    )
