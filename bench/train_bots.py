"""Benchmark: training time of every shared bot, end to end (read, train, write the archive).

    python bench/train_bots.py [--smoke] [--bots moodbot,formbot] [--repeat 3]
        [--out bench/results/train_bots.json]

Each training runs in a fresh Python process, so the figure includes the imports a
`botserver train` pays: `total_s` is the wall time of the process, `train_s` the time
`server.training.train.train` reports. Rasa 3.6 takes over a minute for moodbot.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BOTS = Path("/work/shared/bots")
sys.path.insert(0, str(ROOT))

from bench.http_turns import machine  # noqa: E402

CHILD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from server.training.train import train
bot, out = Path(sys.argv[1]), Path(sys.argv[2])
config = bot / "config.yml"
started = time.perf_counter()
result = train(config if config.exists() else None, bot / "domain.yml", [bot / "data"], out,
               force=True)
print("BENCH_JSON " + json.dumps({{"train_s": time.perf_counter() - started,
                                   "archive_bytes": Path(result.path).stat().st_size}}))
"""


def bots(selection: str | None) -> list[Path]:
    found = sorted(p for p in BOTS.iterdir() if (p / "domain.yml").exists())
    if selection:
        wanted = set(selection.split(","))
        found = [p for p in found if p.name in wanted]
    return found


def train_once(bot: Path, workdir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(root=str(ROOT)), str(bot), str(workdir / bot.name)],
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    total = time.perf_counter() - started
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON "))
    return {"total_s": total, **json.loads(line.removeprefix("BENCH_JSON "))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="moodbot once")
    parser.add_argument("--bots", help="comma-separated names (default: every shared bot)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_bots.json"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.bots, args.repeat = "moodbot", 1

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for bot in bots(args.bots):
            runs = [train_once(bot, Path(tmp)) for _ in range(args.repeat)]
            ok = [r for r in runs if "error" in r] == []
            if not ok:
                results[bot.name] = {"error": next(r["error"] for r in runs if "error" in r)}
                print(f"{bot.name:<24} failed: {results[bot.name]['error']}")
                continue
            results[bot.name] = {
                "runs": runs,
                "total_s_median": statistics.median(r["total_s"] for r in runs),
                "train_s_median": statistics.median(r["train_s"] for r in runs),
                "archive_bytes": runs[0]["archive_bytes"],
            }
            r = results[bot.name]
            print(
                f"{bot.name:<24} end to end {r['total_s_median']:6.2f} s   "
                f"train() {r['train_s_median']:6.2f} s   archive {r['archive_bytes']:>9} B",
                flush=True,
            )
    report = {
        "machine": machine(),
        "command": "python bench/train_bots.py " + " ".join(argv or sys.argv[1:]),
        "repeat": args.repeat,
        "bots": results,
    }
    if "moodbot" in results and "total_s_median" in results["moodbot"]:
        report["moodbot_under_5s"] = results["moodbot"]["total_s_median"] < 5
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
