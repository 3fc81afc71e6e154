"""50 parses at once by one NLU server client (`nlu:`, `timeout: 0.5`) against a local server
that answers 200 and sends a header's value (`headers`) or its body (`body`) a byte every
0.1 s for 10 s: wall-clock time, CPU time, and the threads, open files and pooled
connections left after, with the code on PYTHONPATH (run once with the base's, once with
the head's):

    PYTHONPATH=<checkout> python bench/dripping_nlu_many.py headers|body
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from dripping_nlu import serve_dripping  # (bench/, this script's folder)

from server.nlu.remote import RemoteNLU

CALLS = 50


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)
    url = serve_dripping(sys.argv[1:] == ["headers"], count=100, every=0.1)
    threads, files = threading.active_count(), _open_files()
    nlu = RemoteNLU({"url": url, "timeout": 0.5})
    started, cpu = time.monotonic(), time.process_time()
    with ThreadPoolExecutor(CALLS) as pool:
        list(pool.map(lambda _: nlu.parse("hi"), range(CALLS)))
    print(
        f"{CALLS} parses: {time.monotonic() - started:.2f} s, CPU {time.process_time() - cpu:.2f} s"
    )
    time.sleep(0.3)  # the server's threads see the hang-ups
    print(f"threads {threads} -> {threading.active_count()}, open files {files} -> {_open_files()}")
    print(f"pooled connections left: {len(nlu._client._transport._pool.connections)}")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
