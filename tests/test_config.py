"""endpoints.yml read into its sections: what is not read is named."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from server.config import read_endpoints


def test_a_misspelt_endpoints_section_is_named_with_the_one_meant(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: "endpoints file ...: unknown section 'action_endpoints' is ignored", in a
    wording of its own and without the section meant (Rasa ignores it without a word)."""
    path = tmp_path / "prod.yml"
    path.write_text(
        "action_endpoints:\n  url: http://127.0.0.1:5055/webhook\n"
        "tracker_store:\n  type: in_memory\nmetrics:\n  port: 9\n"
    )
    with caplog.at_level(logging.WARNING):
        sections = read_endpoints(path)
    assert list(sections) == ["tracker_store"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: unknown section 'action_endpoints' on line 1 is not read (nor by Rasa); did "
        "you mean 'action_endpoint'?",
        f"{path}: unknown section 'metrics' on line 5 is not read (nor by Rasa); it reads "
        "action_endpoint, event_broker, lock_store, models, nlg, nlu, tracker_store",
    ]


def test_a_misspelt_store_or_broker_setting_is_named_with_its_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As the docs show (`tracker_store: unknown setting 'dilect' on line 3`): before, the
    stores and the broker read a copy of their section, which had lost the lines, and their
    warnings named none."""
    from server.brokers.factory import create_event_broker
    from server.trackers.factory import create_tracker_store

    path = tmp_path / "endpoints.yml"
    path.write_text(
        f"tracker_store:\n  type: sql\n  dilect: sqlite\n  db: {tmp_path / 'trackers.db'}\n"
        f"event_broker:\n  type: file\n  path: {tmp_path / 'events.log'}\n  pth: x\n"
    )
    sections = read_endpoints(path)
    with caplog.at_level(logging.WARNING):
        create_tracker_store(sections["tracker_store"], str(path))
        create_event_broker(sections["event_broker"], str(path))
    said = [r.getMessage() for r in caplog.records if "unknown setting" in r.getMessage()]
    assert said == [
        f"{path}: tracker_store: unknown setting 'dilect' on line 3 is not read (nor by Rasa); "
        "did you mean 'dialect'?",
        f"{path}: event_broker: unknown setting 'pth' on line 8 is not read (Rasa stops on it); "
        "did you mean 'path'?",
    ]


def test_a_misspelt_redis_lock_store_setting_stops_the_start_naming_its_line(
    tmp_path: Path,
) -> None:
    """Refused (as Rasa refuses it): before, without the line."""
    from server.errors import InvalidConfig
    from server.trackers.factory import create_lock_store

    path = tmp_path / "endpoints.yml"
    path.write_text("lock_store:\n  type: redis\n  url: localhost\n  key_prefx: bot1\n")
    with pytest.raises(InvalidConfig) as raised:
        create_lock_store(read_endpoints(path)["lock_store"], str(path))
    assert str(raised.value) == (
        f"{path}, section 'lock_store': unknown setting 'key_prefx' on line 4 (Rasa refuses "
        "it too); did you mean 'key_prefix'?"
    )


async def test_a_setting_in_capitals_is_named_with_the_one_meant(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Keys are read as written, in lower case: `KEY_PREFIX` is not read, and its warning now
    says which key was meant (before, it listed every key read, `key_prefix` among them)."""
    from server.trackers.factory import create_tracker_store

    path = tmp_path / "endpoints.yml"
    path.write_text("tracker_store:\n  type: redis\n  url: 127.0.0.1\n  KEY_PREFIX: bot1\n")
    with caplog.at_level(logging.WARNING):
        store = create_tracker_store(read_endpoints(path)["tracker_store"], str(path))
    await store.close()
    said = [r.getMessage() for r in caplog.records if "unknown setting" in r.getMessage()]
    assert said == [
        f"{path}: tracker_store: unknown setting 'KEY_PREFIX' on line 4 is not read "
        "(nor by Rasa); did you mean 'key_prefix'?"
    ]


@pytest.mark.parametrize("which", ["endpoints", "credentials"])
def test_a_section_that_is_no_mapping_names_its_line(tmp_path: Path, which: str) -> None:
    """Before: "<file>: section 'tracker_store' must be a mapping of settings", no line."""
    from server.config import read_credentials
    from server.errors import InvalidConfig

    path = tmp_path / f"{which}.yml"
    path.write_text("nlg:\n  url: http://127.0.0.1:5056/nlg\ntracker_store: [sql]\n")
    reader = read_endpoints if which == "endpoints" else read_credentials
    with pytest.raises(InvalidConfig) as error:
        reader(path)
    assert str(error.value) == (
        f"{path}:3: section 'tracker_store' must be a mapping of settings, not ['sql']"
    )
