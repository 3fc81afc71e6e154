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
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from server.nlu.remote import RemoteNLU

CALLS = 50


def _drip(connection: socket.socket, in_headers: bool) -> None:
    with connection:
        connection.recv(65536)
        head = b"HTTP/1.1 200 OK\r\n"
        head += b"X-Slow: " if in_headers else b"Content-Length: 100\r\n\r\n"
        try:
            connection.sendall(head)
            for _ in range(100):
                time.sleep(0.1)
                connection.sendall(b"a" if in_headers else b" ")
            if in_headers:
                connection.sendall(b"\r\nContent-Length: 2\r\n\r\n{}")
        except OSError:  # the client hung up
            pass


def _serve(in_headers: bool) -> str:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.listen(200)

    def accept() -> None:
        while True:
            connection, _ = listener.accept()
            threading.Thread(target=_drip, args=(connection, in_headers), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)
    url = _serve(sys.argv[1:] == ["headers"])
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
