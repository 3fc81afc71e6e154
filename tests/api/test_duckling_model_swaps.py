"""A model whose pipeline asks Duckling, loaded again and again (PUT /model): the connections
of each model replaced are closed, not kept open by the server."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.fake_http import serve_handler

DUCKLING_YAML = """
language: en
pipeline:
- name: WhitespaceTokenizer
- name: DucklingEntityExtractor
  url: {url}
  dimensions: [number]
- name: KeywordIntentClassifier
policies:
- name: RulePolicy
intents:
- greet
- goodbye
responses:
  utter_goodbye:
  - text: "Bye"
nlu:
- intent: greet
  examples: |
    - hey
    - hello
- intent: goodbye
  examples: |
    - bye
    - goodbye
rules:
- rule: Say goodbye anytime the user says goodbye
  steps:
  - intent: goodbye
  - action: utter_goodbye
"""


class _Duckling(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client's connection stays in its pool

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def duckling_url() -> Iterator[str]:
    with serve_handler(_Duckling) as url:
        yield url


def _open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


async def test_ten_duckling_model_swaps_keep_no_connection_open(
    make_client: Any, tmp_path: Path, duckling_url: str
) -> None:
    client = await make_client()
    trained = await client.post(
        "/model/train?save_to_default_model_directory=false",
        content=DUCKLING_YAML.format(url=duckling_url),
        headers={"Content-Type": "application/yaml"},
    )
    assert trained.status_code == 200, trained.text
    archive = tmp_path / "duckling.tar.gz"
    archive.write_bytes(trained.content)

    async def swap_and_parse() -> None:
        loaded = await client.put("/model", json={"model_file": str(archive)})
        assert loaded.status_code == 204, loaded.text
        parsed = await client.post("/model/parse", json={"text": "hello 3"})
        assert parsed.status_code == 200, parsed.text

    await swap_and_parse()  # the first Duckling model: its connection is open from now on
    gc.collect()
    before = _open_sockets()
    # Before, a replaced model's client kept its connection until a garbage collection
    # (httpx's client is in reference cycles): 10 swaps, 10 connections more meanwhile.
    gc.disable()
    try:
        for _ in range(10):
            await swap_and_parse()
        after = _open_sockets()
    finally:
        gc.enable()
    # One model is loaded, one connection to Duckling open (each end's socket in this
    # process: ours and the fake Duckling's), whatever the number of swaps.
    assert after - before <= 0, f"{after - before} sockets more after 10 swaps"
