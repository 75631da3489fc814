"""A Ray worker that dies mid-round loses only its own cohort's results, never the round."""

from __future__ import annotations

import os

import pytest

from conftest import FAIL_DEVICE, FAULTY, run_tiny

KILLED = 3  # the worker emulating this device's cohort exits on the spot


@pytest.mark.slow
def test_a_lost_worker_fails_its_cohort_and_the_run_goes_on(tmp_path):
    import pandas as pd

    out = run_tiny(tmp_path / "run", *FAULTY, f"scenario.kill_devices=[{KILLED}]", "rounds=2",
                   "engine.devices_per_node=2", "engine.round_timeout_s=120")
    frame = pd.read_csv(out / "metrics.csv", keep_default_na=False, na_values=["", "nan"])
    assert len(frame) == 2 * 3 * 8  # every (strategy, device) has its row, lost or not

    lost_cohort = {KILLED - KILLED % 2, KILLED - KILLED % 2 + 1}
    lost = frame[frame["device_id"].isin(lost_cohort)]
    assert (lost["failure"].str.startswith("node error")).all(), lost["failure"].tolist()
    assert not lost["failure"].str.contains("\n").any()  # one line, for the CSV and the report
    assert not lost["decode_ok"].any()

    others = frame[~frame["device_id"].isin(lost_cohort | {FAIL_DEVICE})]
    # No other cohort lost anything, in the round of the loss or after it (a fresh worker replaced the dead one).
    assert not others["failure"].str.startswith("node").any(), others["failure"].tolist()
    for round_ in (1, 2):
        assert others[others["round"] == round_]["accuracy"].notna().sum() > 0
    assert os.path.exists(out / "summary.json")
