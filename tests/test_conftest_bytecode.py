"""The compiled-code cache tests/conftest.py gives the processes the tests start: never a
folder another user could have planted code in (its name under the temp folder is known)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import _children_keep_their_bytecode

NAME = f"botserver-tests-pycache-{os.getuid()}"


def _environment(tmp_path: Path) -> dict[str, str]:
    environ = {"PYTHONDONTWRITEBYTECODE": "1"}
    _children_keep_their_bytecode(environ, str(tmp_path))
    return environ


def test_a_new_cache_folder_is_this_user_s_alone(tmp_path: Path) -> None:
    environ = _environment(tmp_path)
    assert environ == {"PYTHONPYCACHEPREFIX": str(tmp_path / NAME)}
    assert (tmp_path / NAME).stat().st_mode & 0o777 == 0o700


def test_a_folder_others_can_write_is_not_read(tmp_path: Path) -> None:
    """Another user made the folder first, open to all, and put compiled code in it: the
    processes the tests start compile from source as before rather than run it."""
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME).chmod(0o777)
    assert _environment(tmp_path) == {"PYTHONDONTWRITEBYTECODE": "1"}


def test_a_link_in_its_place_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / NAME).symlink_to(tmp_path / "elsewhere")
    assert _environment(tmp_path) == {"PYTHONDONTWRITEBYTECODE": "1"}


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user takes root")
def test_another_user_s_folder_is_not_read(tmp_path: Path) -> None:
    (tmp_path / NAME).mkdir(mode=0o755)
    os.chown(tmp_path / NAME, 65534, 65534)
    assert _environment(tmp_path) == {"PYTHONDONTWRITEBYTECODE": "1"}


def test_a_prefix_already_chosen_is_kept(tmp_path: Path) -> None:
    environ = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": "/somewhere"}
    _children_keep_their_bytecode(environ, str(tmp_path))
    assert environ == {"PYTHONPYCACHEPREFIX": "/somewhere"}
    assert not (tmp_path / NAME).exists()
