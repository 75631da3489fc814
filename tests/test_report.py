"""The fleet report of real small runs (broadcast and federated): its numbers recomputed here from
transfers.csv and measurements.csv, the page in a real browser, and the hard cases (failures, no SNR,
runs killed mid-way, a scenario not installed, a plug-in figure)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from browser import distinct_colours, open_page, png_pixels
from conftest import run_tiny
from testbed.cli import main as cli_main
from testbed.report import load_run, report_files, write_report
from testbed.report.figures import FIGURES, figure, registered
from testbed.report.plots import pareto_front
from testbed.report.tables import (
    MEASUREMENT_COLUMNS, ROUND_COLUMNS, STRATEGY_COLUMNS, TRANSFER_COLUMNS, definitions_markdown,
)
from testbed.metrics import power_mean_db
from testbed.tables import MEASUREMENTS

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["fp32", "q8", "skew-dof8"]  # configs/tiny.yaml
BUILTIN = ["accuracy-snr", "accuracy-bytes", "accuracy-spread", "recon-snr", "traffic", "cumulative-bytes",
           "measurements-rounds", "fleet"]


@pytest.fixture(scope="module")
def federated_run(tmp_path_factory) -> Path:
    """The tiny fleet (ideal and noisy links, one node that raises) under FedAvg."""
    return run_tiny(tmp_path_factory.mktemp("fed") / "fed", "scenario.name=federated")


@pytest.fixture(scope="module", params=["broadcast", "federated"])
def run_dir(request, tiny_run, federated_run) -> Path:
    return tiny_run if request.param == "broadcast" else federated_run


# ---- the definitions, recomputed from the run folder's files alone ------------------------------


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=["", "nan"], dtype={"failure": str, "label": str})


def _true(values: pd.Series) -> pd.Series:
    return values.astype(str).str.lower() == "true"


def _lin_db(values: pd.Series) -> float:
    values = values.dropna().to_numpy(dtype=float)
    if not values.size:
        return math.nan
    mean = np.mean(10 ** (values / 10))
    return 10 * math.log10(mean) if mean > 0 else -math.inf


def _expected(run_dir: Path, label: str) -> dict:
    m = _csv(run_dir / "measurements.csv")
    t = _csv(run_dir / "transfers.csv")
    m, t = m[m["label"] == label], t[t["label"] == label]
    over_rounds = json.loads((run_dir / "summary.json").read_text())["fleet_accuracy"]
    measured = m.dropna(subset=["accuracy"])
    if over_rounds == "last":  # the model changes every round: each device's accuracy in the last round
        measured = measured[measured["round"] == measured["round"].max()]
    per_device = measured.groupby("device_id")["accuracy"].mean().to_numpy()
    return {
        "bytes_per_device_round": t["bytes"].sum() / len(m),
        "fleet_bytes": t["bytes"].sum(),
        "fleet_bytes_down": t.loc[t["direction"] == "down", "bytes"].sum(),
        "fleet_bytes_up": t.loc[t["direction"] == "up", "bytes"].sum(),
        "resends": t["resends"].sum(),
        "resent_bytes": t["resent_bytes"].sum(),
        "coding_bytes": t["coding_bytes"].sum(),
        "airtime_s": t["airtime_s"].sum(),
        "accuracy_mean": per_device.mean() if per_device.size else math.nan,
        "accuracy_p10": np.percentile(per_device, 10) if per_device.size else math.nan,
        "accuracy_min": per_device.min() if per_device.size else math.nan,
        "nmse_db": _lin_db(m["recon_nmse_db"]),
        "nmse_compression_db": _lin_db(m["recon_nmse_compression_db"]),
        "nmse_channel_db": _lin_db(m["recon_nmse_channel_db"]),
        "failed": int((m["failure"].fillna("") != "").sum()),
        "device_rounds": len(m),
        "devices": m["device_id"].nunique(),
    }


def _same(a, b) -> bool:
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return a == pytest.approx(b, rel=1e-9, abs=1e-9)


def _figure_keys(html: str) -> list[str]:
    return re.findall(r'<figure id="fig-([^"]+)"', html)


def test_report_numbers_match_the_run_folder(run_dir, tmp_path):
    assert (run_dir / "report.html").stat().st_size > 10_000  # the run wrote its own report
    page = write_report([run_dir], tmp_path / "report.html")
    files = report_files(page)
    table = pd.read_csv(files["strategies_csv"])
    summary = json.loads((run_dir / "summary.json").read_text())
    payloads = {p["label"]: p for p in json.loads((run_dir / "payloads.json").read_text())}
    assert table["strategy"].tolist() == LABELS
    for label in LABELS:
        row = table[table["strategy"] == label].iloc[0]
        for key, value in _expected(run_dir, label).items():
            assert _same(row[key], value), (label, key, row[key], value)
        # One definition: the report's fleet figures are summary.json's.
        mine = summary["strategies"][label]
        for ours, theirs in (("accuracy_mean", "accuracy_mean"), ("accuracy_p10", "accuracy_p10"),
                             ("fleet_bytes", "bytes_total"), ("fleet_bytes_up", "bytes_up_total"),
                             ("airtime_s", "airtime_s_total"), ("failed", "failed"), ("device_rounds", "device_rounds")):
            assert _same(row[ours], math.nan if mine[theirs] is None else mine[theirs]), (label, ours)
        assert row["payload_bytes"] == payloads[label]["total_bytes"]
        assert row["model_ratio"] == pytest.approx(payloads[label]["model_ratio"])
        assert row["protected_share"] == pytest.approx(payloads[label]["protected_bytes"] / payloads[label]["total_bytes"])
        assert row["clean_accuracy"] == pytest.approx(mine["clean_accuracy"])
    by = table.set_index("strategy")
    assert by.loc["fp32", "bytes_per_device_round"] > by.loc["q8", "bytes_per_device_round"]
    assert by.loc["fp32", "nmse_compression_db"] == -math.inf  # fp32 is sent exactly

    # Traffic: every (strategy, transfer) of transfers.csv, with its hop, direction and sums.
    transfers = _csv(run_dir / "transfers.csv")
    traffic = pd.read_csv(files["transfers_csv"], keep_default_na=False, na_values=[""])
    assert len(traffic) == len(transfers.groupby(["label", "transfer"]))
    for (label, name), rows in transfers.groupby(["label", "transfer"]):
        got = traffic[(traffic["strategy"] == label) & (traffic["transfer"] == name)].iloc[0]
        assert got["hop"] == rows["hop"].iloc[0] and got["direction"] == rows["direction"].iloc[0]
        assert got["kind"] == rows["strategy"].iloc[0]
        assert got["transfers"] == len(rows)
        assert got["delivered"] == _true(rows["delivered"]).sum()
        assert got["failed"] == (rows["failure"].fillna("") != "").sum()
        for column in ("bytes", "payload_bytes", "overhead_bytes", "coding_bytes", "resent_bytes", "resends", "bit_errors"):
            assert got[column] == rows[column].sum(), (label, name, column)
        assert got["airtime_s"] == pytest.approx(rows["airtime_s"].sum())
        # Bytes on the air are the payload plus what the link added.
        assert got["bytes"] == got["payload_bytes"] + got["overhead_bytes"] + got["coding_bytes"] + got["resent_bytes"]
    assert set(traffic["transfer"]) == ({"down", "up"} if run_dir.name == "fed" else {"down"})

    # The scenario's own measurements, federated's training loss among them.
    measurements = _csv(run_dir / "measurements.csv")
    measured = pd.read_csv(files["measurements_csv"])
    base = MEASUREMENTS.names  # every scenario's columns (keys, failure, availability, compute): not the scenario's own
    expected_columns = [c for c in measurements.columns if c not in base]
    quality = ["decode_ok", "accuracy", "loss", "n_test", "recon_nmse_db", "recon_nmse_compression_db",
               "recon_nmse_channel_db"]
    assert expected_columns[:len(quality)] == quality
    assert ("train_loss" in expected_columns) == (run_dir.name == "fed")
    assert measured[measured["strategy"] == "q8"]["measurement"].tolist() == expected_columns
    for label in LABELS:
        m = measurements[measurements["label"] == label]
        rows = measured[measured["strategy"] == label].set_index("measurement")
        assert _same(rows.loc["accuracy", "mean"], m["accuracy"].mean())
        assert rows.loc["accuracy", "rows"] == m["accuracy"].notna().sum()
        assert _same(rows.loc["recon_nmse_db", "mean"], _lin_db(m["recon_nmse_db"]))
        if run_dir.name == "fed":
            assert _same(rows.loc["train_loss", "mean"], m["train_loss"].mean())

    # Rounds: rounds.csv's figures, which are the sums of transfers.csv per round; cumulative bytes.
    rounds = pd.read_csv(files["rounds_csv"])
    for label in LABELS:
        mine = rounds[rounds["strategy"] == label].sort_values("round")
        sent = transfers[transfers["label"] == label].groupby("round")["bytes"].sum()
        assert mine["bytes"].tolist() == sent.tolist()
        assert mine["cumulative_bytes"].tolist() == sent.cumsum().tolist()

    # The Markdown table has every strategy, with the same accuracies to its 4 decimals.
    md = files["strategies_md"].read_text().splitlines()
    header = [c.strip() for c in md[0].strip("|").split("|")]
    cells = {r[1]: r for r in ([c.strip() for c in line.strip("|").split("|")] for line in md[2:])}
    assert sorted(cells) == sorted(LABELS)
    for label in LABELS:
        assert float(cells[label][header.index("acc mean")]) == pytest.approx(_expected(run_dir, label)["accuracy_mean"], abs=5e-5)

    html = page.read_text()
    assert _figure_keys(html) == BUILTIN
    scenario = json.loads((run_dir / "summary.json").read_text())["scenario"]
    assert scenario == ("federated" if run_dir.name == "fed" else "faulty-broadcast")
    assert f"scenario {scenario}" in html
    for label in LABELS:
        assert f">{label}<" in html
    assert ">server-&gt;device<" in html
    assert ("train_loss" in html) == (run_dir.name == "fed")
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r'(src|href)\s*=\s*"(?!#)', html)
    assert "<script" not in html
    # The SVGs share one document: their ids are unique and every reference resolves.
    ids = re.findall(r'\bid="([^"]+)"', html)
    refs = re.findall(r"url\(#([^)]+)\)", html) + re.findall(r'href="#([^"]+)"', html)
    assert len(ids) == len(set(ids)) and refs and set(refs) <= set(ids)
    assert "name: tiny" in html  # the config is on the page


def test_an_uplink_failure_fails_the_device_and_keeps_its_accuracy(federated_run, tmp_path):
    """A device whose update is lost measured the model it received: it counts as failed and towards
    fleet accuracy, in the report as in summary.json and rounds.csv (testbed.metrics)."""
    edited = tmp_path / "uplink"
    shutil.copytree(federated_run, edited)
    m = pd.read_csv(edited / "measurements.csv", dtype=str, keep_default_na=False)
    t = pd.read_csv(edited / "transfers.csv", dtype=str, keep_default_na=False)
    last = m["round"].astype(int).max()
    hit = (m["label"] == "q8") & (m["round"].astype(int) == last) & (m["device_id"] == "0")
    assert m.loc[hit, "accuracy"].item() not in ("", "nan")
    m.loc[hit, "failure"] = "up delivery: retries exhausted"
    up = (t["label"] == "q8") & (t["round"].astype(int) == last) & (t["device_id"] == "0") & (t["transfer"] == "up")
    t.loc[up, ["delivered", "failure"]] = ["false", "delivery: retries exhausted"]
    m.to_csv(edited / "measurements.csv", index=False)
    t.to_csv(edited / "transfers.csv", index=False)

    page = write_report([edited], tmp_path / "r.html")
    table = pd.read_csv(report_files(page)["strategies_csv"]).set_index("strategy")
    before = pd.read_csv(report_files(write_report([federated_run], tmp_path / "o.html"))["strategies_csv"]).set_index("strategy")
    assert table.loc["q8", "failed"] == before.loc["q8", "failed"] + 1
    assert table.loc["q8", "accuracy_mean"] == before.loc["q8", "accuracy_mean"]
    expected = _expected(edited, "q8")
    assert table.loc["q8", "failed"] == expected["failed"]
    assert _same(table.loc["q8", "accuracy_mean"], expected["accuracy_mean"])
    traffic = pd.read_csv(report_files(page)["transfers_csv"])
    assert traffic[(traffic["strategy"] == "q8") & (traffic["transfer"] == "up")]["failed"].item() == 1


def test_report_page_in_headless_browser(tiny_run, federated_run, tmp_path):
    page = write_report([tiny_run, federated_run], tmp_path / "both.html")
    result = open_page(page)
    assert result.console_errors == [], result.console_messages
    assert result.svg_count == len(BUILTIN)
    for label in LABELS:
        assert f"run / {label}" in result.text and f"fed / {label}" in result.text
    for heading in ("Accuracy against bytes", "Traffic by transfer", "What the scenario measured", "train_loss"):
        assert heading in result.text
    pixels = png_pixels(result.screenshot)
    assert pixels.shape[0] > 2000 and pixels.shape[1] >= 1000  # the whole page, plots included
    assert distinct_colours(pixels) > 100
    rgb = (pixels[..., :3] * 255).round()
    assert (rgb.min(axis=-1) < 200).mean() > 0.02  # well away from all white
    # The plots are drawn in the palette: Okabe-Ito blue and orange are on screen.
    for colour in ((0, 114, 178), (230, 159, 0)):
        assert (np.abs(rgb - colour).max(axis=-1) < 12).sum() > 50, colour


# ---- the hard cases ------------------------------------------------------------------------------


def _edit(run_dir: Path, dest: Path, table: str, change) -> Path:
    """A copy of a real run with one of its tables changed by ``change(frame)`` (text cells)."""
    if not dest.exists():
        shutil.copytree(run_dir, dest)
    frame = pd.read_csv(dest / f"{table}.csv", dtype=str, keep_default_na=False)
    change(frame)
    frame.to_csv(dest / f"{table}.csv", index=False)
    return dest


def test_failures_and_links_without_snr(tiny_run, tmp_path):
    dest = tmp_path / "edited"

    def undelivered(frame):  # q8 never arrives anywhere; no link reports an SNR
        q8 = frame["label"] == "q8"
        frame.loc[q8, ["delivered", "failure"]] = ["false", "delivery: retries exhausted"]
        frame["snr_db"] = "nan"

    def failed(frame):
        q8 = frame["label"] == "q8"
        frame.loc[q8, "failure"] = "down delivery: retries exhausted"
        frame.loc[q8, ["decode_ok"]] = "false"
        frame.loc[q8, ["accuracy", "loss", "recon_nmse_db", "recon_nmse_channel_db", "recon_nmse_compression_db"]] = "nan"

    _edit(tiny_run, dest, "transfers", undelivered)
    _edit(tiny_run, dest, "measurements", failed)
    page = write_report([dest], tmp_path / "edited.html")
    table = pd.read_csv(report_files(page)["strategies_csv"]).set_index("strategy")
    assert table.loc["q8", "failed"] == table.loc["q8", "device_rounds"] > 0
    assert math.isnan(table.loc["q8", "accuracy_mean"]) and math.isnan(table.loc["q8", "nmse_db"])
    assert table.loc["fp32", "accuracy_mean"] > 0
    # No SNR anywhere: the figures against SNR are left out, the others are drawn.
    keys = _figure_keys(page.read_text())
    assert "accuracy-snr" not in keys and "recon-snr" not in keys and "accuracy-spread" in keys

    # Beside a run that has SNR, they are drawn again, for that run only.
    page = write_report([tiny_run, dest], tmp_path / "both.html")
    html = page.read_text()
    assert _figure_keys(html) == BUILTIN
    assert "edited / q8" in html and "run / skew-dof8" in html  # sweep-style labels
    snr = html[html.index('id="fig-accuracy-snr"'):html.index('id="fig-accuracy-bytes"')]
    assert "run / fp32" in snr and "edited / fp32" not in snr


def test_a_run_killed_mid_way(tiny_run, tmp_path):
    # Killed while writing round 2: progress.json says round 1, round 2's rows are partly written.
    partial = tmp_path / "partial"
    shutil.copytree(tiny_run, partial)
    (partial / "summary.json").unlink()
    (partial / "progress.json").write_text(json.dumps({"rounds_done": 1}))
    with open(partial / "transfers.csv", "a") as f:
        f.write("2,fp32,3,down,server->device,down,raw,awgn,12.5,99")  # cut mid-line
    page = write_report([partial], tmp_path / "partial.html")
    table = pd.read_csv(report_files(page)["strategies_csv"]).set_index("strategy")
    m = _csv(tiny_run / "measurements.csv")
    t = _csv(tiny_run / "transfers.csv")
    for label in LABELS:
        assert table.loc[label, "device_rounds"] == ((m["label"] == label) & (m["round"] == 1)).sum()
        assert table.loc[label, "fleet_bytes"] == t.loc[(t["label"] == label) & (t["round"] == 1), "bytes"].sum()
    assert "incomplete, 1 of 2 rounds done" in page.read_text()

    # Killed before its first round ended: the page is still written, with no numbers.
    empty = tmp_path / "empty"
    shutil.copytree(tiny_run, empty)
    for name in ("transfers.csv", "measurements.csv", "rounds.csv"):
        (empty / name).write_text((empty / name).read_text().splitlines()[0] + "\n")
    (empty / "summary.json").unlink()
    (empty / "progress.json").write_text(json.dumps({"rounds_done": 0}))
    page = write_report([empty], tmp_path / "empty.html")
    assert (pd.read_csv(report_files(page)["strategies_csv"])["device_rounds"] == 0).all()
    assert _figure_keys(page.read_text()) == ["fleet"]


def test_a_scenario_not_installed_here(federated_run, tmp_path):
    """Its own columns are read with the types pandas infers; its fleet-accuracy rule comes from summary.json."""
    alien = tmp_path / "alien"
    shutil.copytree(federated_run, alien)
    config = (alien / "config.yaml").read_text()
    (alien / "config.yaml").write_text(config.replace("name: federated", "name: gossip", 1))
    summary = json.loads((alien / "summary.json").read_text())
    (alien / "summary.json").write_text(json.dumps({**summary, "scenario": "gossip"}))
    run = load_run(alien)
    assert run.scenario == "gossip" and run.over_rounds == "last"
    assert {c.name: c.dtype for c in run.scenario_columns}["train_loss"] == "float"
    page = write_report([alien], tmp_path / "alien.html")
    ours = pd.read_csv(report_files(page)["strategies_csv"])
    theirs = pd.read_csv(report_files(write_report([federated_run], tmp_path / "fed.html"))["strategies_csv"])
    pd.testing.assert_frame_equal(ours.drop(columns="run"), theirs.drop(columns="run"))
    assert "scenario gossip" in page.read_text()


def test_a_scenario_registers_its_own_figure(tiny_run, federated_run, tmp_path):
    drawn = []

    @figure("test-train-loss", "Training loss per device", "The **local** training loss.", needs=("train_loss",))
    def train_loss(view, fig):
        ax = fig.subplots()
        for s in view.series:
            drawn.append(s.label)
            ax.plot(s.measurements["device_id"], s.measurements["train_loss"], "o", color=s.color)

    try:
        html = write_report([tiny_run, federated_run], tmp_path / "both.html").read_text()
        assert _figure_keys(html) == BUILTIN + ["test-train-loss"]  # built-in figures first
        assert drawn == [f"fed / {label}" for label in LABELS]  # the runs that have the column only
        assert "The <b>local</b> training loss." in html
        assert "test-train-loss" not in _figure_keys(write_report([tiny_run], tmp_path / "b.html").read_text())
        with pytest.raises(ValueError, match="registered twice"):
            figure("test-train-loss", "again", "")(lambda view, fig: None)
        with pytest.raises(ValueError, match="registered twice"):
            figure("traffic", "mine", "")(lambda view, fig: None)
    finally:
        FIGURES.pop("test-train-loss")
    keys = [f.key for f in registered()]  # scenario modules imported elsewhere in the session add theirs after
    assert keys[:len(BUILTIN)] == BUILTIN and "test-train-loss" not in keys


def test_registering_a_figure_loads_neither_pandas_nor_matplotlib():
    code = ("import sys, testbed.report.figures; "
            "print(sorted(m for m in ('pandas', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_report_command(tiny_run, tmp_path, capsys):
    out = tmp_path / "cli" / "r.html"
    assert cli_main(["report", str(tiny_run), "--out", str(out)]) == 0
    for path in report_files(out).values():
        assert path.exists(), path
    assert cli_main(["report", str(tmp_path / "missing")]) == 2
    assert "missing: not a folder" in capsys.readouterr().err
    (tmp_path / "nothing").mkdir()
    assert cli_main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    (broken / "summary.json").write_text("{")
    assert cli_main(["report", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "summary.json: not valid JSON" in err and len(err.strip().splitlines()) == 1
    assert cli_main(["report", str(tiny_run), str(tiny_run)]) == 2  # two runs need --out


def test_load_run_reads_the_declared_tables(tiny_run):
    run = load_run(tiny_run)
    assert run.strategies == LABELS and run.scenario == "faulty-broadcast" and run.over_rounds == "mean"
    assert run.rounds_done == run.rounds == 2
    assert run.transfer_names == ["down"]
    assert run.measurements["device_id"].dtype == "Int64" and run.transfers["delivered"].dtype == bool
    assert len(run.devices) == 8 and "snr_db" in run.devices
    assert {"bytes_down", "label", "strategy"} <= set(run.wide.columns)


def test_docs_hold_the_column_definitions():
    """docs/REPORT.md shows every report table's column meanings as the code defines them."""
    docs = (ROOT / "docs" / "REPORT.md").read_text()
    for columns in (STRATEGY_COLUMNS, TRANSFER_COLUMNS, MEASUREMENT_COLUMNS, ROUND_COLUMNS):
        assert definitions_markdown(columns) in docs


def test_pareto_front_and_db_mean():
    points = [(100, 0.9), (50, 0.8), (200, 0.85), (50, 0.7), (300, float("nan")), (400, 0.95)]
    assert pareto_front(points) == [1, 0, 5]  # sorted by bytes: the cheapest best, then each improvement
    assert power_mean_db(pd.Series([-math.inf, -math.inf])) == -math.inf
    assert power_mean_db(pd.Series([-10.0, -math.inf])) == pytest.approx(10 * math.log10(0.05))
    assert math.isnan(power_mean_db(pd.Series([np.nan])))
