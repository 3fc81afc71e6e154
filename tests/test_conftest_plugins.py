"""The suite loads no installed pytest plugin it has no test for (pyproject.toml's addopts):
each one a process loads costs every xdist worker and the process that starts them."""

from __future__ import annotations

import sys

import pytest

UNUSED = ("schemathesis", "benchmark", "anyio", "hypothesispytest")


def test_the_plugins_no_test_uses_are_not_loaded(pytestconfig: pytest.Config) -> None:
    loaded = [name for name in UNUSED if pytestconfig.pluginmanager.has_plugin(name)]
    assert loaded == []
    # schemathesis's plugin imported the whole library (its CLI is what the tests run).
    assert "schemathesis" not in sys.modules
