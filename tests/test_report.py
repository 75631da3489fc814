"""The fleet report of a real small run: its numbers against metrics.csv, and the page in a real browser."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from testbed.cli import main as cli_main
from testbed.config import load_config
from testbed.report import load_run, report_files, strategy_table, write_report
from testbed.report.plots import pareto_front
from testbed.report.tables import power_mean_db
from browser import distinct_colours, open_page, png_pixels

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["fp32", "q8", "q4"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real run of the tiny config (Flower on Ray): 4 devices, 2 rounds, three strategies."""
    from testbed.orchestrator import run_experiment

    config = load_config(
        ROOT / "configs" / "tiny.yaml",
        [
            "fleet.devices=4",
            "rounds=2",
            "fleet.link.snr_db=[-2, 4, 10, 20]",  # one device per SNR, the lowest hard enough to lose packets
            "strategies=[{label: fp32, strategy: raw}, {label: q8, strategy: quantise, bits: 8},"
            " {label: q4, strategy: quantise, bits: 4}]",
        ],
    )
    out = tmp_path_factory.mktemp("run") / "tiny"
    run_experiment(config, out, progress=False)
    return out


def _expected(metrics: pd.DataFrame, label: str) -> dict:
    """The report's definitions, recomputed here from metrics.csv alone."""
    rows = metrics[metrics["strategy"] == label]
    failed = (~rows["delivered"]) | (~rows["decode_ok"]) | (rows["failure"].astype("string").fillna("") != "")
    ok = rows[~failed]
    per_device = ok.dropna(subset=["accuracy"]).groupby("device_id")["accuracy"].mean()
    up = rows["bytes_up"].fillna(0) if "bytes_up" in rows else 0

    def lin_db(values):
        values = values.dropna().to_numpy(dtype=float)
        if not values.size:
            return math.nan
        mean = np.mean(10 ** (values / 10))
        return 10 * math.log10(mean) if mean > 0 else -math.inf

    return {
        "bytes_per_device_round": float((rows["bytes_down"] + up).mean()),
        "fleet_bytes": float((rows["bytes_down"] + up).sum()),
        "resends": int(rows["resends_down"].sum()),
        "resent_bytes": int(rows["bytes_down_resent"].sum()),
        "coding_bytes": int(rows["bytes_down_coding"].sum()),
        "airtime_s": float(rows["airtime_down_s"].sum() + rows["airtime_up_s"].fillna(0).sum()),
        "accuracy_mean": float(per_device.mean()),
        "accuracy_p10": float(np.percentile(per_device.to_numpy(), 10)),
        "accuracy_min": float(per_device.min()),
        "nmse_compression_db": lin_db(ok["recon_nmse_compression_db"]),
        "nmse_channel_db": lin_db(ok["recon_nmse_channel_db"]),
        "failed": int(failed.sum()),
        "device_rounds": len(rows),
    }


def _same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return a == pytest.approx(b, rel=1e-9, abs=1e-9)


def test_report_numbers_match_metrics(run_dir, tmp_path):
    # The orchestrator wrote its own report at the end of the run.
    assert (run_dir / "report.html").stat().st_size > 10_000
    page = write_report([run_dir], tmp_path / "report.html")
    files = report_files(page)
    table = pd.read_csv(files["strategies_csv"])
    metrics = pd.read_csv(run_dir / "metrics.csv")
    payloads = {p["label"]: p for p in json.loads((run_dir / "payloads.json").read_text())}
    assert table["strategy"].tolist() == LABELS
    for label in LABELS:
        row = table[table["strategy"] == label].iloc[0]
        for key, value in _expected(metrics, label).items():
            assert _same(float(row[key]), float(value)), (label, key, row[key], value)
        assert row["payload_bytes"] == payloads[label]["total_bytes"]
        assert row["model_ratio"] == pytest.approx(payloads[label]["model_ratio"])
        assert row["conv_ratio"] == pytest.approx(payloads[label]["conv_ratio"])
        assert row["protected_share"] == pytest.approx(payloads[label]["protected_bytes"] / payloads[label]["total_bytes"])
    # Cheaper payloads, fewer bytes: the table is not just echoing one number.
    by = table.set_index("strategy")["bytes_per_device_round"]
    assert by["fp32"] > by["q8"] > by["q4"]
    # fp32 is sent exactly: no compression error at all.
    assert table.set_index("strategy").loc["fp32", "nmse_compression_db"] == -math.inf

    # The Markdown table has every strategy, with the same accuracies to its 4 decimals.
    md = files["strategies_md"].read_text().splitlines()
    header = [c.strip() for c in md[0].strip("|").split("|")]
    cells = {r[1]: r for r in ([c.strip() for c in line.strip("|").split("|")] for line in md[2:])}
    assert sorted(cells) == sorted(LABELS)
    for label in LABELS:
        expected = _expected(metrics, label)["accuracy_mean"]
        assert float(cells[label][header.index("acc mean")]) == pytest.approx(expected, abs=5e-5)

    # Per-round table: the cumulative fleet bytes end at the strategy's total.
    rounds = pd.read_csv(files["rounds_csv"])
    for label in LABELS:
        last = rounds[rounds["strategy"] == label].sort_values("round").iloc[-1]
        assert last["cumulative_fleet_bytes"] == pytest.approx(table.set_index("strategy").loc[label, "fleet_bytes"])

    html = page.read_text()
    assert html.count("<svg") == 6
    for label in LABELS:
        assert f">{label}<" in html
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r'(src|href)\s*=\s*"(?!#)', html)
    assert "<script" not in html
    # Six SVGs share one document: their ids are unique and every reference resolves.
    ids = re.findall(r'\bid="([^"]+)"', html)
    refs = re.findall(r"url\(#([^)]+)\)", html) + re.findall(r'href="#([^"]+)"', html)
    assert len(ids) == len(set(ids)) and refs and set(refs) <= set(ids)
    assert "name: tiny" in html  # the config is on the page


