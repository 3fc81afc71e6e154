"""A project file holding one very long line is read in time that grows with its length, as
the same bytes over many lines are: its values are typed and its `${VAR}`s looked for in one
pass, never from every position over again."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from server.config import read_endpoints
from server.errors import MissingEnvironmentVariable
from server.training.yaml_io import parse_yaml, read_yaml_file

# A line of this many characters cost seconds of CPU before (its cost grew with the square
# of its length: 40,000 characters 12 s, 2 MB hours) and costs a millisecond or two now.
LENGTH = 50_000


def _cpu(read: Callable[[], object]) -> float:
    started = time.thread_time()
    read()
    return time.thread_time() - started


def _many_lines(length: int) -> str:
    """The same number of bytes as normal lines: the cost a long line is held to."""
    line = "  - some text of a normal line, 1234\n"
    return "foo:\n" + line * (length // len(line))


@pytest.mark.parametrize(
    ("value", "read_as"),
    [
        ("1" * LENGTH + "x", str),  # the digits of a number, then a letter: text
        ("1" * LENGTH + "e", str),
        ("1_" * (LENGTH // 2) + "x", str),
        ("0x" + "a" * LENGTH + "g", str),
        ("0b" + "1" * LENGTH + "2", str),
        ("1." + "1" * LENGTH, float),
    ],
    ids=["digits", "digits-e", "underscores", "hex", "binary", "float"],
)
def test_a_long_plain_scalar_is_typed_in_one_pass(value: str, read_as: type) -> None:
    text = f"foo: {value}\n"
    normal = _cpu(lambda: parse_yaml(_many_lines(len(text)), "f.yml"))
    cost = _cpu(lambda: parse_yaml(text, "f.yml"))
    assert isinstance(parse_yaml(text, "f.yml")["foo"], read_as)
    assert cost < 20 * normal + 0.2, (cost, normal)


def test_numbers_are_still_read_as_yaml_1_2_reads_them() -> None:
    text = "a: [0777, 0o17, 0x_1F, 0b1_1, _1, 1_000, -_2, 1e3, 0x_, 0b, 1__]\n"
    read = [777, 15, 31, 3, "_1", 1000, -2, 1000.0, "0x_", "0b", 1]
    assert parse_yaml(text, "f.yml")["a"] == read


@pytest.mark.parametrize(
    "line",
    [
        "url: " + "${" * LENGTH,  # `${` that no `}` closes, read as written
        "url: '" + "${" * LENGTH + "'",
    ],
    ids=["plain", "quoted"],
)
def test_an_endpoints_line_of_unclosed_variables_is_read_at_once(tmp_path: Path, line: str) -> None:
    # Before: each `${` searched the rest of the line for its `}`: these 100 KB took 4 s of
    # CPU, 200 KB 15 s.
    path = tmp_path / "endpoints.yml"
    path.write_text(f"action_endpoint:\n  {line}\n")
    normal = tmp_path / "normal.yml"
    normal.write_text(_many_lines(len(line)))
    baseline = _cpu(lambda: read_yaml_file(normal, env=True))
    cost = _cpu(lambda: read_endpoints(path))
    assert read_endpoints(path)["action_endpoint"]["url"].startswith("${${${")
    assert cost < 20 * baseline + 0.2, (cost, baseline)


def test_variables_are_still_substituted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOST", "actions$x")
    monkeypatch.setenv("PORT", "5055")
    path = tmp_path / "endpoints.yml"
    path.write_text("action_endpoint:\n  url: http://${HOST}:$PORT/${ /webhook}$ $1 ${PORT\n")
    with pytest.raises(Exception, match="' /webhook' is not set"):
        read_endpoints(path)
    path.write_text("action_endpoint:\n  url: http://${HOST}:$PORT/webhook$ $1 ${PORT\n")
    url = read_endpoints(path)["action_endpoint"]["url"]
    assert url == "http://actions$x:5055/webhook$ $1 ${PORT"
    assert "HOST" in os.environ


def test_an_unset_variable_in_a_long_value_is_said_in_a_short_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Before: the message held the whole value and the whole name, 400 KB for this line.
    monkeypatch.delenv("UNSET_HOST", raising=False)
    path = tmp_path / "endpoints.yml"
    filler = "x" * 200_000
    path.write_text(f"action_endpoint:\n  url: http://${{UNSET_HOST}}/{filler}${{{filler}}}\n")
    with pytest.raises(MissingEnvironmentVariable) as raised:
        read_endpoints(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: line 2: environment variable 'UNSET_HOST' is not set")
    assert len(message) < 1_000
