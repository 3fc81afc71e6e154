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
