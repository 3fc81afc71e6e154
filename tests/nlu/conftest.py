"""Small trained pipelines shared by the NLU tests (trained once per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.nlu.pipeline import NLUPipeline
from server.nlu.training_data import NLUTrainingData
from server.training.nlu_yaml import read_nlu_file, read_nlu_yaml
from tests.action_servers.fixtures import BrokenActionServer, broken_action_server

BOTS = Path(__file__).resolve().parents[3] / "shared" / "bots"
if not BOTS.exists():
    BOTS = Path("/work/shared/bots")

FULL_PIPELINE: list[dict[str, Any]] = [
    {"name": "WhitespaceTokenizer"},
    {"name": "RegexFeaturizer"},
    {"name": "LexicalSyntacticFeaturizer"},
    {"name": "CountVectorsFeaturizer"},
    {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4},
    {"name": "DIETClassifier"},
    {"name": "RegexEntityExtractor"},
    {"name": "EntitySynonymMapper"},
    {"name": "ResponseSelector"},
    {"name": "FallbackClassifier", "threshold": 0.3, "ambiguity_threshold": 0.1},
]

EXTRA_NLU = """
nlu:
- intent: book_flight
  examples: |
    - fly from [Berlin]{"entity":"city","role":"from"} to [London]{"entity":"city","role":"to"}
    - a flight from [Paris]{"entity":"city","role":"from"} to [Rome]{"entity":"city","role":"to"}
    - from [Madrid]{"entity":"city","role":"from"} to [Munich]{"entity":"city","role":"to"}
    - to [Oslo]{"entity":"city","role":"to"} from [Vienna]{"entity":"city","role":"from"}
    - fly from [Lisbon]{"entity":"city","role":"from"} to [Prague]{"entity":"city","role":"to"}
    - flight to [NYC](city:New York) please
- intent: give_zip
  examples: |
    - my zip code is [12345](zipcode)
    - it is [54321](zipcode)
    - [10115](zipcode)
- intent: chitchat/ask_name
  examples: |
    - what is your name
    - who are you called
    - tell me your name
- intent: chitchat/ask_weather
  examples: |
    - how is the weather
    - is it sunny outside
    - will it rain today
- synonym: New York
  examples: |
    - big apple
- regex: zipcode
  examples: |
    - \\d{5}
responses:
  utter_chitchat/ask_name:
  - text: I am a bot.
  utter_chitchat/ask_weather:
  - text: Sunny.
"""


def bot_data(bot: str) -> NLUTrainingData:
    return read_nlu_file(BOTS / bot / "data" / "nlu.yml")


@pytest.fixture(scope="session")
def mixed_data() -> NLUTrainingData:
    return NLUTrainingData.merge([bot_data("moodbot"), read_nlu_yaml(EXTRA_NLU, "extra.yml")])


@pytest.fixture(scope="session")
def full_pipeline(mixed_data: NLUTrainingData) -> NLUPipeline:
    return NLUPipeline.train(mixed_data, FULL_PIPELINE)


@pytest.fixture(scope="session")
def load_bot():
    return bot_data


@pytest.fixture
def broken_server() -> Iterator[BrokenActionServer]:
    """A local server that misbehaves by path (gzip bombs, encodings), as an NLU server or
    Duckling."""
    with broken_action_server() as server:
        yield server


@pytest.fixture
def br_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx as it is with `brotli` and `zstandard` installed: asking for br and zstd too."""
    monkeypatch.setattr("httpx._client.ACCEPT_ENCODING", "gzip, deflate, br, zstd")
