"""An `entities` event (Rasa's EntitiesAdded) posted after a prediction: the next prediction
is the one a server reading the conversation from scratch makes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.training.train import train

DOMAIN = """version: "3.1"
intents: [inform]
entities: [city]
responses:
  utter_city:
  - text: "Noted the city."
  utter_ask_city:
  - text: "Which city?"
"""
NLU = """version: "3.1"
nlu:
- intent: inform
  examples: |
    - I want to travel
    - I would like to go somewhere
    - to [Paris](city) please
    - travel to [Berlin](city)
"""
STORIES = """version: "3.1"
stories:
- story: a city given
  steps:
  - intent: inform
    entities:
    - city: Paris
  - action: utter_city
- story: no city given
  steps:
  - intent: inform
  - action: utter_ask_city
"""
CONFIG = """recipe: default.v1
language: en
pipeline:
  - name: WhitespaceTokenizer
  - name: CountVectorsFeaturizer
  - name: IntentClassifier
  - name: CRFEntityExtractor
policies:
  - name: MemoizationPolicy
  - name: MLPolicy
    max_history: 3
"""
CITY = {"event": "entities", "entities": [{"entity": "city", "value": "Paris"}]}


@pytest.fixture(scope="module")
def city_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("citybot")
    files = {"domain.yml": DOMAIN, "config.yml": CONFIG, "nlu.yml": NLU, "stories.yml": STORIES}
    for name, text in files.items():
        folder = root if name in ("domain.yml", "config.yml") else root / "data"
        folder.mkdir(exist_ok=True)
        (folder / name).write_text(text)
    return train(root / "config.yml", root / "domain.yml", [root / "data"], root / "models").path


def ranked(body: dict[str, Any]) -> list[tuple[str, float]]:
    return [(score["action"], score["score"]) for score in body["scores"]]


@pytest.mark.parametrize("posted_by", ["this server", "another server"])
async def test_entities_posted_after_a_prediction_change_the_next_as_a_fresh_read_does(
    make_client: Callable[..., Any], city_model: Path, tmp_path: Path, posted_by: str
) -> None:
    """Through another server, this one's hot tracker reads the event as a row appended
    after the ones it holds."""
    store = {"tracker_store": {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")}}
    client = await make_client(model_path=city_model, endpoints=store)
    message = {"text": "/inform", "sender": "user"}
    assert (await client.post("/conversations/c/messages", json=message)).status_code == 200
    before = await client.post("/conversations/c/predict")  # the states are folded here
    assert before.status_code == 200
    assert ranked(before.json())[0][0] == "utter_ask_city"

    poster = (
        client
        if posted_by == "this server"
        else await make_client(model_path=city_model, endpoints=store)
    )
    added = await poster.post("/conversations/c/tracker/events", json=CITY)
    assert added.status_code == 200
    after = (await client.post("/conversations/c/predict")).json()

    # Another server on the same store: its first read folds the conversation from scratch.
    fresh = await make_client(model_path=city_model, endpoints=store)
    from_scratch = (await fresh.post("/conversations/c/predict")).json()
    assert ranked(after) == ranked(from_scratch)
    assert ranked(after)[0][0] == "utter_city"
    latest = after["tracker"]["latest_message"]
    assert latest["entities"] == from_scratch["tracker"]["latest_message"]["entities"]
    assert [entity["value"] for entity in latest["entities"]] == ["Paris"]
