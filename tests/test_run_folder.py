"""The run folder is never lost: refused when it holds a run, locked while written, cut back exactly on resume."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import tiny_config
from testbed.config import ConfigError
from testbed.orchestrator import Experiment
from testbed.tables import TRANSFERS


def test_a_folder_holding_a_run_is_refused_and_left_as_it_was(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "measurements.csv").write_text("round,label\n1,a\n")
    (out / "config.yaml").write_text("name: earlier\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ConfigError, match=r"holds a run \(config.yaml\); continue it with --resume"):
        Experiment(tiny_config(), out, progress=False).prepare()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_overwrite_replaces_the_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "measurements.csv").write_text("round,label\n1,a\n")
    experiment = Experiment(tiny_config("rounds=1"), out, progress=False, overwrite=True)
    experiment.prepare()
    try:
        assert not (out / "measurements.csv").exists()
        assert (out / "config.yaml").read_text() == experiment.config_text
    finally:
        experiment.finish()


def test_a_bad_fleet_leaves_the_folder_untouched(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    bad = tiny_config("fleet.trace=missing.csv")
    with pytest.raises(ConfigError, match="missing.csv"):
        Experiment(bad, out, progress=False).prepare()
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_second_run_into_a_locked_folder_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
        "f.write('pid 4242 on elsewhere'); f.flush(); print('held', flush=True); time.sleep(60)"), str(out / ".lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=r"another run is writing this folder \(pid 4242 on elsewhere\)"):
            Experiment(tiny_config(), out, progress=False).prepare()
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "config.yaml").exists()


@pytest.mark.parametrize("last_round", [1, 9, 10, 11])
def test_resume_cuts_a_table_back_exactly_even_mid_line(tmp_path, last_round):
    rows = [TRANSFERS.empty_row(round=r, label="a", device_id=d, transfer="down", bytes=100 + r)
            for r in range(1, 13) for d in range(2)]
    TRANSFERS.append(tmp_path, rows)
    path = TRANSFERS.file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])  # killed while the last row was being written
    TRANSFERS.truncate_after(tmp_path, last_round)
    frame = TRANSFERS.read(tmp_path)
    assert sorted(set(frame["round"])) == list(range(1, last_round + 1))
    assert len(frame) == 2 * last_round
    # appending the next round gives exactly what an uninterrupted write gives
    TRANSFERS.append(tmp_path, [r for r in rows if r["round"] == last_round + 1])
    whole = tmp_path / "whole"
    whole.mkdir()
    TRANSFERS.append(whole, [r for r in rows if r["round"] <= last_round + 1])
    assert path.read_text() == TRANSFERS.file(whole).read_text()
