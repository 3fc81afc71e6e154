"""Fixtures for model tests: a small model content tree and a loader that reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.models.archive import write_archive


def make_content(root: Path, greeting: str = "hello") -> Path:
    """A content tree shaped like what NLU and dialogue components store."""
    (root / "nlu" / "classifier").mkdir(parents=True)
    (root / "policies").mkdir()
    (root / "nlu" / "classifier" / "state.json").write_text(json.dumps({"greeting": greeting}))
    np.save(root / "nlu" / "classifier" / "weights.npy", np.arange(12, dtype=np.float32))
    (root / "policies" / "rules.json").write_text(json.dumps({"rules": []}))
    (root / "nlu" / "vocabulary.txt").write_text("hello\nworld\n")
    return root


def build_archive(
    tmp_path: Path, greeting: str = "hello", signing_key: bytes | None = None, **metadata: Any
) -> Path:
    index = len(list(tmp_path.iterdir()))
    content = make_content(tmp_path / f"content-{greeting}-{index}", greeting)
    return write_archive(
        content,
        {"domain": {"intents": ["greet"]}, **metadata},
        tmp_path / "models",
        fixed_name=f"{greeting}-{content.name}",
        signing_key=signing_key,
    )


class GreetingModel:
    """What the test loader builds: a model whose answer comes from the archive."""

    def __init__(self, greeting: str, weights: np.ndarray, model_id: str):
        self.greeting = greeting
        self.weights = weights
        self.model_id = model_id
        self.ready = True

    def answer(self) -> str:
        assert self.ready
        return self.greeting


def greeting_loader(directory: Path, metadata: dict[str, Any]) -> GreetingModel:
    state = json.loads((directory / "components/nlu/classifier/state.json").read_text())
    weights = np.load(directory / "components/nlu/classifier/weights.npy", allow_pickle=False)
    return GreetingModel(state["greeting"], weights, metadata["model_id"])


@pytest.fixture
def archive_factory(tmp_path: Path):
    def factory(greeting: str = "hello", **kwargs: Any) -> Path:
        return build_archive(tmp_path, greeting, **kwargs)

    return factory


@pytest.fixture
def loader():
    return greeting_loader


def s3_at(url: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Remote storage `aws` at `url`, or AWS's own addresses for None (BUCKET_NAME is the
    caller's)."""
    pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    if url is None:
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)


def gcs_at(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Remote storage `gcs` at `url`, as an emulator."""
    pytest.importorskip("google.cloud.storage")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)


def azure_at(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Remote storage `azure` at `url`, container `models`."""
    pytest.importorskip("azure.storage.blob")
    monkeypatch.setenv("AZURE_CONTAINER", "models")
    monkeypatch.setenv("AZURE_ACCOUNT_NAME", "devstoreaccount1")
    monkeypatch.setenv("AZURE_ACCOUNT_KEY", "a2V5")
    monkeypatch.setenv("AZURE_ACCOUNT_URL", f"{url}/devstoreaccount1")


# Each remote storage kind, and how to point it at a local server (tests skip without its SDK).
STORAGES_AT = {"aws": s3_at, "gcs": gcs_at, "azure": azure_at}
