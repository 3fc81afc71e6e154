"""`botserver shell`: talk to the bot in the terminal, in process, with the server's own
assembly (same stores, action server and model loading as `botserver run`).

Bot messages are printed as they come; buttons are numbered and picked by number. `/stop`,
Ctrl-D or Ctrl-C ends the session; so does SIGTERM, after the turn in flight. `botserver
shell nlu` (and `shell` on an NLU-only model) prints each message's parse instead, as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import signal
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TextIO

from server.channels.channel import reply_choices
from server.dialogue.agent import Agent
from server.dialogue.messages import UserMessage
from server.errors import BotServerError, Terminated
from server.run_flags import no_model_to_talk_with
from server.setting_values import GRACEFUL_SHUTDOWN_ENV, graceful_shutdown_seconds

logger = logging.getLogger(__name__)

INPUT_CHANNEL = "cmdline"
STOP_COMMAND = "/stop"
PROMPT = "Your input -> "
NLU_PROMPT = "Next message:\n"
# The shell keeps conversations in memory unless endpoints.yml names a tracker store.
SHELL_TRACKER_STORE: dict[str, Any] = {"type": "in_memory"}


def format_message(message: dict[str, Any], out: TextIO) -> list[dict[str, Any]]:
    """Print one bot message; returns its buttons (for picking by number)."""
    if message.get("text"):
        print(message["text"], file=out)
    if message.get("image"):
        print(f"Image: {message['image']}", file=out)
    if message.get("attachment"):
        print(f"Attachment: {message['attachment']}", file=out)
    # Objects with a title and payload, whatever the shape sent (a bare string too).
    buttons = reply_choices(message) or []
    for number, button in enumerate(buttons, start=1):
        title = button.get("title") or button.get("payload")
        print(f"  {number}: {title} ({button.get('payload')})", file=out)
    if message.get("custom") is not None:
        print(json.dumps(message["custom"], ensure_ascii=False, indent=2), file=out)
    return buttons


def choose(text: str, buttons: list[dict[str, Any]]) -> str:
    """A button's payload when `text` is its number, else `text` itself."""
    if text.isdigit() and 1 <= int(text) <= len(buttons):
        return str(buttons[int(text) - 1].get("payload") or buttons[int(text) - 1].get("title"))
    return text


def _read_line(prompt: str) -> asyncio.Future[str]:
    """`input(prompt)` in a daemon thread: on Ctrl-C the shell ends at once, where a worker
    thread of the loop's executor would keep the process alive until enter is pressed."""
    loop = asyncio.get_running_loop()
    line: asyncio.Future[str] = loop.create_future()

    def settle(result: str | None, error: BaseException | None) -> None:
        if line.done():
            return
        if error is not None:
            line.set_exception(error)
        else:
            line.set_result(result or "")

    def read() -> None:
        try:
            loop.call_soon_threadsafe(settle, input(prompt), None)
        except Exception as exc:  # EOFError, and a terminal that went away
            loop.call_soon_threadsafe(settle, None, exc)

    threading.Thread(target=read, name="shell-input", daemon=True).start()
    return line


def still_reading() -> bool:
    """Whether a thread still waits for a line (a session ended by a signal). One blocked
    reading a pipe holds standard input's lock, on which the interpreter's shutdown aborts."""
    return any(thread.name == "shell-input" for thread in threading.enumerate())


def _replace_undecodable_input() -> None:
    """Bytes that are not valid in the terminal's encoding become U+FFFD, not a crash
    (strict decoding) or lone surrogates that no later JSON answer could hold."""
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(errors="replace")


async def _typed_lines(prompt: str, out: TextIO, newline_at_end: bool) -> AsyncIterator[str]:
    """The lines typed after `prompt`, stripped, blank ones skipped, until /stop or the end
    of input (after which `newline_at_end` ends the prompt's line)."""
    while True:
        try:
            line = await _read_line(prompt)
        except EOFError:
            if newline_at_end:
                print(file=out)
            return
        text = line.strip()
        if text == STOP_COMMAND:
            return
        if text:
            yield text


class SigtermStop:
    """SIGTERM's stop of a session (`kill`, `docker stop`, a service manager): at once while
    it waits for a line; a turn in flight first gets the graceful shutdown period to finish
    (and be stored), as with `botserver run`, then is cancelled; the stores' closing is let be."""

    def __init__(self) -> None:
        self.requested = False
        self.in_turn = False
        self.closing = False
        self.cut_off = False  # (the turn in flight outlasted the period)
        self.deadline: asyncio.TimerHandle | None = None

    def turn_ended(self) -> None:
        self.in_turn = False
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None


async def converse(
    agent: Agent, sender_id: str, out: TextIO | None = None, stop: SigtermStop | None = None
) -> None:
    """Read lines until /stop or end of input, printing the bot's answers to each (to `out`,
    standard output by default); or until SIGTERM asks `stop` to, after the turn in flight."""
    out = out or sys.stdout
    stop = stop or SigtermStop()
    buttons: list[dict[str, Any]] = []
    async for typed in _typed_lines(PROMPT, out, newline_at_end=True):
        text = choose(typed, buttons)
        stop.in_turn = True
        try:
            replies = await agent.handle_message(
                UserMessage(text, sender_id=sender_id, input_channel=INPUT_CHANNEL)
            )
        except BotServerError as exc:
            # The turn failed (a store down, a lock held too long): say so and keep the
            # session, as a client of `botserver run` gets an error and may send again.
            print(f"error: this message was not handled: {exc}", file=sys.stderr, flush=True)
            replies = []
        finally:
            stop.turn_ended()
        buttons = []
        for message in replies:
            buttons = format_message(message, out) or buttons
        out.flush()
        if stop.requested:
            return