def test_report_page_in_headless_browser(run_dir, tmp_path):
    page = write_report([run_dir], tmp_path / "report.html")
    result = open_page(page)
    assert result.console_errors == [], result.console_messages
    assert result.svg_count == 6
    for label in LABELS:
        assert label in result.text
    assert "Accuracy against bytes" in result.text
    pixels = png_pixels(result.screenshot)
    assert pixels.shape[0] > 2000 and pixels.shape[1] >= 1000  # the whole page, plots included
    assert distinct_colours(pixels) > 100
    rgb = (pixels[..., :3] * 255).round()
    assert (rgb.min(axis=-1) < 200).mean() > 0.02  # well away from all white
    # The plots are drawn in the palette: Okabe-Ito blue and orange are on screen.
    for colour in ((0, 114, 178), (230, 159, 0)):
        assert (np.abs(rgb - colour).max(axis=-1) < 12).sum() > 50, colour


def _edited_copy(run_dir: Path, dest: Path) -> Path:
    """The real run with the hard cases put in: failed deliveries, no SNR, exact links."""
    shutil.copytree(run_dir, dest)
    metrics = pd.read_csv(dest / "metrics.csv", dtype={"failure": str})
    metrics["failure"] = metrics["failure"].fillna("")
    q8 = metrics["strategy"] == "q8"
    metrics.loc[q8, ["delivered", "decode_ok"]] = False
    metrics.loc[q8, "failure"] = "retries exhausted"
    metrics.loc[q8, ["accuracy", "loss", "recon_nmse_db", "recon_nmse_channel_db"]] = np.nan
    metrics["snr_db"] = np.nan
    metrics.loc[~q8, "recon_nmse_channel_db"] = -math.inf
    metrics.to_csv(dest / "metrics.csv", index=False)
    return dest


def test_report_copes_with_failures_nan_snr_and_several_runs(run_dir, tmp_path):
    edited = _edited_copy(run_dir, tmp_path / "edited")
    page = write_report([run_dir, edited], tmp_path / "both.html")
    table = pd.read_csv(report_files(page)["strategies_csv"])
    assert len(table) == 2 * len(LABELS)
    assert set(table["run"]) == {"tiny", "edited"}
    q8 = table[(table["run"] == "edited") & (table["strategy"] == "q8")].iloc[0]
    assert q8["failed"] == q8["device_rounds"] > 0
    assert math.isnan(q8["accuracy_mean"])
    fp32 = table[(table["run"] == "edited") & (table["strategy"] == "fp32")].iloc[0]
    assert fp32["nmse_channel_db"] == -math.inf
    html = page.read_text()
    assert "edited / q8" in html and "tiny / q4" in html  # sweep-style labels
    assert html.count("<svg") == 6

    # A run killed before its first round ended: the page is still written, with no numbers.
    empty = tmp_path / "empty"
    shutil.copytree(run_dir, empty)
    header = (empty / "metrics.csv").read_text().splitlines()[0]
    (empty / "metrics.csv").write_text(header + "\n")
    (empty / "summary.json").unlink()
    page = write_report([empty], tmp_path / "empty.html")
    assert page.read_text().count("<svg") == 6
    assert (pd.read_csv(report_files(page)["strategies_csv"])["device_rounds"] == 0).all()


def test_report_command(run_dir, tmp_path, capsys):
    out = tmp_path / "cli" / "r.html"
    assert cli_main(["report", str(run_dir), "--out", str(out)]) == 0
    assert out.exists() and (tmp_path / "cli" / "r_strategies.csv").exists()
    assert cli_main(["report", str(tmp_path / "missing")]) == 2
    assert "missing: not a folder" in capsys.readouterr().err
    assert cli_main(["report", str(run_dir), str(run_dir)]) == 2  # two runs need --out


def test_load_run_reads_the_contract(run_dir):
    run = load_run(run_dir)
    assert run.strategies == LABELS
    assert run.rounds_done == run.rounds == 2
    assert len(run.devices) == 4 and "snr_db" in run.devices
    assert strategy_table([run])["devices"].tolist() == [4, 4, 4]


def test_pareto_front_and_db_mean():
    points = [(100, 0.9), (50, 0.8), (200, 0.85), (50, 0.7), (300, float("nan")), (400, 0.95)]
    assert pareto_front(points) == [1, 0, 5]  # sorted by bytes: the cheapest best, then each improvement
    assert power_mean_db(pd.Series([-math.inf, -math.inf])) == -math.inf
    assert power_mean_db(pd.Series([-10.0, -math.inf])) == pytest.approx(10 * math.log10(0.05))
    assert math.isnan(power_mean_db(pd.Series([np.nan])))
