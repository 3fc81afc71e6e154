"""Benchmark: the peak memory of an Azure remote-storage download.

    PYTHONPATH=<tree> python bench/remote_storage_azure_memory.py honest|hostile

honest: a local fake of Azure Blob serving a 64 MiB blob, each range as asked. hostile: a fake
stating a 512 MiB blob that answers the first range asked for with a body stating 512 MiB
(Content-Length), sends 256 MiB of it as fast as it can, then closes the connection (stating
4 GiB, azure-storage-blob asks for a list of 4 Gi slots, 32 GiB: a MemoryError). Prints how
much the process's peak resident memory (ru_maxrss) grew during `download_model("azure",
"prod")` (the fake's blob is in memory before), and how the download ended. One case a process.
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import sys

import pytest

from tests.fake_http import serve_handler
from tests.models.conftest import STORAGES_AT
from tests.models.test_remote_storage_lying import LyingStorage

MIB = 1024 * 1024
BLOB = b"x" * (64 * MIB)
BLOCK = b"x" * (256 * 1024)


class HonestBlob(LyingStorage):
    stated = len(BLOB)

    def do_GET(self) -> None:  # noqa: N802
        first, last = 0, len(BLOB) - 1
        asked = self.headers.get("x-ms-range")
        if asked:
            start, end = asked.removeprefix("bytes=").split("-")
            first, last = int(start), min(int(end), last)
        self.send_response(206 if asked else 200)
        self.send_header("Content-Range", f"bytes {first}-{last}/{len(BLOB)}")
        self._headers(last - first + 1)
        self.wfile.write(memoryview(BLOB)[first : last + 1])


class HostileBlob(LyingStorage):
    stated = 512 * MIB

    def do_GET(self) -> None:  # noqa: N802
        asked = self.headers.get("x-ms-range", "bytes=0-0")
        self.send_response(206)
        self.send_header("Content-Range", f"{asked.replace('=', ' ')}/{self.stated}")
        self._headers(self.stated)
        try:
            for _ in range(256 * MIB // len(BLOCK)):
                self.wfile.write(BLOCK)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(case: str) -> None:
    from server.models.remote_storage import download_model

    handler = {"honest": HonestBlob, "hostile": HostileBlob}[case]
    mp = pytest.MonkeyPatch()
    mp.setenv("REMOTE_STORAGE_TIMEOUT", "5")
    with serve_handler(handler) as url:
        STORAGES_AT["azure"](url, mp)
        before = peak_mib()
        try:
            path = await download_model("azure", "prod")
            end = f"downloaded {path.stat().st_size // MIB} MiB"
            shutil.rmtree(path.parent)
        except Exception as exc:  # how it ended is the measurement
            end = f"{type(exc).__name__}: {str(exc)[:110]}"
        grown = peak_mib() - before
    print(f"{case}: peak RSS +{grown:.0f} MiB (from {before:.0f}); {end}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
