"""Benchmark: model load time and the RSS one loaded model adds.

    python bench/model_load.py models/20260101-120000-brisk-otter.tar.gz [more.tar.gz ...]
        [--loader package.module:function] [--repeat 5] [--json bench/results/model_load.json]

Each archive is measured in a fresh Python process: imports first, then the RSS baseline,
then one cold load (archive check + extraction, then the loader), then warm repeats.
`--loader` defaults to `server.models.loading:load_model` when it imports, otherwise only
the archive is read and extracted. `--loader none` forces extraction only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_LOADER = "server.models.loading:load_model"
ROOT = Path(__file__).resolve().parent.parent


def rss_bytes() -> int:
    """Current resident set size (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def resolve_loader(spec: str | None) -> tuple[str, Any]:
    if spec == "none":
        return "none (extraction only)", None
    target = spec or DEFAULT_LOADER
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        return target, getattr(module, attribute or "load_model")
    except (ImportError, AttributeError) as exc:
        if spec is not None:
            raise SystemExit(f"Cannot import loader {spec!r}: {exc}") from exc
        return f"none ({DEFAULT_LOADER} unavailable)", None


def measure_one(archive: Path, loader_spec: str | None, repeat: int) -> dict[str, Any]:
    """Runs inside the worker process."""
    from server.models.archive import read_archive

    loader_name, loader = resolve_loader(loader_spec)
    baseline = rss_bytes()
    runs: list[dict[str, float]] = []
    keep: list[Any] = []
    for index in range(repeat):
        directory = Path(tempfile.mkdtemp(prefix="bench-model-"))
        try:
            started = time.perf_counter()
            metadata = read_archive(archive, directory)
            extracted = time.perf_counter()
            model = loader(directory, metadata) if loader is not None else metadata
            finished = time.perf_counter()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        runs.append({"extract_s": extracted - started, "loader_s": finished - extracted})
        if index == 0:
            keep.append(model)  # the first model stays alive: its RSS is what we report
            rss_after_first = rss_bytes()
        del model
    warm = runs[1:] or runs
    return {
        "archive": str(archive),
        "archive_bytes": archive.stat().st_size,
        "loader": loader_name,
        "cold_extract_s": runs[0]["extract_s"],
        "cold_loader_s": runs[0]["loader_s"],
        "cold_total_s": runs[0]["extract_s"] + runs[0]["loader_s"],
        "warm_total_median_s": statistics.median(r["extract_s"] + r["loader_s"] for r in warm),
        "rss_added_bytes": rss_after_first - baseline,
        "rss_baseline_bytes": baseline,
        "repeat": repeat,
    }


def run_worker(archive: Path, loader: str | None, repeat: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", str(archive), "--repeat", str(repeat)]
    if loader is not None:
        command += ["--loader", loader]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return {"archive": str(archive), "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(results: list[dict[str, Any]]) -> None:
    header = f"{'archive':<44} {'size':>9} {'extract':>9} {'loader':>9} {'cold':>9} "
    header += f"{'warm':>9} {'RSS added':>10}"
    print(header)
    print("-" * len(header))
    for row in results:
        name = Path(row["archive"]).name[-44:]
        if "error" in row:
            print(f"{name:<44} error: {row['error']}")
            continue
        print(
            f"{name:<44} {row['archive_bytes'] / 1024:>7.0f}KB "
            f"{row['cold_extract_s'] * 1000:>7.1f}ms {row['cold_loader_s'] * 1000:>7.1f}ms "
            f"{row['cold_total_s'] * 1000:>7.1f}ms {row['warm_total_median_s'] * 1000:>7.1f}ms "
            f"{row['rss_added_bytes'] / 1024 / 1024:>8.1f}MB"
        )
    if results and "loader" in results[0]:
        print(f"loader: {results[0]['loader']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archives", nargs="+", type=Path)
    parser.add_argument(
        "--loader", default=None, help=f"module:function (default {DEFAULT_LOADER})"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/model_load.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(measure_one(args.archives[0], args.loader, max(1, args.repeat))))
        return 0

    results = [run_worker(archive, args.loader, max(1, args.repeat)) for archive in args.archives]
    print_table(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"model_load": results}, indent=2))
    print(f"written: {args.json}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
