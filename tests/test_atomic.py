"""A write cut short (a full disk, an error) leaves the target as it was and no temporary file."""

from __future__ import annotations

import errno

import pytest

from testbed.atomic import atomic_write, atomic_write_text


def test_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("the old one")

    def full(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, full)
    assert target.read_text() == "the old one"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_finished_write_replaces_the_file(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
