"""`botserver run` in a subprocess on a free port, polled until it answers, stopped by SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.tcp_proxy import free_port

REPO = Path(__file__).resolve().parents[2]  # the subprocess runs this checkout's code


def botserver_command() -> list[str]:
    found = shutil.which("botserver")
    return [found] if found else [sys.executable, "-m", "cli"]


@dataclass
class ServerProcess:
    """`botserver run` in a subprocess, with its combined output in a file."""

    process: subprocess.Popen[bytes]
    url: str
    output: Path

    def text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")

    def wait_until(self, path: str, status: int = 200, timeout: float = 60.0) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last: object = None
        # One client for every poll: `httpx.get` builds an SSL context each time, 50 ms of CPU
        # in this process per poll (a second of it while one server starts, at 0.2 s a poll).
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"botserver exited early:\n{self.text()}")
                try:
                    last = response = client.get(self.url + path)
                    if response.status_code == status:
                        return response
                except httpx.TransportError as exc:
                    last = exc
                time.sleep(0.05)  # every test that starts a server waits here: poll closely
        raise AssertionError(f"{path} never answered {status} (last: {last}):\n{self.text()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_botserver(
    args: list[str], cwd: Path, output_dir: Path, port: int | None = None
) -> ServerProcess:
    """Starts `botserver run ARGS -p <port> -i 127.0.0.1` in `cwd`, its output in `output_dir`."""
    port = port or free_port()
    output = output_dir / f"server-{port}.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [*botserver_command(), "run", *args, "-p", str(port), "-i", "127.0.0.1"],
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)},
        )
    return ServerProcess(process, f"http://127.0.0.1:{port}", output)
