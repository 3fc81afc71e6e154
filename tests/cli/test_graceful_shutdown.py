"""SIGTERM during a turn: the turn finishes, its reply is delivered, the process exits 0."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from server.training.train import train

DOMAIN = """version: "3.1"
intents: [greet]
actions: [action_slow]
"""
NLU = """version: "3.1"
nlu:
- intent: greet
  examples: |
    - hello
    - hi
    - hey there
"""
RULES = """version: "3.1"
rules:
- rule: greet slowly
  steps:
  - intent: greet
  - action: action_slow
"""


class SlowActionServer(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(2.0)
        body = json.dumps({"events": [], "responses": [{"text": "finished slowly"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_sigterm_lets_the_turn_in_flight_finish(start_server, tmp_path: Path) -> None:
    (tmp_path / "domain.yml").write_text(DOMAIN)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "nlu.yml").write_text(NLU)
    (tmp_path / "data" / "rules.yml").write_text(RULES)
    (tmp_path / "config.yml").write_text(
        "recipe: default.v1\nlanguage: en\npipeline: []\npolicies:\n- name: RulePolicy\n"
    )
    train(
        tmp_path / "config.yml", tmp_path / "domain.yml", [tmp_path / "data"], tmp_path / "models"
    )

    actions = ThreadingHTTPServer(("127.0.0.1", 0), SlowActionServer)
    threading.Thread(target=actions.serve_forever, daemon=True).start()
    (tmp_path / "endpoints.yml").write_text(
        f"action_endpoint:\n  url: http://127.0.0.1:{actions.server_port}/webhook\n"
        "tracker_store:\n  type: in_memory\n"
    )
    try:
        server = start_server("-m", "models", cwd=tmp_path)
        server.wait_until("/health/ready")
        replies: list[httpx.Response] = []
        turn = threading.Thread(
            target=lambda: replies.append(
                httpx.post(
                    server.url + "/webhooks/rest/webhook",
                    json={"sender": "slow", "message": "/greet"},
                    timeout=30,
                )
            )
        )
        turn.start()
        time.sleep(0.8)  # the turn is waiting for the action server
        server.process.terminate()
        turn.join(timeout=30)
        assert server.process.wait(timeout=30) == 0, server.text()
    finally:
        actions.shutdown()
    assert replies and replies[0].status_code == 200, server.text()
    assert replies[0].json() == [{"recipient_id": "slow", "text": "finished slowly"}]
