"""Broadcast and federated on the scenario architecture give what the code before it gave.

The baselines in tests/data/regression/ are the metrics.csv files of runs made
with the code before scenarios were plug-ins (commit 71c5871, ``testbed run
configs/quickstart.yaml`` and ``testbed run configs/tiny.yaml --set mode=federated
--set rounds=3``). The same runs today must give, per device, round and label,
the same accuracy, loss, NMSE parts, bit errors, resends and delivery; columns
that were renamed are mapped here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from testbed.config import load_config
from testbed.runner import run_experiment

REPO = Path(__file__).resolve().parents[1]
BASELINES = Path(__file__).parent / "data" / "regression"

# old metrics.csv column -> the column of today's wide view (metrics.csv)
RENAMED = {"strategy": "label", "strategy_kind": "strategy", "delivered": "delivered_down", "snr_db": "snr_db_down"}
# The link figures and what the devices measured.
COMPARED = [
    "bytes_down", "bytes_down_payload", "bytes_down_protected", "bytes_down_overhead", "bytes_down_coding",
    "bytes_down_resent", "airtime_down_s", "bytes_up", "bytes_up_protected", "airtime_up_s", "snr_db", "bit_errors_down", "packets_lost_down", "resends_down", "repetition_down", "delivered", "decode_ok",
    "recon_nmse_db", "recon_nmse_compression_db", "recon_nmse_channel_db", "accuracy", "loss", "n_test",
    "bit_errors_up", "train_loss",
]
KEYS = ["round", "strategy", "device_id"]


def compare(baseline: Path, run_dir: Path) -> None:
    old = pd.read_csv(baseline, keep_default_na=False, na_values=["", "nan"])
    new = pd.read_csv(run_dir / "metrics.csv", keep_default_na=False, na_values=["", "nan"])
    new = new.rename(columns={v: k for k, v in RENAMED.items()})
    old, new = old.sort_values(KEYS).reset_index(drop=True), new.sort_values(KEYS).reset_index(drop=True)
    assert len(old) == len(new)
    assert (old[KEYS].to_numpy() == new[KEYS].to_numpy()).all()
    assert ((old["failure"].astype(str) != "") == (new["failure"].astype(str) != "")).all(), "failed devices differ"
    for column in COMPARED:
        if column not in old or old[column].isna().all():
            continue
        a, b = old[column], new[column]
        if a.dtype == object or b.dtype == object:
            assert (a.astype(str).str.lower() == b.astype(str).str.lower()).all(), column
        else:
            assert np.array_equal(a.to_numpy(float), b.to_numpy(float), equal_nan=True), column


@pytest.mark.slow
def test_quickstart_broadcast_as_before(tmp_path):
    config = REPO / "configs" / "quickstart.yaml"
    run = run_experiment(load_config(config), tmp_path / "q", progress=False, config_path=config)
    compare(BASELINES / "quickstart_metrics.csv", run)


@pytest.mark.slow
def test_tiny_federated_as_before(tmp_path):
    config = REPO / "configs" / "tiny.yaml"
    cfg = load_config(config, ["scenario.name=federated", "rounds=3"])
    run = run_experiment(cfg, tmp_path / "f", progress=False, config_path=config)
    compare(BASELINES / "federated_tiny_metrics.csv", run)
