"""Wall-clock time of one parse by Duckling and by an NLU server (`nlu:`), each with a
`timeout` of 1 s, against a local server that answers 200 and then sends its body a byte
every 0.5 s for 20 s (with `--headers`: a header's value, before the body), with the code on
PYTHONPATH (run once with the base's, once with the head's):

    PYTHONPATH=<checkout> python bench/dripping_nlu.py [--headers]

`serve_dripping` is that server (bench/dripping_nlu_many.py's too).
"""

from __future__ import annotations

import socket
import sys
import threading
import time

from server.nlu.duckling import DucklingEntityExtractor
from server.nlu.message import Message
from server.nlu.remote import RemoteNLU


def serve_dripping(in_headers: bool, count: int, every: float) -> str:
    """A local server answering each request, in a thread of its own, with 200 and then
    `count` bytes, one every `every` s, of a header's value (`in_headers`) or of the body;
    returns its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.listen(200)

    def accept() -> None:
        while True:
            connection, _ = listener.accept()
            threading.Thread(
                target=_drip, args=(connection, in_headers, count, every), daemon=True
            ).start()

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def _drip(connection: socket.socket, in_headers: bool, count: int, every: float) -> None:
    with connection:
        connection.recv(65536)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        head += b"X-Slow: " if in_headers else f"Content-Length: {count}\r\n\r\n".encode()
        try:
            connection.sendall(head)
            for _ in range(count):
                time.sleep(every)
                connection.sendall(b"a" if in_headers else b" ")
            if in_headers:
                connection.sendall(b"\r\nContent-Length: 2\r\n\r\n{}")
        except OSError:  # the client hung up
            pass


def main() -> None:
    url = serve_dripping("--headers" in sys.argv[1:], count=40, every=0.5)
    started = time.monotonic()
    DucklingEntityExtractor({"url": url, "timeout": 1}).process(Message("5"))
    print(f"Duckling, timeout 1 s: {time.monotonic() - started:.1f} s", flush=True)
    started = time.monotonic()
    RemoteNLU({"url": url, "timeout": 1}).parse("5")
    print(f"NLU server, timeout 1 s: {time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
