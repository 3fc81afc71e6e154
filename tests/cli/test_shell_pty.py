"""`botserver shell` driven through a pseudo-terminal: a short conversation with moodbot."""

from __future__ import annotations

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
