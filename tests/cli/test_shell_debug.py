"""`botserver shell --debug`: the debug log says why the bot answered as it did."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest

from server.channels.console import run_shell
from server.config import read_endpoints

ShellLog = tuple[Path, Path, pytest.MonkeyPatch, pytest.LogCaptureFixture]


@pytest.fixture
def shell_log(
    moodbot_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> ShellLog:
    return moodbot_model, tmp_path / "no-endpoints.yml", monkeypatch, caplog


async def _dialogue_lines(shell_log: ShellLog, level: int, typed: str) -> list[str]:
    """The dialogue's log lines of a shell session in which `typed` was typed."""
    model, endpoints, monkeypatch, caplog = shell_log
    monkeypatch.setattr("sys.stdin", io.StringIO(typed))
    caplog.set_level(level, logger="server")
    assert await run_shell(model, read_endpoints(endpoints), sender="ana") == 0
    return [r.getMessage() for r in caplog.records if r.name.startswith("server.dialogue")]


async def test_debug_lines_name_the_intent_and_who_predicted_each_action(
    shell_log: ShellLog,
) -> None:
    lines = await _dialogue_lines(shell_log, logging.DEBUG, "hello\nI am sad\n/stop\n")
    # the message, its intent with its confidence, and the entities found
    parsed = [line for line in lines if line.startswith("ana: message 'I am sad' is intent")]
    assert len(parsed) == 1, lines
    assert re.search(r" mood_unhappy \(confidence [01]\.\d\d\);", parsed[0]), parsed[0]
    assert parsed[0].endswith("entities: none")
    # each action, the policy that chose it and how sure it was, and what it did
    predicted = [line for line in lines if line.startswith("ana: next action ")]
    assert (
        "ana: next action utter_cheer_up by MemoizationPolicy (confidence 1.00); events: bot"
        in predicted
    ), predicted
    assert any(line.startswith("ana: next action action_listen by ") for line in predicted)


async def test_no_debug_lines_without_debug(shell_log: ShellLog) -> None:
    lines = await _dialogue_lines(shell_log, logging.INFO, "hello\n/stop\n")
    assert not [line for line in lines if "next action" in line or "is intent" in line]
