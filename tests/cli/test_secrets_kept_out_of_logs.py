"""`botserver run` keeps the secrets it is started with out of every log line: those of its
flags, endpoints.yml, credentials.yml and the environment, wherever a line quotes them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import uvicorn

import cli
from bench.tcp_proxy import free_port

ENDPOINTS = """\
action_endpoint:
  url: http://127.0.0.1:9/webhook
  token: action-server-token-1
tracker_store:
  type: redis
  url: 127.0.0.1
  port: 9
  password: redis-password-1
event_broker:
  type: pika
  url: amqp://bot:rabbit-url-password-1@127.0.0.1:9/
"""

CREDENTIALS = """\
rest:
rocketchat:
  user: bot
  password: rocketchat-password-1
  server_url: http://127.0.0.1:9
  webhook_token: rocketchat-webhook-token-1
"""

JWT_SECRET = "jwt-secret-value-1"
PRIVATE_KEY = "private-key-text-1"  # the text of the file --jwt-private-key names
SECRETS = [
    JWT_SECRET,
    PRIVATE_KEY,
    "action-server-token-1",
    "redis-password-1",
    "rabbit-url-password-1",
    "rocketchat-password-1",
    "rocketchat-webhook-token-1",
    "aws-secret-access-key-1",
    "YXp1cmUta2V5LTE+Lw==",  # an Azure account key, base64
]


@pytest.mark.usefixtures("restore_logging")
def test_a_log_line_quoting_a_secret_the_server_was_started_with_hides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, only --auth-token was hidden wherever a line quoted it: a line quoting the
    --jwt-secret (a client's misspelt `?tokn=`, a library's error message), or a password of
    endpoints.yml or credentials.yml alone (not after `password:` nor in a URL), showed it."""
    (tmp_path / "endpoints.yml").write_text(ENDPOINTS, encoding="utf-8")
    (tmp_path / "credentials.yml").write_text(CREDENTIALS, encoding="utf-8")
    (tmp_path / "jwt.key").write_text(PRIVATE_KEY + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-access-key-1")
    monkeypatch.setenv("AZURE_ACCOUNT_KEY", "YXp1cmUta2V5LTE+Lw==")

    async def quote_the_secrets_and_stop(server: uvicorn.Server) -> None:
        logging.getLogger("server").warning("quoting: %s", " ".join(SECRETS))
        server.should_exit = True

    monkeypatch.setattr(uvicorn.Server, "main_loop", quote_the_secrets_and_stop)
    code = cli.main(
        [
            "run",
            "--enable-api",
            "--jwt-secret",
            JWT_SECRET,
            "--jwt-private-key",
            "jwt.key",
            "--endpoints",
            "endpoints.yml",
            "--credentials",
            "credentials.yml",
            "-m",
            "no-models-here",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "--log-file",
            "out.log",
        ]
    )
    assert code == 0
    logged = (tmp_path / "out.log").read_text(encoding="utf-8") + capsys.readouterr().err
    assert "quoting: " + " ".join(["***"] * len(SECRETS)) in logged
    assert [secret for secret in SECRETS if secret in logged] == []
