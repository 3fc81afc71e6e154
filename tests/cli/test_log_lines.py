"""The log file `botserver run --log-file` writes: one line per record, whatever a client put
in the strings it logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.logs import configure_logging

HOSTILE = "a\n2026-12-04 00:00:00,000 ERROR   server.forged - admin logged in\x00\x1b[2J\u2028"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


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
