"""A tiny stand-in for a Duckling server: answers POST /parse with `number` matches for digits
and English number words, in Duckling's JSON shape. Runs in a thread on a free port."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
NUMBER = re.compile(r"\b(\d+(?:\.\d+)?|" + "|".join(WORDS) + r")\b", re.IGNORECASE)


def number_matches(text: str) -> list[dict[str, object]]:
    """Duckling's answer for `text` with the `number` dimension."""
    matches = []
    for m in NUMBER.finditer(text):
        body = m.group(1)
        value: float = WORDS.get(body.lower()) or float(body)
        matches.append(
            {
                "body": body,
                "start": m.start(1),
                "end": m.end(1),
                "dim": "number",
                "latent": False,
                "value": {"value": value, "type": "value"},
            }
        )
    return matches


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        body = json.dumps(number_matches((form.get("text") or [""])[0])).encode()
        self.send_response(200 if self.path == "/parse" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def fake_duckling() -> Iterator[str]:
    """Yields the base URL of a running fake Duckling."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
