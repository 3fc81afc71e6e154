"""Benchmark: how long a remote-storage download is held by a storage that states 4 GiB (the
most an archive may be) and then drips it.

    PYTHONPATH=<tree> python bench/remote_storage_huge_drip.py aws|gcs|azure

The storage is tests/models/test_remote_storage_timeout.py's HugeDrippingStorage (a byte every
0.2 s, 200 bytes: 40 s, then the connection closes), with REMOTE_STORAGE_TIMEOUT=0.5 and
REMOTE_STORAGE_MIN_RATE=32 MiB a second (so that the stated size alone gives 132 s). Prints the
wall-clock seconds and how it ended.
"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from server.models.remote_storage import download_model
from tests.models.conftest import STORAGES_AT
from tests.models.test_remote_storage_timeout import HugeDrippingStorage, storage_serving


async def main(storage: str) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv("BUCKET_NAME", "models")
    mp.setenv("REMOTE_STORAGE_TIMEOUT", "0.5")
    mp.setenv("REMOTE_STORAGE_MIN_RATE", str(32 * 1024**2))
    with storage_serving(HugeDrippingStorage, STORAGES_AT[storage], mp):
        t = time.monotonic()
        try:
            await download_model(storage, "prod")
            end = "downloaded"
        except Exception as exc:
            end = f"{type(exc).__name__}: {str(exc)[:90]}"
        print(storage, f"{time.monotonic() - t:.1f} s", end, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
