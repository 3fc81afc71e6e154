"""Memory and time of a remote-storage pull whose storage answers an error (503) with a body
sent without end, in chunks: a local fake speaking each storage's protocol
(`tests/models/test_remote_storage_error_bodies.py`), REMOTE_STORAGE_TIMEOUT=2 (the pull's
time: 16 s). Peak of Python's allocations (tracemalloc) and the process's peak RSS.

    python bench/storage_error_bodies.py aws|gcs|azure
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.models.remote_storage import download_model  # noqa: E402
from tests.fake_http import serve_handler  # noqa: E402
from tests.models.conftest import STORAGES_AT  # noqa: E402
from tests.models.test_remote_storage_error_bodies import EndlessErrorStorage  # noqa: E402


class Environment:
    """The environment, set as a test's monkeypatch sets it."""

    def setenv(self, name: str, value: str) -> None:
        os.environ[name] = value

    def delenv(self, name: str, raising: bool = True) -> None:
        os.environ.pop(name, None)


async def main(storage: str) -> None:
    os.environ["BUCKET_NAME"] = "models"
    os.environ["REMOTE_STORAGE_TIMEOUT"] = "2"
    with serve_handler(EndlessErrorStorage) as url:
        STORAGES_AT[storage](url, Environment())  # type: ignore[arg-type]
        tracemalloc.start()
        wall, cpu = time.monotonic(), time.process_time()
        failure = "none"
        try:
            await download_model(storage, "prod")
        except Exception as e:
            failure = f"{type(e).__name__}: {str(e)[:150]}"
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{storage}: {time.monotonic() - wall:.1f} s wall, {time.process_time() - cpu:.1f} s "
            f"CPU, peak traced {peak / 2**20:.1f} MiB, peak RSS {rss:.0f} MiB; {failure}"
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
