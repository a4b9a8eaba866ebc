"""Output folders written all at once: a reader sees the whole folder or none of it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ecgqa.outputs import atomic_folder


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_the_folder_appears_complete_in_one_step(tmp_path):
    out = tmp_path / "data"
    with atomic_folder(out) as tmp:
        assert tmp.parent == out.parent                 # same file system: rename is atomic
        assert tmp.name.startswith(".data.") and tmp.is_dir()
        (tmp / "train.json").write_text("[]")
        (tmp / "records").mkdir()
        (tmp / "records" / "1.hea").write_text("1 12 500 5000\n")
        assert not out.exists()                         # nothing to see until it is done
    assert _entries(out) == ["records", "train.json"]
    assert (out / "records" / "1.hea").read_text() == "1 12 500 5000\n"
    assert _entries(tmp_path) == ["data"]               # the temporary folder is gone


def test_missing_parent_folders_are_made(tmp_path):
    out = tmp_path / "a" / "b" / "data"
    with atomic_folder(out) as tmp:
        (tmp / "x").write_text("1")
    assert (out / "x").read_text() == "1"


class _Boom(Exception):
    pass


@pytest.mark.parametrize("error", [_Boom, KeyboardInterrupt])
def test_an_error_half_way_leaves_nothing(tmp_path, error):
    out = tmp_path / "data"
    with pytest.raises(error):
        with atomic_folder(out) as tmp:
            (tmp / "train.json").write_text("[")
            raise error()
    assert _entries(tmp_path) == []                     # neither the folder nor the temp


def test_an_existing_empty_folder_is_replaced(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    with atomic_folder(out) as tmp:
        (tmp / "new.json").write_text("{}")
    assert _entries(out) == ["new.json"] and _entries(tmp_path) == ["data"]


def test_an_existing_folder_with_files_is_kept_and_the_new_one_dropped(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "old.json").write_text("old")
    with pytest.raises(OSError):
        with atomic_folder(out) as tmp:
            (tmp / "new.json").write_text("new")
    assert _entries(out) == ["old.json"] and (out / "old.json").read_text() == "old"
    assert _entries(tmp_path) == ["data"]


def test_an_existing_file_of_that_name_is_kept(tmp_path):
    out = tmp_path / "data"
    out.write_text("a file")
    with pytest.raises(OSError):
        with atomic_folder(out) as tmp:
            (tmp / "new.json").write_text("new")
    assert out.read_text() == "a file" and _entries(tmp_path) == ["data"]


def test_of_two_writers_of_one_folder_the_second_to_finish_is_refused(tmp_path):
    out = tmp_path / "data"
    with pytest.raises(OSError):
        with atomic_folder(out) as outer:
            (outer / "who").write_text("outer")
            with atomic_folder(out) as inner:
                assert inner != outer
                (inner / "who").write_text("inner")
    assert (out / "who").read_text() == "inner" and _entries(tmp_path) == ["data"]


def test_the_folder_gets_the_permissions_mkdir_would_give(tmp_path):
    out, plain = tmp_path / "data", tmp_path / "plain"
    old = os.umask(0o022)
    try:
        plain.mkdir()
        with atomic_folder(out) as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
