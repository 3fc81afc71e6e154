"""bench/model_load.py runs and writes its JSON (extraction only, one repeat)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_reports_load_time_and_rss(tmp_path: Path, archive_factory):
    archive = archive_factory()
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench/model_load.py"), str(archive)]
        + ["--loader", "none", "--repeat", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert archive.name[-40:] in done.stdout
    (row,) = json.loads(out.read_text())["model_load"]
    assert row["cold_extract_s"] > 0
    assert row["archive_bytes"] == archive.stat().st_size
    assert "rss_added_bytes" in row
