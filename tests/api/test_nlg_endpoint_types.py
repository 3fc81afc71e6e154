"""`nlg: type:` in endpoints.yml, as Rasa reads it: `callback` (the default) asks the NLG
server, `response` the domain's responses; a custom class is refused at start."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from bench.tcp_proxy import free_port
from server.errors import InvalidConfig
from tests.api.conftest import MEMORY_STORE


async def test_type_response_answers_from_the_domain_whatever_the_url(
    make_client: Callable[..., Any],
) -> None:
    """Before, `type` was ignored: the (here unreachable) URL was asked and the fallback ran."""
    nlg = {"type": "response", "url": f"http://127.0.0.1:{free_port()}/nlg"}
    client = await make_client(endpoints={**MEMORY_STORE, "nlg": nlg})
    answer = await client.post("/webhooks/rest/webhook", json={"sender": "r1", "message": "hi"})
    assert [m.get("text") for m in answer.json()] == ["Hey! How are you?"]


async def test_store_type_is_read_as_type_as_in_rasa(
    make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Rasa's endpoint settings read `store_type` as `type` (old Rasa docs wrote it). Before,
    botserver warned it was unknown and ignored, and asked the (unreachable) NLG server."""
    nlg = {"store_type": "response", "url": f"http://127.0.0.1:{free_port()}/nlg"}
    with caplog.at_level(logging.WARNING, logger="server.api.server"):
        client = await make_client(endpoints={**MEMORY_STORE, "nlg": nlg})
    answer = await client.post("/webhooks/rest/webhook", json={"sender": "r2", "message": "hi"})
    assert [m.get("text") for m in answer.json()] == ["Hey! How are you?"]
    assert [r.getMessage() for r in caplog.records if r.name == "server.api.server"] == []


@pytest.mark.parametrize("nlg", [{"type": "addons.nlg.MyGenerator"}, {"type": "callback"}])
async def test_a_type_botserver_cannot_serve_stops_the_start(
    make_client: Callable[..., Any], nlg: dict[str, str]
) -> None:
    """A custom generator class (Rasa imports it) or a callback without a URL. Before, the
    server started and answered from the domain without a word."""
    with pytest.raises(InvalidConfig, match="section 'nlg': ") as raised:
        await make_client(endpoints={**MEMORY_STORE, "nlg": nlg})
    assert nlg["type"] in str(raised.value)
