"""Process CPU time to read one YAML value of 40,000 digits ending in a letter, one
endpoints.yml line of 100 KB of `${`, and 2 MB of normal lines, with the code on PYTHONPATH
(run once with the base's, once with the head's).

    PYTHONPATH=<checkout> python bench/long_yaml_line.py
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from server.training.yaml_io import parse_yaml, read_yaml_file


def _cpu(read: Callable[[], object]) -> float:
    started = time.process_time()
    read()
    return time.process_time() - started


def main() -> None:
    normal = "foo:\n" + "  - some text of a normal line, 1234\n" * 54_000
    digits = "foo: " + "1" * 40_000 + "x\n"
    with tempfile.TemporaryDirectory() as folder:
        endpoints = Path(folder, "endpoints.yml")
        endpoints.write_text("url: " + "${" * 50_000 + "\n")
        print(f"2 MB of normal lines       {_cpu(lambda: parse_yaml(normal, 'f.yml')):.3f} s")
        print(f"40,000 digits + x          {_cpu(lambda: parse_yaml(digits, 'f.yml')):.3f} s")
        env_cost = _cpu(lambda: read_yaml_file(endpoints, env=True))
        print(f"100 KB of ${{ (endpoints)   {env_cost:.3f} s")


if __name__ == "__main__":
    main()
