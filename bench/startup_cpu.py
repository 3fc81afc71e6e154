"""CPU seconds `botserver run` spends until /health/ready, and the libraries it has loaded.

Run in a folder holding `models/` (and endpoints.yml if wanted):
`python bench/startup_cpu.py [runs] [-- extra run flags]`. Counts that do not depend on the
host's load: utime + stime from /proc/<pid>/stat, and /proc/<pid>/maps for libraries.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

from bench.tcp_proxy import free_port

LIBRARIES = ("sklearn", "scipy", "pycrfsuite", "sqlalchemy", "cryptography")


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_start(extra: list[str]) -> tuple[float, list[str]]:
    port = free_port()
    command = [sys.executable, "-m", "cli", "run", "-m", "models", "-p", str(port)]
    process = subprocess.Popen(
        [*command, "-i", "127.0.0.1", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit("botserver exited before it was ready")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        seconds = cpu_seconds(process.pid)
        maps = open(f"/proc/{process.pid}/maps").read()
        return seconds, [name for name in LIBRARIES if f"/{name}/" in maps]
    finally:
        process.terminate()
        process.wait()


def main(argv: list[str]) -> None:
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    runs = int(argv[0]) if argv and argv[0] != "--" else 3
    for _ in range(runs):
        seconds, libraries = one_start(extra)
        print(f"cpu {seconds:.2f} s until ready; libraries: {', '.join(libraries) or 'none'}")


if __name__ == "__main__":
    main(sys.argv[1:])
