"""Serve one of `bench/http_apps.py`'s apps in N processes as `botserver run --workers N`
serves the server (server/api/workers.py: a listening socket per worker), so that the bare
endpoint and the server scale under the same supervisor.

    python bench/serve_workers.py http_apps:bare_app --port 8000 --workers 2 --settings '{}'

`--settings` is a JSON object of uvicorn.Config keyword arguments; `"http": "botserver"` is
the HTTP protocol `botserver run` serves with (server/api/http_protocol.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import uvicorn

BENCH = Path(__file__).resolve().parent
# `"http": "botserver"` in --settings: server/api/http_protocol.py's BoundedHttpToolsProtocol.
BOTSERVER_PROTOCOL = "botserver"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("app", help="module:factory in bench/")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--settings", default="{}")
    args = parser.parse_args()
    # Workers are spawned with this sys.path: they find the app's module there.
    sys.path.insert(0, str(BENCH))
    from server.api.workers import serve_workers

    settings = json.loads(args.settings)
    if settings.get("http") == BOTSERVER_PROTOCOL:
        from server.api.http_protocol import BoundedHttpToolsProtocol

        settings["http"] = BoundedHttpToolsProtocol
    config = uvicorn.Config(
        args.app,
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        **settings,
    )
    if args.workers == 1:  # one process, as `botserver run` without --workers serves
        uvicorn.Server(config).run()
        return 0
    return serve_workers(config)


if __name__ == "__main__":
    sys.exit(main())
