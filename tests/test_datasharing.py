"""The data-sharing scenario on real Flower/Ray: JPEG up to the fog node, Residual-INRs (and JPEGs) down."""

import numpy as np
import pandas as pd
import pytest

from conftest import run_tiny, tiny_config
from testbed.tables import TRANSFERS

# Small SIRENs and few iterations: the test is about the round, not the fit's quality.
SHARING = ["scenario.name=datasharing", "scenario.fog_nodes=2", "scenario.images_per_round=2",
           "scenario.background_hidden=12", "scenario.background_layers=3", "scenario.object_hidden=8",
           "scenario.object_layers=2", "scenario.iterations=300", "rounds=3"]
# Device 2's uplink fails every round (an SNR far too low to deliver anything).
FAILING_UPLINK = "fleet.link.snr_db=[8, 8, -30, 12, 8, 10, 12, 16]"


@pytest.fixture(scope="module")
def sharing_run(tmp_path_factory):
    return run_tiny(tmp_path_factory.mktemp("share") / "one", *SHARING, FAILING_UPLINK, "engine.devices_per_node=1")


def measurements(run):
    from testbed.scenarios import build_scenario

    return build_scenario(tiny_config(*SHARING)).measurements_table().read(run)


def test_every_hop_is_a_fog_transfer_with_exact_bytes(sharing_run):
    transfers = TRANSFERS.read(sharing_run)
    assert set(transfers["hop"]) == {"device->fog", "fog->device"}
    assert set(transfers["transfer"]) == {"up", "down", "down_jpeg"}
    assert not (transfers["round"].eq(1) & transfers["hop"].eq("fog->device")).any()  # nothing fitted yet
    rows = measurements(sharing_run)
    down = transfers[transfers["transfer"] == "down"].merge(rows, on=["round", "label", "device_id"])
    assert np.allclose(down["bytes"] / down["images_received"], down["inr_bytes_per_image"])
    # an fp32 batch: every SIREN weight and bias as 4 bytes, the box as 4 int32, framing 9 bytes
    per_image = (2 * 12 + 12) + (12 * 12 + 12) + (12 + 1) + (2 * 8 + 8) + (8 + 1)
    ideal = down[(down["label"] == "fp32") & (down["resends"] == 0)]
    assert len(ideal) and (ideal["payload_bytes"] == ideal["images_received"] * 4 * per_image
                           + ideal["images_received"] * 16 + 9).all()


def test_a_fog_node_whose_uplink_from_a_device_fails_still_serves_the_others(sharing_run):
    rows = measurements(sharing_run)
    failed = rows[(rows["device_id"] == 2)]
    assert (failed["failure"] != "").all()  # its own link: later rounds' downlinks fail first
    assert failed[failed["round"] == 1]["failure"].str.startswith("up delivery").all()
    assert (rows[rows["device_id"] != 2]["failure"] == "").all()
    later = rows[rows["round"] > 1]
    # device 2 is on fog node 0 with devices 0, 4, 6: they receive the others' images, 2 each
    fog0 = later[later["device_id"].isin([0, 4, 6])]
    assert (fog0["images_received"] == 6).all()
    assert (later[later["device_id"].isin([1, 3, 5, 7])]["images_received"] == 8).all()


def test_decoded_images_are_measured_against_the_originals(sharing_run):
    rows = measurements(sharing_run)
    later = rows[(rows["round"] > 1) & rows["psnr_inr_db"].notna()]
    assert len(later) and (later["psnr_inr_db"] > 14).all() and (later["psnr_jpeg_db"] > 20).all()
    assert (later["fit_s_per_image"] > 0).all() and (later["decode_s_per_image"] > 0).all()
    q8 = later[later["label"] == "q8"].set_index(["round", "device_id"])["inr_bytes_per_image"]
    fp32 = later[later["label"] == "fp32"].set_index(["round", "device_id"])["inr_bytes_per_image"]
    q8, fp32 = q8.align(fp32, join="inner")
    assert len(q8) and (q8 < fp32 / 2).all()  # 8 of 32 bits, plus per-tensor ranges, the box, framing


def test_results_do_not_depend_on_the_cohorts(sharing_run, tmp_path):
    other = run_tiny(tmp_path / "three", *SHARING, FAILING_UPLINK, "engine.devices_per_node=3", "engine.num_workers=1")
    for name in ("transfers.csv",):
        assert (other / name).read_text() == (sharing_run / name).read_text(), name
    timing = ["fit_s_per_image", "decode_s_per_image"]
    a, b = (pd.read_csv(run / "measurements.csv").drop(columns=timing) for run in (sharing_run, other))
    pd.testing.assert_frame_equal(a, b)
