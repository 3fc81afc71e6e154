"""`botserver shell` driven through a pseudo-terminal: a short conversation with moodbot."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pexpect
import pytest

from tests.cli.botserver_process import botserver_command
from tests.loop_lag import paced

PROMPT = "Your input -> "
_SYS_TGKILL = 234  # (x86-64 Linux: a signal to one thread of another process)


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


def _thread_reading_the_terminal(pid: int) -> int:
    """The thread of process `pid` waiting on its terminal for a line (`input()`: in a read,
    system call 0, of its standard input), once the loop's thread sleeps (in epoll_wait, 232,
    or epoll_pwait, 281): a signal the loop's thread takes while running reaches asyncio."""
    for _ in range(1_000):
        calls: dict[int, list[str]] = {}
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                calls[int(task.name)] = (task / "syscall").read_text().split()[:2]
            except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
                continue
        readers = [tid for tid, call in calls.items() if tid != pid and call == ["0", "0x0"]]
        if readers and calls.get(pid, [])[:1] in (["232"], ["281"]):
            return readers[0]
        time.sleep(0.01)
    raise AssertionError(f"no thread of the shell waits on the terminal, the loop asleep: {calls}")


@pytest.mark.timing
@pytest.mark.skipif(platform.machine() != "x86_64", reason="tgkill's number is x86-64's")
def test_ctrl_c_ends_the_session_whichever_thread_the_signal_reaches(
    moodbot_model: Path, tmp_path: Path
) -> None:
    """The kernel may hand a Ctrl-C to any thread of the process not blocking it (the loop's
    own unless that one has a signal pending already), so to the one reading the terminal:
    before, the event loop, asleep with no timer due, never learnt of it, and the session
    went on (here until the pexpect timeout)."""
    shell = spawn_shell(moodbot_model, tmp_path)
    shell.expect_exact(PROMPT)
    pid = shell.pid
    assert pid is not None
    reader = _thread_reading_the_terminal(pid)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(_SYS_TGKILL, pid, reader, signal.SIGINT) == 0
    shell.expect(pexpect.EOF, timeout=paced(10))
    shell.close()
    assert shell.exitstatus == 130


def test_sigterm_ends_the_session_with_its_conversation_stored(
    moodbot_model: Path, tmp_path: Path
) -> None:
    """`kill`, `docker stop`: before, the shell died by the signal, its stores left unclosed;
    now the session ends as with Ctrl-C, the stores closed, exit 143 and one line."""
    (tmp_path / "endpoints.yml").write_text(
        f"tracker_store:\n  type: sql\n  dialect: sqlite\n  db: {tmp_path / 'shell.db'}\n"
    )
    shell = spawn_shell(moodbot_model, tmp_path)
    shell.expect_exact(PROMPT)
    shell.sendline("hello there")
    shell.expect_exact("Hey! How are you?")
    shell.expect_exact(PROMPT)
    shell.kill(signal.SIGTERM)
    shell.expect_exact("stopped by SIGTERM: the stores and event broker are closed", timeout=10)
    shell.expect(pexpect.EOF, timeout=10)
    shell.close()
    assert (shell.exitstatus, shell.signalstatus) == (143, None)
    with sqlite3.connect(tmp_path / "shell.db") as db:
        texts = [json.loads(row[0]).get("text") for row in db.execute("SELECT data FROM events")]
    assert "hello there" in texts
    assert "Hey! How are you?" in texts


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["Ctrl-C", "SIGTERM"]
)
def test_a_signal_ends_a_session_reading_a_pipe_with_its_exit_code(
    moodbot_model: Path, tmp_path: Path, signum: int, code: int
) -> None:
    """Input from a pipe left open (`docker run -i`, a script): the thread reading it held
    stdin's lock, and the interpreter's shutdown aborted on it (SIGABRT, "Fatal Python
    error: _enter_buffered_busy")."""
    shell = subprocess.Popen(
        [*botserver_command(), "shell", "-m", str(moodbot_model), "--quiet"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    assert shell.stdout is not None and shell.stdin is not None
    while b"Bot loaded" not in (line := shell.stdout.readline()):
        assert line, "the shell ended before its session"
    shell.stdin.write(b"hello\n")
    shell.stdin.flush()
    while b"Hey! How are you?" not in (line := shell.stdout.readline()):
        assert line, "the shell ended before its answer"
    shell.send_signal(signum)
    try:
        assert shell.wait(timeout=30) == code, shell.stdout.read().decode()
    finally:
        shell.stdin.close()
        shell.kill()
