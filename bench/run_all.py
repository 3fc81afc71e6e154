"""Runs the whole benchmark suite (under 10 minutes), or its smoke version (seconds, for CI).

    python bench/run_all.py [--smoke] [--only http_turns,train_bots] [--results DIR]
        [--model ARCHIVE]

Each benchmark runs as its own process and writes its JSON to `--results` (default
bench/results/; the smoke run defaults to a temporary directory so it never overwrites real
figures). Prints how long each took and fails when one fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
MOODBOT = Path("/work/shared/bots/moodbot")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.http_turns import model_archive  # noqa: E402


def steps(smoke: bool, results: Path, archive: Path) -> dict[str, list[str]]:
    """Command line of every benchmark, full or smoke."""
    py = sys.executable
    if smoke:
        return {
            "http_turns": [
                py,
                str(BENCH / "http_turns.py"),
                "--smoke",
                "--model",
                str(archive),
                "--out",
                str(results / "http_turns.json"),
            ],
            "train_bots": [
                py,
                str(BENCH / "train_bots.py"),
                "--smoke",
                "--out",
                str(results / "train_bots.json"),
            ],
            "model_load": [
                py,
                str(BENCH / "model_load.py"),
                str(archive),
                "--repeat",
                "1",
                "--json",
                str(results / "model_load.json"),
            ],
            "long_conversation": [
                py,
                str(BENCH / "long_conversation.py"),
                "--stores",
                "memory,sqlite",
                "--messages",
                "100",
                "--out",
                str(results / "long_conversation.json"),
            ],
            "concurrency": [
                py,
                str(BENCH / "concurrency.py"),
                "--smoke",
                "--out",
                str(results / "concurrency.json"),
            ],
            # nlu.py has no smoke mode (it trains on SNIPS, BANKING77, HWU64); tests/nlu
            # covers its code.
        }
    return {
        "http_turns": [
            py,
            str(BENCH / "http_turns.py"),
            "--model",
            str(archive),
            "--out",
            str(results / "http_turns.json"),
        ],
        "train_bots": [py, str(BENCH / "train_bots.py"), "--out", str(results / "train_bots.json")],
        "model_load": [
            py,
            str(BENCH / "model_load.py"),
            str(archive),
            "--json",
            str(results / "model_load.json"),
        ],
        "long_conversation": [
            py,
            str(BENCH / "long_conversation.py"),
            "--out",
            str(results / "long_conversation.json"),
        ],
        "concurrency": [
            py,
            str(BENCH / "concurrency.py"),
            "--out",
            str(results / "concurrency.json"),
        ],
        "nlu": [py, str(BENCH / "nlu.py"), "--out", str(results / "nlu.json")],
    }


def train_moodbot(out: Path) -> Path:
    from server.training.train import train

    result = train(
        MOODBOT / "config.yml", MOODBOT / "domain.yml", [MOODBOT / "data"], out, force=True
    )
    return Path(result.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--results", type=Path)
    parser.add_argument("--timeout", type=float, help="seconds per benchmark")
    parser.add_argument(
        "--model",
        type=model_archive,
        help="the moodbot archive the benchmarks serve (default: train one; train_bots "
        "still trains, as it measures training)",
    )
    args = parser.parse_args(argv)
    timeout = args.timeout or (60 if args.smoke else 600)

    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        results = args.results or (Path(tmp) / "results" if args.smoke else BENCH / "results")
        results.mkdir(parents=True, exist_ok=True)
        archive = args.model or train_moodbot(Path(tmp) / "models")
        plan = steps(args.smoke, results, archive)
        if args.only:
            wanted = set(args.only.split(","))
            plan = {name: command for name, command in plan.items() if name in wanted}
        summary: dict[str, dict[str, object]] = {}
        suite_started = time.perf_counter()
        for name, command in plan.items():
            if not Path(command[1]).exists():
                summary[name] = {"status": "missing", "seconds": 0.0}
                print(f"{name:<18} missing ({command[1]})", flush=True)
                continue
            started = time.perf_counter()
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=timeout, cwd=ROOT
                )
                status = "ok" if done.returncode == 0 else f"failed ({done.returncode})"
                tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            except subprocess.TimeoutExpired:
                status, tail = f"timeout ({timeout:g} s)", []
            seconds = time.perf_counter() - started
            summary[name] = {"status": status, "seconds": round(seconds, 1)}
            print(f"{name:<18} {status:<14} {seconds:7.1f} s", flush=True)
            if status != "ok":
                for line in tail:
                    print(f"    {line}")
        total = time.perf_counter() - suite_started
        print(f"{'suite':<18} {'':<14} {total:7.1f} s")
        (results / "run_all.json").write_text(
            json.dumps(
                {"smoke": args.smoke, "seconds": round(total, 1), "steps": summary}, indent=2
            )
            + "\n"
        )
    failed = [n for n, s in summary.items() if s["status"] not in ("ok", "missing")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
