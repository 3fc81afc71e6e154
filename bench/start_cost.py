"""Benchmark: the CPU (user+sys) of starting `botserver run` and of one-shot commands.

    python bench/start_cost.py BOT_DIR [--trees CHECKOUT[,CHECKOUT...]] [--repeats 5]
        [--workers-endpoints endpoints.yml]

`run -m models --enable-api` is measured from exec to the first 200 on /status once the log
says ` is up on `: utime+stime of the process and of its descendants (`--workers 2`, with
`--workers-endpoints`, whose stores the workers share); "run + stop" from exec to its exit
after a SIGTERM sent at that point (`os.wait4`'s rusage: its whole life). `--help` and
`data validate` to their exit. Each checkout is put on PYTHONPATH in turn, the starts
interleaved so that the host's load falls alike on each; compiled code is cached
(PYTHONPYCACHEPREFIX), as installed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bench.tcp_proxy import free_port

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """utime+stime (+ those of reaped children) of `pid` and every living descendant."""
    children: dict[int, list[int]] = {}
    times: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        times[int(entry)] = sum(int(x) for x in fields[11:15])
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0)
        todo.extend(children.get(current, []))
    return total / TICK


def run_start(bot: Path, env: dict[str, str], extra: list[str], stop: bool = False) -> float:
    """CPU until ready, or (`stop`) until exit after a SIGTERM once ready."""
    port = free_port()
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "run", "-m", "models", "--enable-api"]
            + ["-p", str(port), "-i", "127.0.0.1", *extra],
            cwd=bot,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    url = f"http://127.0.0.1:{port}/status"
                    with urllib.request.urlopen(url, timeout=2) as answer:
                        if answer.status == 200 and b" is up on " in Path(log.name).read_bytes():
                            if not stop:
                                return tree_cpu(process.pid)
                            process.terminate()
                            _, _, usage = os.wait4(process.pid, 0)
                            process.returncode = 0  # reaped
                            return usage.ru_utime + usage.ru_stime
                except OSError:
                    pass
                time.sleep(0.02)
            raise SystemExit(f"never ready: {Path(log.name).read_text()}")
        finally:
            process.terminate()
            process.wait(timeout=60)


def one_shot(bot: Path, env: dict[str, str], args: list[str]) -> float:
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        cwd=bot,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    _, _, usage = os.wait4(process.pid, 0)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bot", type=Path, help="a trained project (models/ inside)")
    parser.add_argument("--trees", default=str(ROOT), help="checkouts to compare, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers-endpoints", type=Path, help="endpoints.yml for --workers 2")
    args = parser.parse_args()
    bot = args.bot.resolve()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = env.get("PYTHONPYCACHEPREFIX") or tempfile.mkdtemp()
    cases: dict[str, Callable[[dict[str, str]], float]] = {
        "run": lambda env: run_start(bot, env, []),
        "run + stop": lambda env: run_start(bot, env, [], stop=True),
        "--help": lambda env: one_shot(bot, env, ["--help"]),
        "data validate": lambda env: one_shot(bot, env, ["data", "validate"]),
    }
    if args.workers_endpoints:
        workers = ["--workers", "2", "--endpoints", str(args.workers_endpoints.resolve())]
        cases["run --workers 2"] = lambda env: run_start(bot, env, workers)
    trees = args.trees.split(",")
    for name, measure in cases.items():
        envs = {tree: {**env, "PYTHONPATH": tree} for tree in trees}
        for tree in trees:
            measure(envs[tree])  # warms the page cache and the compiled code
        seconds: dict[str, list[float]] = {tree: [] for tree in trees}
        for _ in range(args.repeats):
            for tree in trees:
                seconds[tree].append(measure(envs[tree]))
        for tree, values in seconds.items():
            print(
                f"{name:16s} {tree}: median {statistics.median(values):.3f} CPU-s, "
                f"min {min(values):.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
