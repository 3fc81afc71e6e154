"""Session fixtures of the conversation tests: the shared bots trained once, their rasa-sdk
action servers, and a stand-in Duckling."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.action_servers.fixtures import action_servers  # noqa: F401
from tests.dialogue.conversation_fixtures import BotModels
from tests.dialogue.fake_duckling import fake_duckling


@pytest.fixture(scope="session")
def duckling_url() -> Iterator[str]:
    """The URL of a fake Duckling that finds numbers."""
    with fake_duckling() as url:
        yield url


@pytest.fixture(scope="session")
def bot_models(tmp_path_factory: pytest.TempPathFactory, duckling_url: str) -> BotModels:
    """`bot_models["formbot"]`: the bot trained by `train()` into tmp (Duckling pointed at the
    fake one, nothing else changed)."""
    return BotModels(tmp_path_factory.mktemp("conversation-bots"), duckling_url)
