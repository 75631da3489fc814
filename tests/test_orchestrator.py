"""A real fleet through Flower's simulation engine on Ray: the metrics it writes are right."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import FAIL_DEVICE, FAULTY, REPO, TINY, tiny_config
from testbed import metrics
from testbed.tables import ROUNDS, TRANSFERS

pytestmark = pytest.mark.slow  # starts Flower on Ray


def _measurements(run):
    from testbed.scenarios import build_scenario

    scenario = build_scenario(tiny_config(*FAULTY, "scenario.measurements=[nmse_conv]"))
    return scenario.measurements_table(scenario.options)


@pytest.fixture(scope="module")
def frame(tiny_run):
    """The wide view: each measurement row with its transfers' figures (bytes_down, bit_errors_down...)."""
    return metrics.wide_view(_measurements(tiny_run).read(tiny_run), TRANSFERS.read(tiny_run))


def test_run_folder_has_every_file(tiny_run):
    for name in ("config.yaml", "devices.csv", "payloads.json", "transfers.csv", "measurements.csv", "rounds.csv",
                 "metrics.csv", "metrics.parquet", "summary.json", "run.log"):
        assert (tiny_run / name).exists(), name
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["rounds_done"] == summary["rounds"] == 2
    assert summary["scenario"] == "faulty-broadcast" and summary["fleet_accuracy"] == "mean"
    assert set(summary["strategies"]) == {"fp32", "q8", "skew-dof8"}
    parquet = pd.read_parquet(tiny_run / "metrics.parquet")
    assert len(parquet) == 2 * 3 * 8
    assert {"label", "device_id", "accuracy", "bytes_down", "bit_errors_down", "recon_nmse_conv_db"} <= set(parquet.columns)


def test_tables_have_their_declared_columns_in_order(tiny_run):
    for table in (TRANSFERS, _measurements(tiny_run), ROUNDS):
        header = table.file(tiny_run).read_text().splitlines()[0].split(",")
        assert tuple(header) == table.names, table.name


def test_one_row_per_round_label_device_and_transfer(tiny_run, frame):
    assert len(frame) == 2 * 3 * 8
    assert not frame.duplicated(["round", "label", "device_id"]).any()
    assert set(frame["device_id"]) == set(range(8))
    transfers = TRANSFERS.read(tiny_run)
    # Broadcast has one transfer, down; the device that raises never sent anything.
    assert set(transfers["transfer"]) == {"down"} and set(transfers["hop"]) == {"server->device"}
    assert len(transfers) == 2 * 3 * 7 and FAIL_DEVICE not in set(transfers["device_id"])


def test_bytes_are_the_payload_plus_crc_plus_resends(tiny_run, frame):
    """bytes_down = inspect's total_bytes + CRC overhead + protected coding + resends; the payload is what inspect reports."""
    from strategies.registry import build
    from testbed.data import load_dataset
    from testbed.inspect import payload_report
    from testbed.training import central_model

    config = tiny_config()
    dataset = load_dataset(config.data.dataset)
    payloads = {p["label"]: p for p in json.loads((tiny_run / "payloads.json").read_text())}
    sent = frame[frame["failure"] == ""]
    assert len(sent) > 0
    for label, spec in config.strategy_specs().items():
        strategy = build(spec)
        state = central_model(strategy, config.model, dataset, config.seed, progress=False).state_dict()
        report = payload_report(label, strategy, state)
        assert payloads[label]["total_bytes"] == report["total_bytes"]
        rows = sent[sent["label"] == label]
        assert (rows["bytes_down_payload"] == report["total_bytes"]).all()
        assert (rows["bytes_down_protected"] == report["protected_bytes"]).all()
        assert (
            rows["bytes_down"]
            == rows["bytes_down_payload"] + rows["bytes_down_overhead"] + rows["bytes_down_coding"] + rows["bytes_down_resent"]
        ).all()
        assert (rows["bytes_down_overhead"] > 0).all()


def test_higher_snr_never_gives_more_bit_errors(frame):
    noisy = frame[(frame["link_model"] == "awgn") & (frame["failure"] == "")]
    for label, rows in noisy.groupby("label"):
        by_snr = rows.groupby(rows["snr_db_down"].round(6))["bit_errors_down"].mean().sort_index()
        assert len(by_snr) == 3, by_snr
        assert all(a >= b for a, b in zip(by_snr.values, by_snr.values[1:])), (label, by_snr)
    # fp32 sends every value exposed: at 8 dB there are errors.
    assert noisy[(noisy["label"] == "fp32") & (noisy["snr_db_down"] == 8.0)]["bit_errors_down"].sum() > 0


