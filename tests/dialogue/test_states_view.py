"""StatesView: the policies' read-only window on a conversation's states, made without copying."""

from __future__ import annotations

import pytest

from server.dialogue.policies.featurization import State, StatesView


def _state(n: int | str) -> State:
    return {"user": {"n": n}}


def _view() -> tuple[StatesView, list[State]]:
    body = [_state(0), _state(1), _state(2), _state(99)]  # the 4th is past the view's size
    view = StatesView(body, 3, _state(3))
    return view, [_state(0), _state(1), _state(2), _state(3)]


def test_the_view_reads_like_the_list_it_stands_for() -> None:
    view, expected = _view()
    assert len(view) == 4
    assert list(view) == expected
    assert view == expected
    for index in range(-4, 4):
        assert view[index] == expected[index]
    for start in range(-5, 6):
        for stop in (None, -1, 0, 2, 3, 4, 9):
            assert view[start:stop] == expected[start:stop], (start, stop)
    assert view[::2] == expected[::2]


def test_indexes_past_either_end_raise() -> None:
    view, _ = _view()
    with pytest.raises(IndexError):
        view[4]
    with pytest.raises(IndexError):
        view[-5]


def test_with_last_replaces_only_the_current_state() -> None:
    view, expected = _view()
    changed = view.with_last(_state("text"))
    assert list(changed) == [*expected[:-1], _state("text")]
    assert list(view) == expected
    assert view != changed
