"""`botserver shell` driven through a pseudo-terminal: a short conversation with moodbot."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pexpect

from tests.cli.botserver_process import botserver_command

PROMPT = "Your input -> "


def spawn_shell(model: Path, cwd: Path) -> pexpect.spawn:
    command, *prefix = botserver_command()
    return pexpect.spawn(
        command,
        [*prefix, "shell", "-m", str(model), "--quiet"],
        cwd=str(cwd),
        encoding="utf-8",
        timeout=60,
    )


def test_a_short_conversation_with_buttons_then_stop(moodbot_model: Path, tmp_path: Path) -> None:
    shell = spawn_shell(moodbot_model, tmp_path)
    shell.expect("Bot loaded")
    shell.expect_exact(PROMPT)
    shell.sendline("hello there")
    shell.expect_exact("Hey! How are you?")
    shell.expect_exact("1: great (/mood_great)")
    shell.expect_exact("2: super sad (/mood_unhappy)")
    shell.expect_exact(PROMPT)
    shell.sendline("2")  # picks the button by its number
    shell.expect_exact("Here is something to cheer you up:")
    shell.expect_exact("Image: https://")
    shell.expect_exact("Did that help you?")
    shell.expect_exact(PROMPT)
    shell.sendline("/stop")
    shell.expect(pexpect.EOF)
    shell.close()
    assert shell.exitstatus == 0


def test_ctrl_d_ends_the_session(moodbot_model: Path, tmp_path: Path) -> None:
    shell = spawn_shell(moodbot_model, tmp_path)
    shell.expect_exact(PROMPT)
    shell.sendeof()
    shell.expect(pexpect.EOF)
    shell.close()
    assert shell.exitstatus == 0


def test_shell_without_a_model_says_what_to_do(tmp_path: Path) -> None:
    shell = spawn_shell(tmp_path / "models", tmp_path)
    shell.expect_exact("Train one with `botserver train`")
    shell.expect(pexpect.EOF)
    shell.close()
    assert shell.exitstatus == 1


def test_ctrl_c_ends_the_session_at_once(moodbot_model: Path, tmp_path: Path) -> None:
    shell = spawn_shell(moodbot_model, tmp_path)
    shell.expect_exact(PROMPT)
    shell.sendline("hello there")
    shell.expect_exact("Hey! How are you?")
    shell.expect_exact(PROMPT)
    shell.sendintr()
    shell.expect(pexpect.EOF, timeout=10)  # it used to wait for enter, forever
    shell.close()
    assert shell.exitstatus == 130


def test_undecodable_input_is_replaced_and_the_session_goes_on(
    moodbot_model: Path, tmp_path: Path
) -> None:
    (tmp_path / "endpoints.yml").write_text(
        f"tracker_store:\n  type: sql\n  dialect: sqlite\n  db: {tmp_path / 'shell.db'}\n"
    )
    command = botserver_command()
    shell = subprocess.run(
        [*command, "shell", "-m", str(moodbot_model), "--quiet", "--sender", "ana"],
        input=b"hello\n\xff\xfe sad\nhello\n/stop\n",
        capture_output=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},  # strict, as in a UTF-8 terminal
        timeout=60,
    )
    assert shell.returncode == 0, shell.stderr.decode()
    assert shell.stdout.decode().count("Hey! How are you?") == 2
    with sqlite3.connect(tmp_path / "shell.db") as db:
        texts = [json.loads(row[0]).get("text") for row in db.execute("SELECT data FROM events")]
    assert "\ufffd\ufffd sad" in texts  # not lone surrogates, which no JSON answer can hold