def test_ideal_links_add_no_channel_error(frame):
    ideal = frame[frame["link_model"] == "ideal"]
    assert len(ideal) == 2 * 3 * 2
    assert (ideal["bit_errors_down"] == 0).all()
    assert (ideal["bytes_down_resent"] == 0).all()
    assert ideal["delivered_down"].all() and ideal["decode_ok"].all()
    assert (ideal["recon_nmse_channel_db"] == -math.inf).all()
    assert (ideal[ideal["label"] == "fp32"]["recon_nmse_db"] == -math.inf).all()
    # quantisation error is the compression part, and the whole error on an ideal link
    q8 = ideal[ideal["label"] == "q8"]
    assert (q8["recon_nmse_compression_db"] < -20).all()
    assert (q8["recon_nmse_db"] == q8["recon_nmse_compression_db"]).all()
    # conv kernels alone: exact for fp32, quantisation noise only for q8
    assert (ideal[ideal["label"] == "fp32"]["recon_nmse_conv_db"] == -math.inf).all()
    assert (q8["recon_nmse_conv_db"] < -20).all() and q8["recon_nmse_conv_db"].notna().all()


def test_conv_kernel_error_grows_as_the_snr_falls(frame):
    noisy = frame[(frame["link_model"] == "awgn") & frame["decode_ok"] & (frame["label"] == "skew-dof8")]
    by_snr = noisy.groupby("snr_db_down")["recon_nmse_conv_db"].mean().sort_index()
    assert len(by_snr) >= 2 and by_snr.iloc[0] >= by_snr.iloc[-1]


def test_fp32_over_ideal_links_has_the_central_accuracy(frame):
    from strategies.registry import build
    from testbed.data import device_split, load_dataset
    from testbed.fleet import Fleet
    from testbed.training import central_model, evaluate

    config = tiny_config()
    dataset = load_dataset(config.data.dataset)
    model = central_model(build({"strategy": "raw"}), config.model, dataset, config.seed, progress=False)
    fleet = Fleet.from_config(config.fleet, config.seed)
    rows = frame[(frame["link_model"] == "ideal") & (frame["label"] == "fp32")]
    for _, row in rows.iterrows():
        split = device_split(dataset, config.data, len(fleet), fleet.device(int(row["device_id"])).partition, config.seed)
        accuracy, loss = evaluate(model, dataset.test_x[split.test_idx], dataset.test_y[split.test_idx])
        assert row["accuracy"] == accuracy
        assert row["loss"] == pytest.approx(loss, rel=1e-6)
        assert row["n_test"] == len(split.test_idx)
    assert 0.15 < rows["accuracy"].mean()  # the tiny model learnt something


def test_a_device_that_raises_is_failed_and_the_run_goes_on(tiny_run, frame):
    failed = frame[frame["device_id"] == FAIL_DEVICE]
    assert len(failed) == 2 * 3
    assert failed["failure"].str.contains("injected failure").all()
    assert failed["accuracy"].isna().all()
    others = frame[frame["device_id"] != FAIL_DEVICE]
    assert (others["failure"].str.startswith("error")).sum() == 0
    rounds = pd.read_csv(tiny_run / "rounds.csv")
    assert (rounds["failed"] >= 1).all() and (rounds["devices"] == 8).all()


def test_summary_matches_the_rows(tiny_run, frame):
    summary = json.loads((tiny_run / "summary.json").read_text())
    for label, s in summary["strategies"].items():
        rows = frame[frame["label"] == label]
        assert s["bytes_down_total"] == int(rows["bytes_down"].fillna(0).sum())
        per_device = rows.dropna(subset=["accuracy"]).groupby("device_id")["accuracy"].mean()
        assert s["accuracy_mean"] == pytest.approx(per_device.mean())
        assert s["accuracy_p10"] == pytest.approx(float(np.percentile(per_device.to_numpy(dtype=float), 10)))
        assert s["accuracy_min"] == pytest.approx(per_device.min())
        assert 0 <= s["central_accuracy"] <= 1 and 0 <= s["clean_accuracy"] <= 1
    # fp32 is lossless, so an ideal link delivers exactly the server's model; q8 is close to it.
    fp32, q8 = summary["strategies"]["fp32"], summary["strategies"]["q8"]
    assert fp32["clean_accuracy"] == fp32["central_accuracy"]
    assert abs(q8["clean_accuracy"] - q8["central_accuracy"]) < 0.05


def test_bad_config_is_one_line_naming_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("rounds: 2", "rounds: 2\nroundz: 3"))
    result = subprocess.run(
        [sys.executable, "-m", "testbed", "run", str(bad), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "roundz" in lines[0] and str(bad) in lines[0], result.stderr
    assert "Traceback" not in result.stderr
