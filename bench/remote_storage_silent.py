"""Benchmark: how long a remote-storage download takes to fail when the storage never answers.

    PYTHONPATH=<tree> python bench/remote_storage_silent.py aws|gcs|azure

The storage is a local host that accepts the connection and never sends a byte; the SDK's
variables point at it, and `download_model(storage, "prod")` of the tree on PYTHONPATH is
timed until it raises (REMOTE_STORAGE_TIMEOUT is read from the environment as ever). The fake
host is loaded from this checkout's tests/fake_http.py, so an older tree can be measured too.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import time
from pathlib import Path

FAKE_HTTP = Path(__file__).resolve().parent.parent / "tests" / "fake_http.py"


async def measure(storage: str) -> str:
    from server.models.remote_storage import download_model

    spec = importlib.util.spec_from_file_location("fake_http", FAKE_HTTP)
    assert spec is not None and spec.loader is not None
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    os.environ.update(
        BUCKET_NAME="models",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AZURE_CONTAINER="models",
        AZURE_ACCOUNT_NAME="devstoreaccount1",
        AZURE_ACCOUNT_KEY="a2V5",
    )
    with fake.silent_server() as url:
        os.environ.update(
            AWS_ENDPOINT_URL=url,
            STORAGE_EMULATOR_HOST=url,
            AZURE_ACCOUNT_URL=f"{url}/devstoreaccount1",
        )
        started = time.monotonic()
        try:
            await download_model(storage, "prod")
        except Exception as exc:
            took = time.monotonic() - started
            return f"{storage} {took:.1f} s {type(exc).__name__}: {str(exc)[:160]}"
    return f"{storage}: the download succeeded?"


if __name__ == "__main__":
    print(asyncio.run(measure(sys.argv[1])), flush=True)
