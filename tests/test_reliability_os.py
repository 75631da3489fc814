"""Operating-system trouble (a path through a file, a read-only folder) is one line naming the path."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess

import pytest

from conftest import TINY, tiny_config
from testbed.cli import main


@contextlib.contextmanager
def read_only(folder):
    """``folder`` read-only for the block: by permissions, or (as root, whom they do not stop) a read-only bind mount."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    try:
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("running as root without the right to mount: cannot make a folder read-only")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def test_out_under_a_file_is_refused_before_the_run_is_built(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = _one_line_error(capsys, ["run", str(TINY), "--out", str(tmp_path / "file" / "run"), "--quiet"])
    assert f"{tmp_path / 'file'} is a file, not a folder; choose another --out" in err


def test_a_read_only_folder_is_refused_for_a_new_run_and_for_resume(tmp_path, capsys):
    from testbed.config import dump_config

    parent = tmp_path / "parent"
    run = parent / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(tiny_config()))
    with read_only(parent):
        err = _one_line_error(capsys, ["run", str(TINY), "--out", str(parent / "new"), "--quiet"])
        assert f"--out {parent / 'new'}: {parent} is not writable" in err
        err = _one_line_error(capsys, ["run", "--resume", str(run), "--quiet"])
        assert f"--resume {run}: {run} is not writable" in err
        assert "choose another --resume" in err or "make it writable" in err
    assert sorted(p.name for p in parent.rglob("*")) == ["config.yaml", "run"], "nothing written"


def test_report_out_under_a_file_is_refused_before_the_runs_are_read(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    page = tmp_path / "file" / "r.html"
    err = _one_line_error(capsys, ["report", str(tmp_path), "--out", str(page)])
    assert f"--out {page.parent}: {tmp_path / 'file'} is a file, not a folder; choose another --out" in err


@pytest.mark.parametrize("code, advice", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"),
                                         (errno.ENOTDIR, "is a file, not a folder")])
def test_an_os_error_is_one_line_with_the_path_and_what_to_do(code, advice):
    from testbed.cli import os_error_line

    line = os_error_line(OSError(code, os.strerror(code), "/some/run/metrics.csv"))
    assert line.startswith(f"/some/run/metrics.csv: {os.strerror(code)}; ") and advice in line
