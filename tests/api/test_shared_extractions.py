"""The apps of `make_client` share the start's extracted archive, not its model: each app
builds a model of its own, and a model loaded later is extracted as the server does."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.api.services import APP_STATE_KEY
from tests.shared_archives import SharedExtractions


def _model_of(client: Any) -> Any:
    app = client._transport.app
    return getattr(app.state, APP_STATE_KEY).holder.current


async def test_apps_started_in_a_row_extract_the_archive_once_and_build_models_of_their_own(
    make_client: Callable[..., Any],
    moodbot_model: Path,
    shared_extractions: SharedExtractions,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = await make_client()
    extracted = shared_extractions.extracted
    second = await make_client()
    assert shared_extractions.extracted == extracted and extracted >= 1
    assert _model_of(first) is not _model_of(second)
    assert _model_of(first).policies is not _model_of(second).policies
    for client in (first, second):
        parsed = await client.post("/model/parse", json={"text": "hello"})
        assert parsed.json()["intent"]["name"] == "greet"

    # A PUT /model after the start: the server's own extraction, in its temporary folder.
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    made: list[Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(*args: Any, **kwargs: Any) -> str:
        made.append(Path(real_mkdtemp(*args, **kwargs)))
        return str(made[-1])

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    response = await second.put("/model", json={"model_file": str(moodbot_model)})
    assert response.status_code == 204, response.text
    assert len([path for path in made if path.name.startswith("botserver-model-")]) == 1
    assert shared_extractions.extracted == extracted
