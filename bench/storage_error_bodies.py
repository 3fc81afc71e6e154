"""Memory and time of a remote-storage pull whose storage answers an error (503) with a body
sent without end, in chunks (gcs-metadata: GCS's first request, the object's metadata, answered
200 so): a local fake speaking each storage's protocol
(`tests/models/test_remote_storage_error_bodies.py`), REMOTE_STORAGE_TIMEOUT=2 (the pull's
time: 16 s). Peak of Python's allocations (tracemalloc) and the process's peak RSS.

    python bench/storage_error_bodies.py aws|gcs|azure|gcs-metadata
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.models.remote_storage import download_model  # noqa: E402
from tests.fake_http import serve_handler  # noqa: E402
from tests.models.conftest import STORAGES_AT  # noqa: E402
from tests.models.test_remote_storage_error_bodies import (  # noqa: E402
    EndlessErrorStorage,
    EndlessMetadataStorage,
)


async def main(storage: str) -> None:
    handler = EndlessMetadataStorage if storage == "gcs-metadata" else EndlessErrorStorage
    storage = storage.removesuffix("-metadata")
    env = pytest.MonkeyPatch()
    env.setenv("BUCKET_NAME", "models")
    env.setenv("REMOTE_STORAGE_TIMEOUT", "2")
    with serve_handler(handler) as url:
        STORAGES_AT[storage](url, env)
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
