"""The objects collection made are frozen out of the garbage collector's full collections
(tests/conftest.py): a test's full collection walks what the tests made, not the suite."""

from __future__ import annotations

import gc

import pytest


def test_the_collected_suite_is_not_walked_by_a_full_collection(
    request: pytest.FixtureRequest,
) -> None:
    assert gc.get_freeze_count() > 100 * len(request.session.items)
