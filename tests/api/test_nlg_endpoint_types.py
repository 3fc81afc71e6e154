"""`nlg: type:` in endpoints.yml, as Rasa reads it: `callback` (the default) asks the NLG
server, `response` the domain's responses; a custom class is refused at start."""

from __future__ import annotations

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


@pytest.mark.parametrize("nlg", [{"type": "addons.nlg.MyGenerator"}, {"type": "callback"}])
async def test_a_type_botserver_cannot_serve_stops_the_start(
    make_client: Callable[..., Any], nlg: dict[str, str]
) -> None:
    """A custom generator class (Rasa imports it) or a callback without a URL. Before, the
    server started and answered from the domain without a word."""
    with pytest.raises(InvalidConfig, match="section 'nlg': ") as raised:
        await make_client(endpoints={**MEMORY_STORE, "nlg": nlg})
    assert nlg["type"] in str(raised.value)
