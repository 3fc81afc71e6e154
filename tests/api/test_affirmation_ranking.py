"""The "Did you mean ...?" of `action_default_ask_affirmation` reads the latest message's
`intent_ranking`. A client cannot put a ranking that is not a list of intents into a
conversation (every route that takes NLU data answers 400); a conversation stored before
those checks, or written by another tool, may hold one, and the action copes with it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.trackers.factory import create_tracker_store

# Recent: an older conversation would start a new session (and an empty latest message).
NOW = time.time()
LISTEN = {"event": "action", "name": "action_listen", "timestamp": NOW}
BAD_RANKINGS = {
    "strings": ["greet", "deny"],
    "an-object": {"name": "greet", "confidence": 0.4},
    "a-string": "greet",
    "a-number": 5,
    "names-not-strings": [{"name": 3}, {"name": ["greet"]}],
}


def _user(ranking: Any) -> dict[str, Any]:
    parse_data = {
        "intent": {"name": "nlu_fallback", "confidence": 0.3},
        "intent_ranking": ranking,
        "entities": [],
        "text": "hrm",
    }
    return {"event": "user", "text": "hrm", "parse_data": parse_data, "timestamp": NOW + 1}


@pytest.mark.parametrize("ranking", BAD_RANKINGS.values(), ids=BAD_RANKINGS.keys())
async def test_no_route_takes_a_ranking_that_is_not_a_list_of_intents(
    client: httpx.AsyncClient, ranking: Any
) -> None:
    """Each is a 400 and the conversation keeps what it had."""
    events = "/conversations/ann/tracker/events"
    assert (await client.post(events, json=[LISTEN])).status_code == 200
    before = (await client.get("/conversations/ann/tracker")).json()["events"]
    for method in ("POST", "PUT"):
        response = await client.request(method, events, json=[_user(ranking)])
        assert response.status_code == 400, (method, response.text)
        assert "intent_ranking" in response.json()["message"]
    message = {"text": "hrm", "sender": "user", "parse_data": _user(ranking)["parse_data"]}
    response = await client.post("/conversations/ann/messages", json=message)
    assert response.status_code == 400, response.text
    assert "intent_ranking" in response.json()["message"]
    response = await client.post("/model/predict", json=[LISTEN, _user(ranking)])
    assert response.status_code == 400, response.text
    assert (await client.get("/conversations/ann/tracker")).json()["events"] == before


async def _asked(make_client: Callable[..., Any], tmp_path: Path, ranking: Any) -> str:
    """The question `action_default_ask_affirmation` asks, run by `POST .../execute` on a
    conversation stored with this ranking in its latest message."""
    stored = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "trackers.db")}
    store = create_tracker_store(stored)
    try:
        await store.append("bob", [LISTEN, _user(ranking)])
    finally:
        await store.close()
    client = await make_client(endpoints={"tracker_store": stored})
    response = await client.post(
        "/conversations/bob/execute", json={"name": "action_default_ask_affirmation"}
    )
    assert response.status_code == 200, response.text
    [asked] = response.json()["messages"]
    return str(asked["text"])


@pytest.mark.parametrize("ranking", BAD_RANKINGS.values(), ids=BAD_RANKINGS.keys())
async def test_a_stored_ranking_that_is_not_a_list_of_intents_still_asks(
    make_client: Callable[..., Any], tmp_path: Path, ranking: Any
) -> None:
    """Before: an AttributeError ('str' object has no attribute 'get'), a 500 with a
    traceback. Now the question names the message's own intent when the ranking holds no
    other, as for an empty ranking."""
    assert await _asked(make_client, tmp_path, ranking) == "Did you mean 'nlu_fallback'?"


async def test_the_second_ranked_entry_is_asked_about_when_it_is_an_intent(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """As Rasa, `intent_ranking[1]` after `nlu_fallback`; an entry there that is no intent
    (where Rasa fails) asks about the message's own intent, and the entries after it are
    not read (before: the first entry other than the fallback that was an intent)."""
    ranking = ["deny", {"name": "greet"}, {"name": "deny"}]
    assert await _asked(make_client, tmp_path, ranking) == "Did you mean 'greet'?"
    ranking = [{"name": "nlu_fallback"}, {"name": 3}, {"name": "greet"}]
    (tmp_path / "odd").mkdir()
    assert await _asked(make_client, tmp_path / "odd", ranking) == "Did you mean 'nlu_fallback'?"
