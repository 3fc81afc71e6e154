"""CPU time of the event loop's thread while an action server's error answer is read and
told in the log, for an answer whose `error` is a 17 MB JSON object (120,000 events and
60,000 messages), with the code on PYTHONPATH (run once with the base's, once with the
head's):

    PYTHONPATH=<checkout> python bench/action_error_hold.py
"""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson

from server.dialogue.action_client import ActionServerClient
from server.errors import ActionError


def _error_answer() -> bytes:
    event = {"event": "bot", "text": "hi", "data": {"custom": {"k": list(range(20))}}}
    message = {"text": "hello", "custom": {"a": [1, 2, 3]}}
    error = {
        "events": [{**event, "text": f"t{i}"} for i in range(120_000)],
        "responses": [{**message, "text": f"m{i}"} for i in range(60_000)],
    }
    return orjson.dumps({"error": error})


async def main() -> None:
    body = _error_answer()
    transport = httpx.MockTransport(lambda request: httpx.Response(500, content=body))
    config = {"url": "http://actions.test/webhook", "max_response_bytes": 40_000_000}
    client = ActionServerClient(config, transport=transport)
    for _ in range(3):
        started = time.thread_time()
        try:
            await client.run("action_many", "u1", {"events": []}, None)
        except ActionError:
            pass
        print(f"loop thread CPU {1000 * (time.thread_time() - started):.1f} ms", flush=True)
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
