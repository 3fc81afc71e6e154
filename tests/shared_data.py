"""Where the shared Rasa reference data and example bots live (`../shared` of the repo)."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(
    os.environ.get("BOTSERVER_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared")
)
if not SHARED.is_dir():
    SHARED = Path("/work/shared")
BOTS = SHARED / "bots"
TESTDATA = SHARED / "reference" / "rasa-testdata"
RECORDED = SHARED / "reference" / "rasa-recorded-examples.md"
