"""bench/tcp_proxy.py's `free_port`: a port handed out is not handed out again, in this
process or to another of pytest-xdist's workers, while its server has yet to bind it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def ports_handed_to(worker: str, workers: int, count: int) -> list[int]:
    """`count` ports from `free_port` in a process of its own, as worker `worker` of
    `workers` sees it (pytest-xdist's environment variables)."""
    env = {**os.environ, "PYTEST_XDIST_WORKER": worker, "PYTEST_XDIST_WORKER_COUNT": str(workers)}
    env["PYTHONPATH"] = str(REPO)
    code = f"from bench.tcp_proxy import free_port; print(*(free_port() for _ in range({count})))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [int(port) for port in done.stdout.split()]


def test_two_workers_are_never_handed_the_same_port() -> None:
    """Before, each took a port at random from the same 14,000: a proxy cut for seconds, or a
    server still starting, could see its port given to another worker's server (400 ports
    each: some 11 in common)."""
    first, second = ports_handed_to("gw0", 2, 400), ports_handed_to("gw1", 2, 400)
    assert set(first).isdisjoint(second), sorted(set(first) & set(second))


def test_a_process_is_never_handed_the_same_port_twice() -> None:
    """A test that takes two ports (a proxy's, then a server's) before it binds the second
    got the first again, now and then: the proxy's, free while it was cut."""
    ports = ports_handed_to("gw1", 4, 500)
    assert len(set(ports)) == len(ports) == 500
    assert all(port // 2 % 4 == 1 for port in ports)
