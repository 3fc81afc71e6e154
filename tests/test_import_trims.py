"""What a botserver process skips of its libraries' imports stays importable for other code."""

from __future__ import annotations

import subprocess
import sys

from tests.cli.botserver_process import REPO

IMPORT_THEN_LIST = """
import sys
import server, httpx, httpcore
skipped = [name for name in ("httpx._main", "trio") if name in sys.modules]
import httpx._main
print(skipped, httpx._main.main.name)
"""


def test_skipped_imports_are_importable_afterwards() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_THEN_LIST],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": ""},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "main"]
