"""Wall-clock time of one parse by Duckling and by an NLU server (`nlu:`), each with a
`timeout` of 1 s, against a local server that answers 200 and then sends its body a byte
every 0.5 s for 20 s (with `--headers`: a header's value, before the body), with the code on
PYTHONPATH (run once with the base's, once with the head's):

    PYTHONPATH=<checkout> python bench/dripping_nlu.py [--headers]
"""

from __future__ import annotations

import socket
import sys
import threading
import time

from server.nlu.duckling import DucklingEntityExtractor
from server.nlu.message import Message
from server.nlu.remote import RemoteNLU

BYTES = 40
EVERY = 0.5
IN_HEADERS = "--headers" in sys.argv[1:]


def _drip(listener: socket.socket) -> None:
    while True:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            head += b"X-Slow: " if IN_HEADERS else b"Content-Length: 99\r\n\r\n"
            try:
                connection.sendall(head)
                for _ in range(BYTES):
                    connection.sendall(b"a" if IN_HEADERS else b" ")
                    time.sleep(EVERY)
                if IN_HEADERS:
                    connection.sendall(b"\r\nContent-Length: 2\r\n\r\n{}")
            except OSError:  # the client hung up
                pass


def main() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_drip, args=(listener,), daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    started = time.monotonic()
    DucklingEntityExtractor({"url": url, "timeout": 1}).process(Message("5"))
    print(f"Duckling, timeout 1 s: {time.monotonic() - started:.1f} s", flush=True)
    started = time.monotonic()
    RemoteNLU({"url": url, "timeout": 1}).parse("5")
    print(f"NLU server, timeout 1 s: {time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
