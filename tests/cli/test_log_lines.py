"""The log file `botserver run --log-file` writes: one line per record, whatever a client put
in the strings it logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from bench.tcp_proxy import free_port
from cli import build_parser, main
from server import __version__
from server.api.runner import announcing_server, server_app
from server.api.server import ServerOptions
from server.errors import InvalidConfig
from server.logs import SaidAtStart, configure_logging, saying_once

HOSTILE = "a\n2026-12-04 00:00:00,000 ERROR   server.forged - admin logged in\x00\x1b[2J\u2028"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_client_string_cannot_forge_a_log_line(
    fmt: str, tmp_path: Path, restore_logging: None
) -> None:
    """Before, a sender id with a newline wrote a second, forged record into the text log."""
    log_file = tmp_path / "out.log"
    configure_logging(log_file=str(log_file), fmt=fmt)
    logging.getLogger("server.channels.rest").error("rest: message from %s failed", HOSTILE)
    for handler in logging.getLogger().handlers:
        handler.flush()
    lines = log_file.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    if fmt == "json":
        assert json.loads(lines[0])["message"] == f"rest: message from {HOSTILE} failed"
    else:
        assert "\\n2026-12-04" in lines[0] and "\\x00\\x1b[2J\\u2028" in lines[0]


def test_a_json_line_carries_no_raw_c1_control_or_del(
    tmp_path: Path, restore_logging: None
) -> None:
    """JSON escapes the C0 controls itself, not DEL and the C1 controls: before, U+0085 (a line
    break to Python's `splitlines` and some log readers) and U+009B (a terminal's CSI, as
    `ESC [`) went into `--log-format json` lines raw."""
    log_file = tmp_path / "out.log"
    configure_logging(log_file=str(log_file), fmt="json")
    hostile = "a\x85forged\x9b2J\x7f"
    logger = logging.getLogger("server.channels.rest")
    logger.error("rest: message from %s failed", hostile, extra={"sender_id": hostile})
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = log_file.read_text(encoding="utf-8")
    assert not set(text) & {"\x85", "\x9b", "\x7f"}
    assert "\\u0085forged\\u009b2J\\u007f" in text
    (line,) = text.splitlines()
    record = json.loads(line)
    assert record["message"] == f"rest: message from {hostile} failed"
    assert record["sender_id"] == hostile


def test_the_log_file_goes_on_at_its_path_after_logrotate_moves_it(
    tmp_path: Path, restore_logging: None
) -> None:
    """logrotate's default (rename, then a new file) and `copytruncate` both keep the lines
    coming at the path; before, the moved file got every later line and the path none."""
    log_file = tmp_path / "out.log"
    configure_logging(log_file=str(log_file))
    logger = logging.getLogger("server.rotation")
    logger.warning("before the rotation")
    log_file.rename(tmp_path / "out.log.1")
    logger.warning("after the rotation")
    assert "after the rotation" not in (tmp_path / "out.log.1").read_text()
    assert log_file.read_text().rstrip().endswith("server.rotation - after the rotation")
    (tmp_path / "out.log.2").write_bytes(log_file.read_bytes())  # copytruncate: copy...
    log_file.write_bytes(b"")  # ... and truncate in place
    logger.warning("after the truncation")
    lines = log_file.read_bytes().splitlines()
    assert len(lines) == 1 and lines[0].endswith(b"server.rotation - after the truncation")


@pytest.mark.parametrize(
    ("env", "shown"),
    [
        ({}, {"info"}),
        ({"LOG_LEVEL": "WARNING"}, set()),
        ({"LOG_LEVEL": "debug"}, {"debug", "info"}),
    ],
)
def test_log_level_sets_our_level_as_in_rasa(
    env: dict[str, str],
    shown: set[str],
    tmp_path: Path,
    restore_logging: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, LOG_LEVEL (which Rasa deployments set) was ignored."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    log_file = tmp_path / "out.log"
    configure_logging(log_file=str(log_file))
    logger = logging.getLogger("server.levels")
    logger.debug("a debug line")
    logger.info("an info line")
    logger.warning("a warning line")
    text = log_file.read_text()
    assert ("a debug line" in text, "an info line" in text) == ("debug" in shown, "info" in shown)
    assert "a warning line" in text


def test_log_level_libraries_quiets_or_opens_the_libraries(
    tmp_path: Path, restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_LEVEL_LIBRARIES", "ERROR")
    configure_logging(verbosity=2)
    assert not logging.getLogger("httpx").isEnabledFor(logging.WARNING)
    assert logging.getLogger("server.x").isEnabledFor(logging.DEBUG)
    monkeypatch.setenv("LOG_LEVEL_LIBRARIES", "DEBUG")
    monkeypatch.setenv("LOG_LEVEL_RABBITMQ", "INFO")
    configure_logging()
    assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("aio_pika").isEnabledFor(logging.DEBUG)


def test_a_log_level_that_is_none_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "loud")
    assert main(["data", "validate"]) == 1
    assert "error: LOG_LEVEL='loud' is not a log level" in capsys.readouterr().err


RASA_LOGGING_CONFIG = """\
version: 1
disable_existing_loggers: true
formatters:
  customFormatter:
    format: '{"time": "%(asctime)s", "name": "[%(name)s]", "message": "%(message)s"}'
