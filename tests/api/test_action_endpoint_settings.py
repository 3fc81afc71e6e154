"""`action_endpoint:` and `nlg:` settings botserver does not read are named at start: Rasa
ignores them without a word, so a misspelt key silently did nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.errors import InvalidConfig
from tests.api.conftest import MEMORY_STORE


async def test_a_misspelt_endpoint_setting_is_warned_about(
    make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Before, `enable_selective_domains: true` sent the whole domain at every call, and a
    `header:` holding the action server's API key was never sent, without a word."""
    endpoints = {
        **MEMORY_STORE,
        "action_endpoint": {
            "url": "http://127.0.0.1:9/webhook",
            "enable_selective_domains": True,
            "header": {"X-Api-Key": "s3cret"},
        },
        "nlg": {"url": "http://127.0.0.1:9/nlg", "colour": "red"},
    }
    with caplog.at_level(logging.WARNING):
        await make_client(endpoints=endpoints)
    assert _unknown_settings(caplog) == [
        "endpoints.yml: action_endpoint: unknown setting 'enable_selective_domains' is not "
        "read (nor by Rasa); did you mean 'enable_selective_domain'?",
        "endpoints.yml: action_endpoint: unknown setting 'header' is not read (nor by Rasa); "
        "did you mean 'headers'?",
        "endpoints.yml: nlg: unknown setting 'colour' is not read (nor by Rasa); it reads "
        "basic_auth, cafile, headers, max_response_bytes, params, store_type, timeout, token, "
        "token_name, type, url",
    ]
    assert "s3cret" not in caplog.text


async def test_an_action_endpoint_without_a_url_is_warned_about(
    make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """`url: ${ACTION_SERVER_URL}` with the variable empty: every custom action fails
    ("no action_endpoint is configured"). Before, the start said nothing of it."""
    endpoints = {**MEMORY_STORE, "action_endpoint": {"url": "", "token": "s3cret"}}
    with caplog.at_level(logging.WARNING, logger="server.api.server"):
        await make_client(endpoints=endpoints)
    warned = [r.getMessage() for r in caplog.records if r.name == "server.api.server"]
    assert warned == [
        "endpoints.yml: action_endpoint has no 'url': custom actions fail until one is set"
    ]


async def test_a_misspelt_models_setting_is_warned_about(
    make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Rasa ignores a `models:` key it does not read, and so did botserver: a misspelt
    `wait_time_between_pulls` silently pulled every 100 s, a misspelt `token` pulled without
    it. The start now names it, as for `action_endpoint:` and `nlg:`."""
    models = {"url": "http://127.0.0.1:9/model", "wait_time_between_pull": 5, "tokn": "s3cret"}
    endpoints = {**MEMORY_STORE, "models": models}
    with caplog.at_level(logging.WARNING):
        await make_client(endpoints=endpoints)
    assert _unknown_settings(caplog) == [
        "endpoints.yml: models: unknown setting 'wait_time_between_pull' is not read (nor by "
        "Rasa); did you mean 'wait_time_between_pulls'?",
        "endpoints.yml: models: unknown setting 'tokn' is not read (nor by Rasa); did you mean "
        "'token'?",
    ]
    assert "s3cret" not in caplog.text


@pytest.mark.parametrize(
    ("models", "said"),
    [
        ({"basic_auth": {"username": "bot", "password": None}}, "'basic_auth' needs a 'password'"),
        ({"basic_auth": {"username": "a:b", "password": "s3c"}}, "cannot hold a ':'"),
        ({"read_timeout": "soon"}, "models.read_timeout must be seconds"),
    ],
)
async def test_a_models_section_no_pull_can_use_stops_the_start(
    make_client: Callable[..., Any], models: dict[str, Any], said: str
) -> None:
    """As an unusable `action_endpoint:` or `nlg:` does. Before, the server started without
    a model and never pulled one, its one error line followed by a warning that blamed
    `wait_time_between_pulls` ("the model server is asked once")."""
    endpoints = {**MEMORY_STORE, "models": {"url": "http://127.0.0.1:9/model", **models}}
    with pytest.raises(InvalidConfig, match="prod.yml, section 'models': ") as raised:
        await make_client(endpoints=endpoints, endpoints_file="prod.yml")
    assert said in str(raised.value) and "s3c" not in str(raised.value)
    # The section named once: before, "section 'models': models: 'basic_auth' ...".
    assert "models: " not in str(raised.value)


async def test_every_section_names_its_unknown_settings_in_one_wording_with_the_file(
    make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Before, the stores and broker said "tracker_store: unknown setting ..." without the
    file --endpoints named, the other sections "the option ... is unknown and ignored", and
    `nlu:` nothing: its `basic_auth` (which neither Rasa's NLU client nor ours sends) and a
    misspelt `timeout` were dropped without a word."""
    endpoints = {
        "tracker_store": {"type": "in_memory", "cache_events": 10},
        "event_broker": {"type": "sql", "db": str(tmp_path / "e.db"), "tabel_name": "e"},
        "nlu": {"url": "http://127.0.0.1:9", "timout": 3, "basic_auth": {"username": "u"}},
    }
    with caplog.at_level(logging.WARNING):
        await make_client(endpoints=endpoints, endpoints_file="prod-endpoints.yml")
    assert _unknown_settings(caplog) == [
        "prod-endpoints.yml: event_broker: unknown setting 'tabel_name' is not read (Rasa "
        "stops on it); did you mean 'table_name'?",
        "prod-endpoints.yml: nlu: unknown setting 'timout' is not read (nor by Rasa); did you "
        "mean 'timeout'?",
        "prod-endpoints.yml: nlu: unknown setting 'basic_auth' is not read (nor by Rasa); it "
        "reads headers, max_response_bytes, timeout, token, url",
    ]


def _unknown_settings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "unknown setting" in r.getMessage()]
