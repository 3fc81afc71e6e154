"""The NLU server's and Duckling's `url` read as Rasa's clients read it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from server.nlu.duckling import DucklingEntityExtractor
from server.nlu.message import Message
from server.nlu.remote import RemoteNLU
from tests.action_servers.fixtures import BrokenActionServer


def _parse(url: str) -> None:
    RemoteNLU({"url": url}).parse("hello")


def _extract(url: str) -> None:
    DucklingEntityExtractor({"url": url}).process(Message("at 5"))


@pytest.mark.parametrize("written", ["{url}\n", "{url}\r\n", "  {url}", "\t{url}"])
@pytest.mark.parametrize("call", [_parse, _extract], ids=["nlu-server", "duckling"])
def test_a_url_with_a_line_break_or_a_space_before_it_is_read_as_rasa_reads_it(
    broken_server: BrokenActionServer, written: str, call: Callable[[str], None]
) -> None:
    """A URL from an environment variable or a file often ends with a line break: Rasa's
    NLU server client (aiohttp: yarl, as urlsplit) drops a tab or line break, and spaces
    before the scheme; its Duckling client (requests) reads `http://duckling:8000\\n` too.
    Before, every message's parse failed ("Invalid non-printable ASCII character in URL",
    raised, or UnsupportedProtocol, logged), or went without Duckling's entities."""
    call(written.format(url=f"http://127.0.0.1:{broken_server.server_address[1]}"))
    assert len(broken_server.headers) == 1