handlers:
  file:
    class: logging.FileHandler
    formatter: customFormatter
    filename: {path}
loggers:
  rasa:
    level: INFO
    handlers: [file]
    propagate: 0
"""


def test_a_rasa_logging_config_file_sends_our_lines_where_it_sends_rasas(
    tmp_path: Path, restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rasa's documented example, as a Rasa deployment has it. Before, `botserver run
    --logging-config-file` was refused as an unknown flag."""
    args, unknown = build_parser().parse_known_args(["run", "--logging-config-file", "x.yml"])
    assert not unknown and args.logging_config_file == "x.yml"
    config = tmp_path / "logging.yml"
    config.write_text(RASA_LOGGING_CONFIG.replace("{path}", str(tmp_path / "rasa.log")))
    configure_logging(config_file=str(config))
    logging.getLogger("server.channels.rest").info("from %s, token=s3cr3t-value", HOSTILE)
    logging.getLogger("server.channels.rest").debug("not at INFO")
    for handler in logging.getLogger("server").handlers:
        handler.flush()
    lines = (tmp_path / "rasa.log").read_text().splitlines()
    assert len(lines) == 1, lines
    assert '"name": "[server.channels.rest]"' in lines[0]  # its own format
    assert "s3cr3t" not in lines[0] and "token=***" in lines[0]
    assert "server.channels.rest" not in capsys.readouterr().err  # propagate: 0, as asked


def test_a_logging_config_files_handler_gets_one_line_a_record_too(
    tmp_path: Path, restore_logging: None
) -> None:
    """A handler of a `--logging-config-file` formats with its own format; a client's text in
    the message or in an exception's message stays on the record's line or in the indented
    traceback. Before, `ValueError: <text>` went into its file with the text's newlines and
    escapes as they were."""
    config = tmp_path / "logging.yml"
    config.write_text(RASA_LOGGING_CONFIG.replace("{path}", str(tmp_path / "rasa.log")))
    configure_logging(config_file=str(config))
    logger = logging.getLogger("server.api.errors")
    logger.error("from %s", HOSTILE)
    try:
        raise ValueError(f"no conversation {HOSTILE}")
    except ValueError:
        logger.exception("Unhandled error in GET /x")
    for handler in logging.getLogger("server").handlers:
        handler.flush()
    text = (tmp_path / "rasa.log").read_text(encoding="utf-8")
    heads = [line for line in text.splitlines() if not line.startswith(" ")]
    assert len(heads) == 2, heads
    assert "\x1b" not in text and "\x00" not in text and "\u2028" not in text
    assert "  ValueError: no conversation a\n  2026-12-04 00:00:00,000 ERROR" in text


def test_a_logging_config_file_that_cannot_be_used_is_named(
    tmp_path: Path, restore_logging: None
) -> None:
    config = tmp_path / "logging.yml"
    config.write_text("version: 1\nhandlers:\n  h:\n    class: no.such.Handler\n")
    with pytest.raises(InvalidConfig, match=r"--logging-config-file .*logging.yml: "):
        configure_logging(config_file=str(config))
    with pytest.raises(InvalidConfig, match="No such file"):
        configure_logging(config_file=str(tmp_path / "missing.yml"))


