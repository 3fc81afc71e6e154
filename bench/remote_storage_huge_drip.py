"""Benchmark: how long a remote-storage download is held by a storage that states 4 GiB (the
most an archive may be) and then drips it, and how long the thread of the download, given up,
stays busy afterwards.

    PYTHONPATH=<tree> python bench/remote_storage_huge_drip.py aws|gcs|azure

The storage is tests/models/test_remote_storage_timeout.py's HugeDrippingStorage (a byte every
0.2 s, 200 bytes: 40 s, then the connection closes), with REMOTE_STORAGE_TIMEOUT=0.5 and
REMOTE_STORAGE_MIN_RATE=32 MiB a second (so that the stated size alone gives 132 s). Prints the
wall-clock seconds and how it ended, then how long the download's thread still ran (the
downloads' pool holds MAX_DOWNLOADS of them; polled for 60 s at most).
"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from server.models import remote_storage
from server.models.remote_storage import download_model
from tests.models.conftest import STORAGES_AT
from tests.models.test_remote_storage_timeout import HugeDrippingStorage, storage_serving

LONGEST = 60.0


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
        given_up = time.monotonic()
        for _ in range(int(LONGEST / 0.01)):  # polled: a thread's end has no event to wait on
            if not remote_storage._RUNNING:
                break
            await asyncio.sleep(0.01)
        still = f" (still running after {LONGEST:g} s)" if remote_storage._RUNNING else ""
        print(f"  its thread ran {time.monotonic() - given_up:.1f} s more{still}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
