"""Messages with huge metadata, from clients nobody authenticates: the server's caches hold
a bounded amount of them, however many come."""

from __future__ import annotations

import gc
from pathlib import Path

import httpx
import pytest

from tests.serving import serving


def resident_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
async def test_messages_with_300_kb_of_metadata_grow_memory_only_until_the_caches_fill(
    concertbot_model: Path, tmp_path: Path
) -> None:
    """Each message's event (its metadata stored twice: in its parse data too) is about
    600 KB of JSON: it weighs about 600 events, so the default `cache_events` (10,000) of
    the SQLite store's sessions and of the hot trackers holds about 17 of them. Before
    events were weighed, each cache kept 10,000 of them: about 3 MB more a message."""
    from server.api.server import ServerOptions, build_app

    options = ServerOptions(
        model_path=concertbot_model,
        endpoints={"tracker_store": {"type": "sql", "db": str(tmp_path / "rasa.db")}},
        enable_api=True,
        models_dir=concertbot_model.parent,
    )
    metadata = {f"key{n:05}": f"value {n}" for n in range(20_000)}  # ~300 KB of JSON
    resident = {}
    async with serving(build_app(options)) as url, httpx.AsyncClient(timeout=60) as client:

        async def send(sender: str) -> None:
            message = {"sender": sender, "message": "hi", "metadata": metadata}
            response = await client.post(f"{url}/webhooks/rest/webhook", json=message)
            assert response.status_code == 200, response.text

        for n in range(60):
            await send(f"heavy-{n}")
            if n + 1 in (20, 60):
                gc.collect()
                resident[n + 1] = resident_bytes()

        grown = resident[60] - resident[20]
        print(f"RSS after 20 messages {resident[20] / 2**20:.0f} MiB, grown {grown / 2**20:.1f}")
        assert grown < 50 * 2**20, f"40 more messages grew the server by {grown / 2**20:.0f} MiB"
        # The first conversations, long evicted, are still there, read from the database.
        tracker = (await client.get(f"{url}/conversations/heavy-0/tracker")).json()
        users = [e for e in tracker["events"] if e["event"] == "user"]
        assert len(users) == 1 and users[0]["metadata"].items() >= metadata.items()
