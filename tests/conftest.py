"""Fixtures every test package shares: the moodbot model, trained once per test process."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.shared_data import MOODBOT


@pytest.fixture(scope="session")
def moodbot_copy(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`moodbot_copy("models")`: the moodbot archive `train()` makes, copied alone into a new
    folder. Trained once per process (a second or two on 2 cores, three times that on a slow
    host) instead of once per fixture; each fixture has its own file and folder, so nothing
    one test writes beside its model reaches another's."""
    from server.training.train import train

    out = tmp_path_factory.mktemp("moodbot-training")
    result = train(MOODBOT / "config.yml", MOODBOT / "domain.yml", [MOODBOT / "data"], out)
    trained = Path(result.path)

    def copy(name: str) -> Path:
        folder = tmp_path_factory.mktemp(name)
        return Path(shutil.copy2(trained, folder / trained.name))

    return copy
