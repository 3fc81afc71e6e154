"""Where the shared Rasa reference data and example bots live, for every test and benchmark.

CI clones the repo with `shared/` beside it; `BOTSERVER_SHARED_DATA` overrides that, and
`/work/shared` is the fallback on the development machine.
"""

from __future__ import annotations

import os
from pathlib import Path


def _shared_dir() -> Path:
    candidates = [
        os.environ.get("BOTSERVER_SHARED_DATA"),
        Path(__file__).resolve().parents[1].parent / "shared",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return Path("/work/shared")


SHARED = _shared_dir()
BOTS = SHARED / "bots"
MOODBOT = BOTS / "moodbot"
REFERENCE = SHARED / "reference"
TESTDATA = REFERENCE / "rasa-testdata"
RECORDED = REFERENCE / "rasa-recorded-examples.md"
OPENAPI_SPEC = REFERENCE / "rasa-openapi.yml"
