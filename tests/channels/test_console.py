"""`botserver shell`'s printing of bot messages, and the picking of buttons by number."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import threading
import traceback

import pytest

from server.channels.console import _ended_by_ctrl_c, choose, format_message
from tests.loop_lag import paced


def test_buttons_that_are_not_objects_are_printed_and_picked_by_number() -> None:
    # An NLG or action server may send bare strings as buttons (botserver says such a
    # message, docs/differences-from-rasa.md). Before, the shell stopped on an AttributeError
    # ('str' object has no attribute 'get').
    out = io.StringIO()
    message = {"text": "Sure?", "buttons": ["yes", {"title": "No", "payload": "/deny"}]}
    buttons = format_message(message, out)
    assert out.getvalue() == "Sure?\n  1: yes (yes)\n  2: No (/deny)\n"
    assert choose("1", buttons) == "yes"
    assert choose("2", buttons) == "/deny"


# A session whose end waits on what never comes (a socket, no timer due). Ctrl-C is handed
# to another thread than the loop's, as the system may (to the one reading the terminal).
_SESSION_WHOSE_END_HANGS = """
import asyncio, signal, sys, threading
from server.channels.console import _ended_by_ctrl_c

ending = threading.Event()

def ctrl_c_twice() -> None:
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)
    ending.wait()
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)

async def session() -> None:
    with _ended_by_ctrl_c():
        never = asyncio.get_running_loop().create_future()
        threading.Thread(target=ctrl_c_twice, daemon=True).start()
        try:
            await never
        finally:
            print("ending", flush=True)
            ending.set()
            await asyncio.get_running_loop().create_future()

try:
    asyncio.run(session())
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.timing
def test_a_second_ctrl_c_stops_a_hanging_end_whichever_thread_it_reaches() -> None:
    # Before, the first Ctrl-C woke the loop, the second only raised once the loop's thread
    # ran again: the session's end slept on, and the shell with it.
    done = subprocess.run(
        [sys.executable, "-c", _SESSION_WHOSE_END_HANGS],
        capture_output=True,
        text=True,
        timeout=paced(30),
    )
    assert (done.returncode, done.stdout) == (130, "ending\n")


def test_an_error_out_of_the_shell_off_the_main_thread_is_not_chained_to_signals() -> None:
    # Off the main thread (or on Windows) Ctrl-C is left to Python; the error a session
    # raised there was shown "during handling of" set_wakeup_fd's RuntimeError.
    async def session() -> None:
        with _ended_by_ctrl_c():
            raise ValueError("the session's own error")

    failures: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(session())
        except ValueError as exc:
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert [str(e) for e in failures] == ["the session's own error"]
    assert "set_wakeup_fd" not in "".join(traceback.format_exception(failures[0]))
