"""Whole-server conversations: concertbot's stories through a real rasa-sdk action server,
and a bot that stays up, answering with its fallback, when the action server misbehaves."""

from __future__ import annotations

from pathlib import Path

import httpx

from bench.tcp_proxy import free_port
from tests.action_servers.fixtures import broken_action_server
from tests.channels.conftest import concertbot_server

FALLBACK = "Sorry, I didn't get that, can you rephrase?"


async def _say(client: httpx.AsyncClient, sender: str, text: str) -> list[str]:
    answer = await client.post("/webhooks/rest/webhook", json={"sender": sender, "message": text})
    assert answer.status_code == 200
    return [m.get("text") for m in answer.json()]


async def test_concertbot_stories_run_on_the_action_server(
    concertbot_model: Path,
    action_servers,  # noqa: ANN001
) -> None:
    async with concertbot_server(concertbot_model, action_servers["concertbot"].url) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert await _say(client, "fan", "hi") == ["Hey there!"]
            assert await _say(client, "fan", "search concerts") == ["Foo Fighters, Katy Perry"]
            reviews = await _say(client, "fan", "compare reviews")
            tracker = (await client.get("/conversations/fan/tracker")).json()

            assert await _say(client, "venue", "search venues") == [
                "here are some venues I found",
                "Big Arena, Rock Cellar",
            ]
    assert reviews == [
        "concerts from slots: [{'artist': 'Foo Fighters', 'reviews': 4.5}, "
        "{'artist': 'Katy Perry', 'reviews': 5.0}]"
    ]
    assert tracker["slots"]["concerts"][0]["artist"] == "Foo Fighters"
    executed = [e["name"] for e in tracker["events"] if e["event"] == "action"]
    assert "action_search_concerts" in executed and "action_show_concert_reviews" in executed


async def test_formbot_validates_its_form_on_the_action_server(
    formbot_model: Path,
    action_servers,  # noqa: ANN001
) -> None:
    turns = [
        ("hi", ["Hello! I am restaurant search assistant! How can I help?"]),
        ("im looking for a restaurant", ["What cuisine?"]),
        (
            '/inform{"cuisine": "klingon"}',
            ["Cuisine type is not in the database, please try again", "What cuisine?"],
        ),
        ('/inform{"cuisine": "greek"}', ["How many people?"]),
        (
            '/inform{"number": 0}',
            ["Number of people should be a positive integer, please try again", "How many people?"],
        ),
        ('/inform{"number": 4}', ["Do you want to sit outside?"]),
        ("/affirm", ["Please provide additional preferences"]),
        ("/deny", ["Please give your feedback on your experience so far"]),
    ]
    async with concertbot_server(formbot_model, action_servers["formbot"].url) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for text, expected in turns:
                assert await _say(client, "diner", text) == expected, text
            done = await _say(client, "diner", "great service")
            slots = (await client.get("/conversations/diner/tracker")).json()["slots"]
    assert done[0] == "All done!"
    assert done[1].startswith("I am going to run a restaurant search")
    assert slots["cuisine"] == "greek"
    assert slots["num_people"] == 4
    assert slots["outdoor_seating"] is True
    assert slots["preferences"] == "no additional preferences"
    assert slots["feedback"] == "great service"


async def test_an_action_server_that_is_down_gives_the_fallback(concertbot_model: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/webhook"
    async with concertbot_server(concertbot_model, down) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert await _say(client, "u", "search concerts") == [FALLBACK]
            assert await _say(client, "u", "hi") == ["Hey there!"]


async def test_slow_and_garbage_action_servers_give_the_fallback(concertbot_model: Path) -> None:
    with broken_action_server() as broken:
        port = broken.server_address[1]
        slow = f"http://127.0.0.1:{port}/slow"
        async with concertbot_server(concertbot_model, slow, action_timeout=0.5) as url:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                assert await _say(client, "u", "search concerts") == [FALLBACK]
                assert await _say(client, "u", "hi") == ["Hey there!"]
        for path in ("/garbage", "/shape", "/crash"):
            garbage = f"http://127.0.0.1:{port}{path}"
            async with concertbot_server(concertbot_model, garbage) as url:
                async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                    assert await _say(client, "u", "search venues") == [FALLBACK], path
