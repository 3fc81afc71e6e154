"""A server that closes an idle connection as a request arrives on it, as any server does
whose keep-alive timeout fires at that moment (uvicorn's, Node's, Sanic's: 5 s; here 1.2 s):
the request gets no answer. A client that keeps idle connections as long loses it."""

from __future__ import annotations

import re
import time
from asyncio import IncompleteReadError, StreamReader, StreamWriter

IDLE_SECONDS = 1.2  # the server's keep-alive timeout, short for a test
QUIET_SECONDS = 1.5  # a quiet moment past it, less than httpx's own 5 s


class ClosingIdleServer:
    """Answers each request with `answer` (a JSON body), unless it comes on a connection
    idle for IDLE_SECONDS: then the connection is closed without an answer. `served` holds
    the bodies of the requests answered."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.served: list[bytes] = []

    async def handle(self, reader: StreamReader, writer: StreamWriter) -> None:
        answered_at: float | None = None
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                body = await reader.readexactly(int(length[1]) if length else 0)
                if answered_at is not None and time.monotonic() - answered_at > IDLE_SECONDS:
                    return  # the keep-alive timeout fired as the request came: closed
                self.served.append(body)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(self.answer), self.answer)
                )
                await writer.drain()
                answered_at = time.monotonic()
        except (IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
