"""Benchmark: how long a remote-storage download is held by a storage that drips its object.

    PYTHONPATH=<tree> python bench/remote_storage_drip.py aws|gcs|azure

The storage is a local fake (tests/models/test_remote_storage_lying.py's protocol of all three,
of the tree on PYTHONPATH) stating a 120-byte object, then sending it a byte every 0.5 s (60 s
in all: each read well within REMOTE_STORAGE_TIMEOUT=1). `download_model(storage, "prod")` is
timed until it ends, with REMOTE_STORAGE_MIN_RATE=100 (ignored by a tree without it). Prints
the wall-clock seconds and how it ended.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import threading
import time
from http.server import ThreadingHTTPServer

import pytest

from tests.models.conftest import STORAGES_AT
from tests.models.test_remote_storage_lying import LyingStorage

SIZE = 120
PAUSE = 0.5


class Dripping(LyingStorage):
    stated = SIZE
    stop = threading.Event()

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/storage/v1/b/"):  # GCS object metadata
            super().do_GET()
            return
        ranged = "x-ms-range" in self.headers  # Azure asks for the first chunk
        self.send_response(206 if ranged else 200)
        if ranged:
            self.send_header("Content-Range", f"bytes 0-{SIZE - 1}/{SIZE}")
        self._headers(SIZE)
        try:
            for _ in range(SIZE):
                if self.stop.wait(PAUSE):
                    return
                self.wfile.write(b"x")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


async def measure(storage: str) -> str:
    from server.models.remote_storage import download_model

    patch = pytest.MonkeyPatch()
    patch.setenv("BUCKET_NAME", "models")
    patch.setenv("REMOTE_STORAGE_TIMEOUT", "1")
    patch.setenv("REMOTE_STORAGE_MIN_RATE", "100")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Dripping)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}).start()
    STORAGES_AT[storage](f"http://127.0.0.1:{server.server_address[1]}", patch)
    started = time.monotonic()
    try:
        path = await download_model(storage, "prod")
        shutil.rmtree(path.parent)  # the caller's to remove (a baseline downloads it)
        ended = "downloaded"
    except Exception as exc:  # how it ended is the measurement
        ended = f"{type(exc).__name__}: {str(exc)[:160]}"
    finally:
        Dripping.stop.set()
        server.shutdown()
        server.server_close()
        patch.undo()
    return f"{storage}: {time.monotonic() - started:.1f} s, {ended}"


if __name__ == "__main__":
    print(asyncio.run(measure(sys.argv[1])))
