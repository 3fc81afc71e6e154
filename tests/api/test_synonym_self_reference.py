"""EntitySynonymMapper's self-reference, as in Rasa 3.6: training maps each synonym value
and each annotated entity value, in lower case, back to the value itself, so an entity
extracted in another case gets the value as written in the training data, and an entity
already spelled as a value is marked by the mapper in `/model/parse`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.models.archive import read_archive, write_archive
from server.training.train import train_nlu

# The regex extractor finds the lookup's texts as typed ("new york"), and any number.
NLU = """version: "3.1"
nlu:
- intent: travel
  examples: |
    - fly to [New York](city)
    - a trip to [Berlin](city) for [five](count:5) people
    - to [big apple](city:NEW YORK) please
- synonym: "5"
  examples: |
    - five
- lookup: city
  examples: |
    - new york
    - berlin
    - paris
- regex: count
  examples: |
    - \\d+
"""
CONFIG = """assistant_id: synonymbot
language: en
pipeline:
  - name: WhitespaceTokenizer
  - name: KeywordIntentClassifier
  - name: RegexEntityExtractor
  - name: EntitySynonymMapper
"""


@pytest.fixture(scope="module")
def synonym_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synonymbot")
    (root / "config.yml").write_text(CONFIG)
    (root / "nlu.yml").write_text(NLU)
    return train_nlu(root / "config.yml", [root / "nlu.yml"], root / "models").path


async def parsed(client: Any, text: str) -> list[tuple[str, Any, list[str]]]:
    response = await client.post("/model/parse", json={"text": text})
    assert response.status_code == 200
    return [(e["entity"], e["value"], e.get("processors", [])) for e in response.json()["entities"]]


async def test_an_entity_in_another_case_gets_the_value_as_annotated(
    make_client: Callable[..., Any], synonym_model: Path
) -> None:
    """Before, "berlin" and "paris" alike came back as typed, unmarked: only texts written
    differently from their value ("five", "big apple") were in the table."""
    client = await make_client(model_path=synonym_model)
    assert await parsed(client, "fly to berlin") == [("city", "Berlin", ["EntitySynonymMapper"])]
    # Paris is in the lookup table only: no annotated value, nothing to map it to.
    assert await parsed(client, "fly to paris") == [("city", "paris", [])]


async def test_an_entity_spelled_as_a_synonym_value_is_marked(
    make_client: Callable[..., Any], synonym_model: Path
) -> None:
    """ "5" is the value of the synonym "five": Rasa's mapper looks it up and marks it."""
    client = await make_client(model_path=synonym_model)
    assert await parsed(client, "for 5 people") == [("count", "5", ["EntitySynonymMapper"])]


async def test_of_two_values_differing_in_case_the_synonyms_value_is_the_self_reference(
    make_client: Callable[..., Any], synonym_model: Path
) -> None:
    """ "New York" (annotated as written) and "NEW YORK" (the value "big apple" maps to)
    share the lower case "new york". As in Rasa, the values of the synonym table are walked
    before the annotated ones, and the first keeps it, without a warning: an extracted
    "new york" (or "New York") becomes "NEW YORK"."""
    client = await make_client(model_path=synonym_model)
    assert await parsed(client, "fly to new york") == [
        ("city", "NEW YORK", ["EntitySynonymMapper"])
    ]


async def test_a_model_trained_before_keeps_its_table_until_trained_again(
    make_client: Callable[..., Any], synonym_model: Path, tmp_path: Path
) -> None:
    """A training format 3 archive holds the synonym texts alone: it loads, and maps as it
    did (`botserver train` retrains it, tests/training/test_training_format.py)."""
    content = tmp_path / "content"
    metadata = read_archive(synonym_model, content)
    for key in ("format_version", "botserver_version", "model_id", "trained_at"):
        del metadata[key]
    pipeline_file = content / "components" / "nlu" / "pipeline.json"
    pipeline = json.loads(pipeline_file.read_text())
    (mapper,) = [c for c in pipeline["components"] if c["name"] == "EntitySynonymMapper"]
    mapper["state"]["synonyms"] = {"five": "5", "big apple": "NEW YORK"}
    pipeline_file.write_text(json.dumps(pipeline))
    old = write_archive(content / "components", {**metadata, "training_format": 3}, tmp_path)

    client = await make_client(model_path=old)
    assert await parsed(client, "fly to berlin") == [("city", "berlin", [])]
    assert await parsed(client, "for 5 people") == [("count", "5", [])]