def test_a_client_string_in_an_exception_cannot_forge_a_log_line(
    tmp_path: Path, restore_logging: None
) -> None:
    """Before, a traceback's last line (`KeyError: <text>`) carried a client's newlines and
    escapes as they were: a forged record at the margin, a cleared terminal."""
    log_file = tmp_path / "out.log"
    configure_logging(log_file=str(log_file))
    try:
        raise ValueError(f"no conversation {HOSTILE}")
    except ValueError:
        logging.getLogger("server.api.errors").exception("Unhandled error in GET /x")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = log_file.read_text()
    heads = [line for line in text.splitlines() if not line.startswith(" ")]
    assert len(heads) == 1 and heads[0].endswith("server.api.errors - Unhandled error in GET /x")
    assert "\x1b" not in text and "\x00" not in text and "\u2028" not in text
    assert "  ValueError: no conversation a\n  2026-12-04 00:00:00,000 ERROR" in text


def test_json_lines_of_uvicorn_carry_no_colour_template(
    tmp_path: Path, restore_logging: None
) -> None:
    """Before, every uvicorn line in `--log-format json` had a `color_message` field: the
    unformatted template with terminal escapes."""
    log_file = tmp_path / "out.log"
    configure_logging(verbosity=1, log_file=str(log_file), fmt="json")
    colour = {"color_message": "Started server process [\x1b[36m%d\x1b[0m]"}
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42, extra=colour)
    logging.getLogger("server.x").info("turn", extra={"sender_id": "me"})
    for handler in logging.getLogger().handlers:
        handler.flush()
    uvicorn, ours = (json.loads(line) for line in log_file.read_text().splitlines())
    assert set(uvicorn) == {"time", "level", "logger", "message"}
    assert uvicorn["message"] == "Started server process [42]"
    assert ours["sender_id"] == "me"  # other extra fields stay


@pytest.mark.parametrize("command", [["run"], ["train"], ["data", "validate"], ["shell"]])
def test_rasas_debug_flag_is_vv(command: list[str]) -> None:
    """Before, `botserver run --debug` (Rasa's spelling of -vv) was refused."""
    args, unknown = build_parser().parse_known_args([*command, "--debug"])
    assert not unknown and args.verbose == 2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def _serve_briefly(server: uvicorn.Server) -> None:
    """Run `server` until it has started (or failed to), then stop it."""
    serving = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or serving.done():
            break
        await asyncio.sleep(0.05)
    server.should_exit = True
    await serving


