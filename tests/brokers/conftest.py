"""Broker tests share the persistence test helpers kept in tests/trackers."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trackers"))
