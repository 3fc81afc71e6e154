"""Servers for tests that face a third party (Duckling, an NLU server, cloud storage): a tiny
JSON HTTP server whose requests are answered by a function of their path and body, and one that
takes connections and never answers, or closes them unanswered. Each runs in a thread on a free
port."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (path with query, raw body) -> (status, JSON answer, or bytes sent as they are)
Respond = Callable[[str, bytes], tuple[int, Any]]


@contextmanager
def serve_json(respond: Respond) -> Iterator[str]:
    """Yields the base URL of a server whose POSTs, GETs and HEADs are answered by
    `respond` (a HEAD with its status alone, as S3 answers one that fails)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            status, answer = respond(self.path, self.rfile.read(length))
            raw = isinstance(answer, bytes)  # sent as it is (an XML error, as S3's)
            body = answer if raw else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml" if raw else "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST  # noqa: N815

        def do_HEAD(self) -> None:  # noqa: N802 (the status and headers alone)
            status, _ = respond(self.path, b"")
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serve_handler(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Yields the base URL of a server whose requests `handler` answers (a fake speaking a
    storage's protocol itself)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _accepting(take: Callable[[socket.socket], None]) -> Iterator[str]:
    """Yields the base URL of a host that hands each connection it accepts to `take`."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                take(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        done.set()
        thread.join()
        listener.close()


@contextmanager
def silent_server() -> Iterator[str]:
    """Yields the base URL of a host that accepts every connection and never sends a byte (a
    hung server, a dead backend behind a load balancer). On exit its connections are closed,
    so a client still waiting on one fails at once."""
    held: list[socket.socket] = []
    try:
        with _accepting(held.append) as url:
            yield url
    finally:
        for connection in held:
            connection.close()


@contextmanager
def closing_server() -> Iterator[str]:
    """Yields the base URL of a host that reads each request and closes the connection
    without an answer (a proxy with no backend, another service on the port)."""

    def hang_up(connection: socket.socket) -> None:
        with connection:
            connection.settimeout(1)
            try:
                connection.recv(65536)
            except OSError:
                pass

    with _accepting(hang_up) as url:
        yield url


@contextmanager
def dripping_server(
    every: float, most: int = 100, *, in_headers: bool = False
) -> Iterator[tuple[str, Callable[[], int]]]:
    """Yields the base URL of a host answering 200 to each request with a JSON body of `most`
    spaces it sends a byte every `every` seconds (a server stuck writing, a proxy trickling),
    and a function that waits for its first connection to end and says how many of those
    bytes it sent: a client that hung up early shows as fewer than `most`. `in_headers`: the
    bytes dripped are those of a header's value, before the body (`{}`)."""
    sent: list[int] = []
    ended = threading.Event()

    def drip(connection: socket.socket) -> None:
        with connection:
            head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            head += "X-Slow: " if in_headers else f"Content-Length: {most}\r\n\r\n"
            count = 0
            try:
                connection.recv(65536)
                connection.sendall(head.encode())
                while count < most:
                    threading.Event().wait(every)
                    connection.sendall(b"a" if in_headers else b" ")
                    count += 1
                if in_headers:
                    connection.sendall(b"\r\nContent-Length: 2\r\n\r\n{}")
            except OSError:  # the client hung up (seen at the byte after)
                pass
            sent.append(count)
            ended.set()

    def sent_to_the_first() -> int:
        # Bounded: a client that never connected (its time up before) hung the test for ever.
        assert ended.wait(60), "no connection came, or it was not ended within 60 s"
        return sent[0]

    with _accepting(lambda c: threading.Thread(target=drip, args=(c,), daemon=True).start()) as url:
        yield url, sent_to_the_first
