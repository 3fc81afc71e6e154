"""Instructions per HTTP request of the server process, counted by callgrind: a deterministic
stand-in for `bench/http_turns.py`'s server CPU per request on a machine too loaded to time.

    python bench/http_callgrind.py [--app server_app|bare_app] [--requests 2000]
        [--warmup 500] [--concurrency 50] [--http-protocol botserver|httptools]
        [--model ARCHIVE] [--out FILE]

Serves `bench/http_apps.py`'s app as `bench/http_turns.py` does (one uvicorn process, the
same settings and HTTP protocol: botserver's own by default, as `botserver run` serves,
through `bench/serve_workers.py`; `--http-protocol httptools` for uvicorn's; a fresh SQLite
file) under `valgrind --tool=callgrind --instr-atstart=no`, sends
`--warmup` moodbot turns over `--concurrency` keep-alive connections (an asyncio client on raw
sockets, outside valgrind), then switches instrumentation on (`callgrind_control -i on`
<pid>), sends exactly `--requests` turns, switches it off, and prints the server's
instructions per request (user space: uvicorn, httptools, uvloop, the app, SQLite; the
kernel's socket work is not counted). Valgrind slows the server some 50 times while the
client runs at full speed, so the SQLite group commits gather fewer appends than in a timed
run (more commits per turn): compare trees with the same settings, not with wall-clock runs.
Needs valgrind. PYTHONPATH=<tree> serves that tree's `server`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from http_turns import (  # noqa: E402
    CONVERSATIONS,
    ROOT,
    UVICORN_FLAGS,
    UVICORN_SETTINGS,
    WEBHOOK,
    free_port,
    model_archive,
    train_moodbot,
)


async def send_turns(port: int, total: int, concurrency: int, prefix: str) -> None:
    """`total` moodbot turns over `concurrency` connections, each waiting for its reply."""
    done = 0

    async def user(index: int) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        number = 0
        while done < total:
            number += 1
            sender = f"{prefix}-{index}-{number}"
            for text in CONVERSATIONS[number % len(CONVERSATIONS)]:
                if done >= total:
                    break
                done += 1
                body = json.dumps({"sender": sender, "message": text}).encode()
                writer.write(
                    b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (WEBHOOK.encode(), len(body), body)
                )
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"unexpected answer: {head[:80]!r}")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
        writer.close()

    await asyncio.gather(*(user(i) for i in range(concurrency)))


def total_instructions(path: Path) -> int:
    """The `totals:` line of callgrind's output (its `summary:` line may say 0 when the
    instrumentation was switched on and off during the run)."""
    for line in path.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", choices=("server_app", "bare_app"), default="server_app")
    parser.add_argument("--requests", type=int, default=2000, help="measured requests")
    parser.add_argument("--warmup", type=int, default=500, help="requests before measuring")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--http-protocol",
        choices=("botserver", "httptools"),
        default="botserver",
        help="botserver's HTTP protocol (server/api/http_protocol.py, what `botserver run` "
        "serves with) or uvicorn's own httptools one (every count up to the twenty-first round)",
    )
    parser.add_argument(
        "--model", type=model_archive, help="a moodbot archive (default: train one)"
    )
    parser.add_argument("--out", help="keep callgrind's output here (default: a temporary file)")
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=600,
        help="seconds to wait for the server under valgrind to listen (default 600: a model "
        "load under valgrind takes minutes, more on a busy machine)",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="http-callgrind-") as tmp:
        workdir = Path(tmp)
        model = args.model or train_moodbot(workdir / "models")
        out = Path(args.out) if args.out else workdir / "callgrind.out"
        port = free_port()
        python_path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)
        env = {
            **os.environ,
            "PYTHONPATH": python_path,
            "PYTHONHASHSEED": "0",
            "BENCH_MODEL": str(model),
            "BENCH_ENDPOINTS": json.dumps(
                {"tracker_store": {"type": "sql", "dialect": "sqlite", "db": f"{tmp}/bench.db"}}
            ),
        }
        if args.http_protocol == "httptools":
            serve = [
                *(sys.executable, "-m", "uvicorn", "--factory", "--app-dir", str(BENCH)),
                *(f"http_apps:{args.app}", "--host", "127.0.0.1", "--port", str(port)),
                *UVICORN_FLAGS,
            ]
        else:  # one worker: serve_workers.py runs uvicorn in its own process, the one counted
            serve = [
                *(sys.executable, str(BENCH / "serve_workers.py"), f"http_apps:{args.app}"),
                *("--port", str(port), "--workers", "1"),
                *("--settings", json.dumps({**UVICORN_SETTINGS, "http": args.http_protocol})),
            ]
        command = [
            *("valgrind", "--tool=callgrind", "--instr-atstart=no"),
            f"--callgrind-out-file={out}",
            *serve,
        ]
        with open(workdir / "server.log", "wb") as log:
            server = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp
            )
        try:
            deadline = time.monotonic() + args.start_timeout
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if server.poll() is not None:
                        raise SystemExit(
                            f"the server exited before listening:\n{_tail(workdir / 'server.log')}"
                        ) from None
                    if time.monotonic() > deadline:
                        raise SystemExit(
                            f"the server did not listen within {args.start_timeout:g} s "
                            "(--start-timeout)"
                        ) from None
                    time.sleep(1)
            asyncio.run(send_turns(port, args.warmup, args.concurrency, "w"))
            control = ["callgrind_control", "-i"]
            subprocess.run([*control, "on", str(server.pid)], check=True, capture_output=True)
            asyncio.run(send_turns(port, args.requests, args.concurrency, "m"))
            subprocess.run([*control, "off", str(server.pid)], check=True, capture_output=True)
        finally:
            server.send_signal(2)
            server.wait(timeout=300)
        total = total_instructions(out)
    print(
        f"{args.app}: {total:,} instructions, {total / args.requests / 1000:.1f}k per request "
        f"({args.requests} requests after {args.warmup}, c={args.concurrency}, "
        f"{args.http_protocol} protocol)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