async def print_parses(agent: Agent, out: TextIO | None = None) -> None:
    """Read lines until /stop or end of input, printing the parse of each (intent, entities,
    ranking: what POST /model/parse answers) as JSON, as Rasa's `shell nlu`. No conversation
    is kept."""
    out = out or sys.stdout
    async for text in _typed_lines(NLU_PROMPT, out, newline_at_end=False):
        parse = await asyncio.to_thread(agent.parse, text)
        print(json.dumps(parse, ensure_ascii=False, indent=2), file=out, flush=True)


def _handled(loop: asyncio.AbstractEventLoop, signum: int, handler: Any) -> bool:
    """Whether the loop now handles `signum` (not on Windows, nor off the main thread). The
    caller yields outside this `except`: an error of the session's would be chained to it."""
    try:
        loop.add_signal_handler(signum, handler)
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


@contextlib.contextmanager
def _ended_by_ctrl_c() -> Iterator[None]:
    """Ctrl-C cancels the session, then KeyboardInterrupt (exit 130), whichever of the
    process's threads the kernel hands it to (the loop's, unless that one has a signal
    pending already). asyncio's own handler learns of it only when the loop's thread runs:
    one handed to the thread reading the terminal left the loop asleep with no timer due,
    and the session went on. The loop's handler wakes it from any thread. A second Ctrl-C
    raises KeyboardInterrupt at once."""
    loop = asyncio.get_running_loop()
    session = asyncio.current_task()
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        if interrupted:
            return
        interrupted = True
        # A second Ctrl-C: KeyboardInterrupt at once, in what the loop's thread runs. The
        # loop's handler stays set, so one handed to another thread still wakes the loop
        # (a session's end waiting on a socket, no timer due, had slept on).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if session is not None:
            session.cancel()

    if not _handled(loop, signal.SIGINT, interrupt):
        yield
        return
    try:
        yield
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)


@contextlib.contextmanager
def _ended_by_sigterm(stop: SigtermStop) -> Iterator[None]:
    """SIGTERM ends the session as `stop` says, then Terminated (exit 143) with one line once
    the stores and broker are closed. Before, the shell died by the signal at once: the
    broker's pending events were lost and the stores not closed. A second SIGTERM ends the
    process at once."""
    loop = asyncio.get_running_loop()
    session = asyncio.current_task()

    def terminate() -> None:
        if stop.requested:
            loop.remove_signal_handler(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            return
        stop.requested = True
        if session is None or stop.closing:
            return
        if stop.in_turn:
            stop.deadline = loop.call_later(graceful_shutdown_seconds(), cut_off, session)
        else:
            session.cancel()

    def cut_off(session: asyncio.Task[Any]) -> None:
        stop.cut_off = True
        session.cancel()

    if not _handled(loop, signal.SIGTERM, terminate):
        yield
        return
    try:
        yield
    except asyncio.CancelledError:
        if not stop.requested:
            raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
    if stop.requested:
        cancelled = (
            f"; the turn in flight was cancelled after {GRACEFUL_SHUTDOWN_ENV}="
            f"{graceful_shutdown_seconds():g} seconds, its message not stored"
            if stop.cut_off
            else ""
        )
        print(
            f"stopped by SIGTERM: the stores and event broker are closed{cancelled}",
            file=sys.stderr,
            flush=True,
        )
        raise Terminated


async def run_shell(
    model_path: Path | str | None,
    endpoints: dict[str, Any],
    sender: str | None = None,
    nlu_only: bool = False,
    remote_storage: str | None = None,
    verify_key: Path | None = None,
) -> int:
    """The `botserver shell` command (`endpoints`: endpoints.yml's sections; `nlu_only`:
    `shell nlu`; `remote_storage` and `verify_key` as `botserver run`'s flags); returns the
    exit code."""
    stop = SigtermStop()
    with _ended_by_ctrl_c(), _ended_by_sigterm(stop):
        return await _run_shell(
            model_path, endpoints, sender, nlu_only, remote_storage, verify_key, stop
        )


async def _run_shell(
    model_path: Path | str | None,
    endpoints: dict[str, Any],
    sender: str | None,
    nlu_only: bool,
    remote_storage: str | None,
    verify_key: Path | None,
    stop: SigtermStop,
) -> int:
    from server.api.server import ServerOptions, build_app

    _replace_undecodable_input()
    options = ServerOptions(
        model_path=model_path,
        endpoints=endpoints,
        connector="rest",
        remote_storage=remote_storage,
        verify_key=verify_key,
        default_tracker_store=dict(SHELL_TRACKER_STORE),
    )
    app = build_app(options)
    async with app.router.lifespan_context(app):
        agent: Agent = app.state.agent
        if not agent.is_ready:
            print(f"error: {no_model_to_talk_with(model_path)}", file=sys.stderr)
            return 1
        if nlu_only or agent.model().nlu_only:
            print(
                "NLU model loaded. Type a message and press enter to see how it is parsed "
                f"(use '{STOP_COMMAND}' to exit).",
                flush=True,
            )
            await print_parses(agent)
            stop.closing = True
            return 0
        print(
            f"Bot loaded. Type a message and press enter (use '{STOP_COMMAND}' to exit).",
            flush=True,
        )
        await converse(agent, sender or uuid.uuid4().hex, stop=stop)
        stop.closing = True
    return 0