@pytest.mark.parametrize("layout", ["one terminal", "one file", "two pipes", "quiet"])
async def test_the_server_says_once_that_it_is_up_and_where(
    layout: str,
    tmp_path: Path,
    restore_logging: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The log file says it, and so does the process's output, once wherever stdout and
    stderr end up: a terminal, one file (`> out.log 2>&1`), or two pipes one log reads
    (Docker). Before, it came twice in the last two, printed then logged."""
    stdout = _Terminal() if layout == "one terminal" else io.StringIO()
    stderr = stdout if layout in ("one terminal", "one file") else io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)
    log_file = tmp_path / "out.log"
    configure_logging(-1 if layout == "quiet" else 0, log_file=str(log_file))
    options = ServerOptions(model_path=None, default_tracker_store={"type": "in_memory"})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = uvicorn.Config(server_app(options, metrics=False), port=port, log_config=None)
    await _serve_briefly(announcing_server(config, url, enable_api=False))
    for handler in logging.getLogger().handlers:
        handler.flush()
    up = f"is up on {url}"
    output = stdout.getvalue() + ("" if stderr is stdout else stderr.getvalue())
    assert output.count(up) == 1, output
    if layout == "one terminal":
        assert f"botserver {__version__} {up}\n" in stdout.getvalue()  # bare, for people
    elif layout == "quiet":
        assert up in stdout.getvalue()  # printed: quiet hides our info lines
    else:
        assert f"INFO    server.api.runner - botserver {__version__} {up}" in output
    assert (up in log_file.read_text(encoding="utf-8")) is (layout != "quiet")


def test_v_shows_migrations_but_not_alembics_plugin_set_up(restore_logging: None) -> None:
    """Before, every start with -v began with seven `setup plugin alembic...` lines."""
    configure_logging(verbosity=1)
    assert logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.INFO)
    assert not logging.getLogger("alembic.runtime.plugins").isEnabledFor(logging.INFO)
    configure_logging(verbosity=2)
    assert not logging.getLogger("alembic.runtime.plugins").isEnabledFor(logging.INFO)
    assert logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.DEBUG)


def test_vv_opens_our_lines_not_the_libraries_as_in_rasa(
    tmp_path: Path, restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, -vv set the libraries to DEBUG too: a first start on a new SQLite file wrote
    some 400 lines of aiosqlite and SQLAlchemy ahead of the turns' lines. They stay at
    LOG_LEVEL_LIBRARIES (WARNING unset), as Rasa keeps its libraries."""
    log_file = tmp_path / "out.log"
    configure_logging(verbosity=2, log_file=str(log_file))
    for name in ("aiosqlite", "sqlalchemy.engine.Engine", "asyncpg", "redis.asyncio", "asyncio"):
        logging.getLogger(name).debug("a library's debug line")
        logging.getLogger(name).info("a library's info line")
    logging.getLogger("server.dialogue.processor").debug("turn sender=a")
    logging.getLogger("uvicorn.error").info("Started server process [1]")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = log_file.read_text()
    assert "a library's" not in text
    assert "turn sender=a" in text and "Started server process" in text
    monkeypatch.setenv("LOG_LEVEL_LIBRARIES", "DEBUG")
    monkeypatch.setenv("LOG_LEVEL_KAFKA", "ERROR")
    configure_logging()
    assert logging.getLogger("aiosqlite").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("kafka.conn").isEnabledFor(logging.WARNING)


async def test_v_says_once_that_the_server_is_up(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, -v showed uvicorn's "Uvicorn running on ... (Press CTRL+C to quit)" beside
    our "is up on" line."""
    output = io.StringIO()
    monkeypatch.setattr(sys, "stdout", output)
    monkeypatch.setattr(sys, "stderr", output)
    configure_logging(verbosity=1)
    port = free_port()
    options = ServerOptions(model_path=None, default_tracker_store={"type": "in_memory"})
    app = server_app(options, metrics=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None)
    await _serve_briefly(announcing_server(config, f"http://127.0.0.1:{port}", enable_api=True))

    text = output.getvalue()
    up = f"is up on http://127.0.0.1:{port} (inspector: http://127.0.0.1:{port}/inspect)"
    assert text.count(up) == 1, text
    assert "Application startup complete" in text  # uvicorn's own -v lines stay
    assert "Uvicorn running on" not in text, text


def test_rasas_syslog_flags_send_the_log_lines_to_syslog(restore_logging: None) -> None:
    # `rasa run --use-syslog --syslog-address ... --syslog-port ...`: before, exit 2.
    import socket

    from server.api.runner import spec_from_args

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        port = receiver.getsockname()[1]
        flags = ["--use-syslog", "--syslog-address", "127.0.0.1", "--syslog-port", str(port)]
        args = build_parser().parse_args(["run", *flags])
        assert spec_from_args(args).syslog == ("127.0.0.1", port, "UDP")  # and its workers'
        configure_logging(syslog=spec_from_args(args).syslog)
        logging.getLogger("server.channels.rest").warning("to syslog")
        assert b"server.channels.rest - to syslog" in receiver.recv(4096)


def test_a_syslog_over_tcp_that_nobody_listens_on_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, not listening: connections are refused
        code = main(
            [
                "run",
                "--use-syslog",
                "--syslog-address",
                "127.0.0.1",
                "--syslog-port",
                str(port),
                "--syslog-protocol",
                "TCP",
            ]
        )
    assert code == 1
    assert f"error: --use-syslog (TCP 127.0.0.1:{port}): " in capsys.readouterr().err


@pytest.mark.parametrize("protocol", ["tcp", "Tcp"])
def test_the_syslog_protocol_may_be_written_in_lower_case(
    protocol: str, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """`tcp` is TCP (before: exit 2, as only `UDP` and `TCP` were taken; Rasa takes any
    word, and sends by UDP for all but `TCP`)."""
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, not listening: connections are refused
        flags = ["--syslog-address", "127.0.0.1", "--syslog-port", str(port)]
        code = main(["run", "--use-syslog", *flags, "--syslog-protocol", protocol])
    assert code == 1
    assert f"error: --use-syslog (TCP 127.0.0.1:{port}): " in capsys.readouterr().err


def test_another_syslog_protocol_is_udp_with_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As Rasa, which sends by UDP for any word but `TCP`; we say so (before: exit 2)."""
    from server.api.runner import spec_from_args

    args = build_parser().parse_args(["run", "--use-syslog", "--syslog-protocol", "tls"])
    assert spec_from_args(args).syslog == ("localhost", 514, "UDP")
    err = capsys.readouterr().err
    assert "--syslog-protocol 'tls' is neither UDP nor TCP: UDP is used" in err
    assert build_parser().parse_args(["run", "--syslog-protocol", "udp"]).syslog_protocol == "UDP"
    assert capsys.readouterr().err == ""


def test_a_warning_said_at_start_reaches_every_handler_once_and_is_dropped_after() -> None:
    """`--workers N`: the parent's line goes to each of its handlers (stderr and a
    `--log-file`), and a worker's same line to none of them."""
    logger = logging.getLogger("server.tests.said_at_start")
    root = logging.getLogger()
    streams = [io.StringIO(), io.StringIO()]
    handlers = [logging.StreamHandler(stream) for stream in streams]
    for handler in handlers:
        root.addHandler(handler)
    try:
        parent = SaidAtStart(collect=True)
        with saying_once(parent):
            logger.warning("key_prefix 'my bot' may only hold letters")
            logger.warning("key_prefix 'my bot' may only hold letters")  # its trial build
        with saying_once(SaidAtStart(parent.said)):  # a worker
            logger.warning("key_prefix 'my bot' may only hold letters")
            logger.warning("something else")
    finally:
        for handler in handlers:
            root.removeHandler(handler)
    for stream in streams:
        assert stream.getvalue().splitlines() == [
            "key_prefix 'my bot' may only hold letters",
            "something else",
        ]


FORGING_SENDER = "a\n2026-12-07 00:00:00,000 ERROR   forged"
ESCAPED_SENDER = "a\\n2026-12-07 00:00:00,000 ERROR   forged"


@pytest.mark.slow
async def test_a_sender_id_cannot_forge_a_line_in_the_log_file_of_botserver_run(
    moodbot_model: Path, tmp_path: Path
) -> None:
    """`botserver run -vv --log-file`: a REST message's turn line and a conversation lock's
    line (a turn that waited past the lock's wait_timeout) name a sender id holding a newline
    and a forged record, each in one line with the newline escaped."""
    import re

    import httpx

    from server.trackers.factory import create_lock_store
    from tests.cli.botserver_process import start_botserver
    from tests.trackers.persistence_fixtures import (
        REDIS,
        delete_redis_keys,
        require_service,
        unique_name,
    )

    require_service("Redis", REDIS)
    prefix = unique_name("bslogline")
    lock_store = {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    (tmp_path / "endpoints.yml").write_text(
        f"lock_store:\n  type: redis\n  url: {REDIS[0]}\n  port: {REDIS[1]}\n"
        f"  key_prefix: {prefix}\n  wait_timeout: 0.5\n",
        encoding="utf-8",
    )
    args = ["-m", str(moodbot_model.parent), "-vv", "--log-file", "out.log"]
    server = start_botserver([*args, "--endpoints", "endpoints.yml"], tmp_path, tmp_path)
    locks = create_lock_store(lock_store)
    try:
        server.wait_until("/", timeout=90)
        webhook = server.url + "/webhooks/rest/webhook"
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"sender": FORGING_SENDER, "message": "hello"}
            assert (await client.post(webhook, json=body)).status_code == 200
            async with locks.lock(FORGING_SENDER):  # the next turn waits, then gives up
                assert (await client.post(webhook, json=body)).status_code == 503
    finally:
        server.stop()
        await locks.close()
        await delete_redis_keys(prefix)
    lines = (tmp_path / "out.log").read_text(encoding="utf-8").splitlines()
    record = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ +\S+ - ")
    assert not [line for line in lines if line.startswith("2026-12-07 00:00:00,000 ERROR")]
    strays = [line for line in lines if not (record.match(line) or line.startswith("  "))]
    assert not strays, strays
    turn = [line for line in lines if f"turn sender={ESCAPED_SENDER} intent=" in line]
    busy = [line for line in lines if f"Could not lock conversation '{ESCAPED_SENDER}'" in line]
    assert len(turn) == 1 and len(busy) == 1, lines


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_error_that_ends_a_command_is_in_the_log_file_too(
    fmt: str, run_cli, starter_copy: Path
) -> None:
    """A server run by a service manager with --log-file says there why it stopped: before,
    the file held the warnings before the failure and not the failure itself."""
    log_file = starter_copy / "out.log"

    flags = ("--log-file", str(log_file), "--log-format", fmt)
    result = run_cli("test", "core", "-s", "tset", *flags, cwd=starter_copy)

    assert result.code == 1
    said = "test stories not found at 'tset' (give them with --stories)"
    # On stderr once, bare, as before (and as Rasa prints it).
    assert result.err.count(said) == 1
    assert f"error: {said}" in result.err
    lines = log_file.read_text(encoding="utf-8").splitlines()
    if fmt == "json":
        records = [json.loads(line) for line in lines]
        assert [r for r in records if r["level"] == "error"] == [
            {"time": records[-1]["time"], "level": "error", "logger": "botserver", "message": said}
        ]
    else:
        assert lines[-1].endswith(f"ERROR   botserver - {said}")
        assert sum(said in line for line in lines) == 1


def test_the_error_that_ends_a_command_goes_to_a_logging_config_files_handlers(
    run_cli, starter_copy: Path
) -> None:
    """Its file gets the line; its handler on stderr does not print it a second time."""
    config = starter_copy / "logging.yml"
    config.write_text(
        "version: 1\n"
        "handlers:\n"
        "  console: {class: logging.StreamHandler, stream: 'ext://sys.stderr'}\n"
        f"  file: {{class: logging.FileHandler, filename: '{starter_copy / 'rasa.log'}'}}\n"
        "loggers:\n"
        "  rasa: {handlers: [console, file], propagate: false}\n"
    )

    result = run_cli(
        "test", "core", "-s", "tset", "--logging-config-file", str(config), cwd=starter_copy
    )

    assert result.code == 1
    said = "test stories not found at 'tset' (give them with --stories)"
    assert result.err.count(said) == 1
    assert (starter_copy / "rasa.log").read_text(encoding="utf-8").count(said) == 1


def _the_failure_logged_once(result, log_file: Path, said: str) -> None:
    """`said` is the `error:` line on stderr, once and bare, and the log file's last record."""
    assert result.err.count(said) == 1, result.err
    assert f"error: {said}" in result.err
    lines = log_file.read_text(encoding="utf-8").splitlines()
    assert lines and lines[-1].endswith(f"ERROR   botserver - {said}"), lines
    assert sum(said in line for line in lines) == 1


def test_a_failed_test_run_under_fail_on_prediction_errors_says_so_in_the_log_file(
    run_cli, starter_copy: Path
) -> None:
    """Before, the line was on stderr only: a CI job's log file ended with the test's lines."""
    (starter_copy / "tests" / "test_wrong.yml").write_text(
        'version: "3.1"\nstories:\n- story: wrong answer\n  steps:\n'
        "  - intent: greet\n  - action: utter_goodbye\n"
    )
    log_file = starter_copy / "out.log"

    result = run_cli(
        "test", "core", "--fail-on-prediction-errors", "--log-file", str(log_file),
        cwd=starter_copy,
    )  # fmt: skip

    assert result.code == 1
    failed = starter_copy / "results" / "failed_test_stories.yml"
    said = f"1 test story failed (--fail-on-prediction-errors); see {Path('results') / failed.name}"
    _the_failure_logged_once(result, log_file, said)


def _an_unknown_action_in_a_story(project: Path) -> Path:
    """One validation error (a story's action the domain lacks); the log file to give."""
    stories = project / "data" / "stories.yml"
    stories.write_text(
        stories.read_text().replace("action: utter_goodbye", "action: action_goodbye", 1)
    )
    return project / "out.log"


def test_train_refused_by_the_project_validation_says_so_in_the_log_file(
    run_cli, starter_copy: Path
) -> None:
    log_file = _an_unknown_action_in_a_story(starter_copy)

    result = run_cli("train", "--force", "--log-file", str(log_file), cwd=starter_copy)

    assert result.code == 1
    # No "or train anyway with --skip-validation": an action the domain lacks stops training
    # past the validation too (the starter's policies look every story action up, as Rasa's).
    said = "Project validation completed with errors (1 error): nothing was trained. Correct them."
    _the_failure_logged_once(result, log_file, said)
    # Why, too: the validation error itself, before the summary (once on stderr as before).
    why = _validation_error_logged_once(result.err, log_file)
    assert "action_goodbye" in why


def _validation_error_logged_once(shown: str, log_file: Path) -> str:
    """The first `error:` line a validation printed in `shown`: its text, which the log file
    holds once too, as an ERROR record of `botserver`."""
    line = next(line for line in shown.splitlines() if line.startswith("error: "))
    why = line.removeprefix("error: ")
    logged = [line for line in log_file.read_text(encoding="utf-8").splitlines() if why in line]
    assert len(logged) == 1 and logged[0].endswith(f"ERROR   botserver - {why}"), logged
    assert shown.count(why) == 1, shown
    return why


def test_data_validate_says_its_errors_in_the_log_file_too(run_cli, starter_copy: Path) -> None:
    """`data validate --log-file` in a CI job: before, the file held neither the errors nor
    the verdict; the errors are there now (on stdout once, as before, not on stderr again)."""
    log_file = _an_unknown_action_in_a_story(starter_copy)

    result = run_cli("data", "validate", "--log-file", str(log_file), cwd=starter_copy)

    assert result.code == 1
    why = _validation_error_logged_once(result.out, log_file)
    assert "action_goodbye" in why
    assert why not in result.err


def test_run_actions_without_rasa_sdk_says_so_in_its_log_file(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rasa-sdk's --log-file (as `rasa run actions --log-file` writes it) gets the line too."""
    import cli

    monkeypatch.setattr(cli, "ACTION_SERVER_MODULE", "rasa_sdk_is_not_installed_here")
    log_file = tmp_path / "actions.log"

    result = run_cli("run", "actions", "-p", "5056", "--log-file", str(log_file), cwd=tmp_path)

    assert result.code == 1
    said = (
        "`run actions` starts rasa-sdk's action server, which is not installed in this Python "
        f"({sys.executable}): pip install rasa-sdk, then run it again"
    )
    assert result.err.count(said) == 1 and f"error: {said}" in result.err
    (line,) = log_file.read_text(encoding="utf-8").splitlines()
    assert f"ERROR   botserver - {said}" in line


def test_run_actions_without_rasa_sdk_says_so_whatever_its_logging_flags(
    run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A logging flag value botserver's parser refuses (rasa-sdk's own to judge) still gets
    the line that rasa-sdk is missing, not a usage error of the logging flags."""
    import cli

    monkeypatch.setattr(cli, "ACTION_SERVER_MODULE", "rasa_sdk_is_not_installed_here")

    result = run_cli("run", "actions", "--log-format", "xml")

    assert result.code == 1
    assert result.err.startswith("error: `run actions` starts rasa-sdk's action server")


def _start_on_a_port_taken_meanwhile(run_cli, tmp_path: Path) -> tuple[Any, Path]:
    """`botserver run --log-file` on a port free when `run` checks it and taken by another
    process while the server starts (here, while it asks its model server); the result and
    the log file."""
    port = free_port()
    taker = socket.socket()
    asked = threading.Event()

    def model_server(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            # Asked: the server is past its port check and not yet listening.
            taker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            taker.bind(("127.0.0.1", port))
            taker.listen()
            asked.set()
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    with socket.socket() as listener, taker:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        thread = threading.Thread(target=model_server, args=(listener,), daemon=True)
        thread.start()
        models = f"http://127.0.0.1:{listener.getsockname()[1]}/model"
        (tmp_path / "endpoints.yml").write_text(
            f"models:\n  url: {models}\n  wait_time_between_pulls: null\n"
        )
        log_file = tmp_path / "out.log"

        result = run_cli(
            "run", "-i", "127.0.0.1", "-p", str(port), "--log-file", str(log_file), cwd=tmp_path
        )
        thread.join(5)
    assert asked.is_set()
    return result, log_file


def test_a_port_taken_while_the_server_starts_says_so_in_the_log_file(
    run_cli, tmp_path: Path
) -> None:
    """The process ends with exit 1 and the `error:` line, on stderr and in --log-file.
    Before, uvicorn's exit (code 3) went past the line: stderr and the file ended with
    uvicorn's "address already in use"."""
    result, log_file = _start_on_a_port_taken_meanwhile(run_cli, tmp_path)

    assert result.code == 1
    assert "address already in use" in result.err
    _the_failure_logged_once(result, log_file, "the server did not start; see the log above")


def test_a_port_taken_while_the_server_starts_is_never_said_to_be_up(
    run_cli, tmp_path: Path
) -> None:
    """Before, "botserver ... is up on http://127.0.0.1:<port>" came just before uvicorn's
    "address already in use": said as the app started, before uvicorn binds the port."""
    result, log_file = _start_on_a_port_taken_meanwhile(run_cli, tmp_path)

    assert "address already in use" in result.err
    said = result.out + result.err + log_file.read_text(encoding="utf-8")
    assert "is up on" not in said, said
