"""The data-sharing scenario on real Flower/Ray: JPEG up to the fog node, Residual-INRs (and JPEGs) down,
on-device learning on what arrived."""

import numpy as np
import pandas as pd
import pytest

from conftest import kill_after_first_round, run_tiny, tiny_config
from testbed.tables import TRANSFERS

# Small SIRENs and few iterations: the test is about the round, not the fit's quality.
SHARING = ["scenario.name=datasharing", "fleet.fog.nodes=2", "scenario.images_per_round=2",
           "scenario.background_hidden=12", "scenario.background_layers=3", "scenario.object_hidden=8",
           "scenario.object_layers=2", "scenario.iterations=300", "rounds=3",
           "scenario.receivers=[0, 1, 2, 3, 4, 5, 6]",  # device 7 only sends
           "strategies=[{label: fp32, strategy: raw}, {label: q8, strategy: quantise, bits: 8}]"]
# The device<->fog hops have their own links (all AWGN; the fleet's own links are ideal for devices
# 0 and 4); device 2's fails every round (an SNR far too low to deliver anything).
FAILING_UPLINK = "fleet.fog.link={model: awgn, snr_db: [8, 8, -30, 12, 8, 10, 12, 16], modulation: bpsk, packet_bytes: 256}"


@pytest.fixture(scope="module")
def sharing_run(tmp_path_factory):
    return run_tiny(tmp_path_factory.mktemp("share") / "one", *SHARING, FAILING_UPLINK, "engine.devices_per_node=1")


def measurements(run):
    from testbed.scenarios import build_scenario

    return build_scenario(tiny_config(*SHARING)).measurements_table().read(run)


def test_every_hop_is_a_fog_transfer_with_exact_bytes(sharing_run):
    transfers = TRANSFERS.read(sharing_run)
    assert set(transfers["hop"]) == {"device->fog", "fog->device"}
    assert set(transfers["link_model"]) == {"awgn"}  # the fog hops' links, not the devices' (0 and 4: ideal)
    assert set(transfers["transfer"]) == {"up", "down", "down_jpeg", "down_jpeg_matched"}
    assert not (transfers["device_id"].eq(7) & transfers["hop"].eq("fog->device")).any()  # not a receiver
    assert not (transfers["round"].eq(1) & transfers["hop"].eq("fog->device")).any()  # nothing fitted yet
    rows = measurements(sharing_run)
    down = transfers[transfers["transfer"] == "down"].merge(rows, on=["round", "label", "device_id"])
    assert np.allclose(down["bytes"] / down["images_received"], down["inr_bytes_per_image"])
    # an fp32 batch: every SIREN weight and bias as 4 bytes, the box as 4 int32, framing 9 bytes
    per_image = (2 * 12 + 12) + (12 * 12 + 12) + (12 + 1) + (2 * 8 + 8) + (8 + 1)
    ideal = down[(down["label"] == "fp32") & (down["resends"] == 0) & down["delivered"]]
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
    assert (later[later["device_id"].isin([1, 3, 5])]["images_received"] == 8).all()
    assert later[later["device_id"] == 7]["images_received"].isna().all()


def test_decoded_images_are_measured_against_the_originals(sharing_run):
    rows = measurements(sharing_run)
    later = rows[(rows["round"] > 1) & rows["psnr_inr_db"].notna()]
    assert len(later) and (later["psnr_inr_db"] > 14).all() and (later["psnr_jpeg_db"] > 20).all()
    assert (later["fit_s_per_image"] > 0).all() and (later["decode_s_per_image"] > 0).all()
    q8 = later[later["label"] == "q8"].set_index(["round", "device_id"])["inr_bytes_per_image"]
    fp32 = later[later["label"] == "fp32"].set_index(["round", "device_id"])["inr_bytes_per_image"]
    q8, fp32 = q8.align(fp32, join="inner")
    assert len(q8) and (q8 < fp32 / 2).all()  # 8 of 32 bits, plus per-tensor ranges, the box, framing


def test_each_device_s_compute_counts_its_encoding_decoding_and_learning(sharing_run):
    rows = measurements(sharing_run)
    alive = rows[rows["failure"] == ""]
    assert len(alive) and (alive["compute_s"] > 0).all()  # every device encoded its images and learnt
    later = alive[alive["round"] > 1]
    receiver = later[later["device_id"].isin([1, 3, 5])].groupby("round")["compute_s"].min()
    sender_only = later[later["device_id"] == 7].groupby("round")["compute_s"].max()
    assert (receiver > sender_only).all()  # decoding three forms of 8 images, and training on them
    again = alive.groupby(["round", "label", "images_received", "train_images"], dropna=False)["compute_s"].nunique()
    assert (again == 1).all()  # the same work gives the same count on every device: shapes only


TIMING = ["fit_s_per_image", "decode_s_per_image", "train_s", "train_s_jpeg", "train_s_jpeg_matched"]  # wall-clock


def assert_same_results(run, other):
    assert (other / "transfers.csv").read_text() == (run / "transfers.csv").read_text()
    a, b = (pd.read_csv(r / "measurements.csv").drop(columns=TIMING) for r in (run, other))
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_results_do_not_depend_on_the_cohorts(sharing_run, tmp_path):
    assert_same_results(sharing_run, run_tiny(tmp_path / "three", *SHARING, FAILING_UPLINK,
                                              "engine.devices_per_node=3", "engine.num_workers=1"))


@pytest.mark.slow
def test_a_run_killed_after_a_round_resumes_to_the_uninterrupted_results(sharing_run, tmp_path):
    from testbed.config import load_config
    from testbed.runner import run_experiment

    killed = tmp_path / "killed"
    assert 1 <= kill_after_first_round(killed, *SHARING, FAILING_UPLINK, timeout_s=240) < 3
    run_experiment(load_config(killed / "config.yaml"), killed, resume=True, progress=False,
                   config_path=killed / "config.yaml")
    # the fog batch in flight and every device's shared images and models came back (two devices per node here)
    assert_same_results(sharing_run, killed)


def test_the_matched_jpeg_baseline_is_at_most_the_inr_payload(sharing_run):
    transfers = TRANSFERS.read(sharing_run)
    rows = measurements(sharing_run)
    pay = transfers.pivot_table(index=["round", "label", "device_id"], columns="transfer", values="payload_bytes")
    q = rows.set_index(["round", "label", "device_id"])["jpeg_matched_quality"].dropna()
    got = pay.dropna(subset=["down"]).join(q)
    assert len(got) and got["jpeg_matched_quality"].between(1, 100).all()
    above = got["jpeg_matched_quality"] > 1  # at quality 1 a JPEG may still be larger than the INR (then it is)
    assert above.any() and (got[above]["down_jpeg_matched"] <= got[above]["down"]).all()
    assert (got[~above]["down_jpeg_matched"] > got[~above]["down"]).all()
    # The batch is small and the INR large (fp32): a quality above the forwarded JPEGs' is reached.
    assert (q.xs("fp32", level="label") > 75).all()
    assert (q.xs("q8", level="label") <= q.xs("fp32", level="label")).all()


def test_devices_learn_on_what_arrived_with_one_model_per_form(sharing_run):
    rows = measurements(sharing_run)
    ok = rows[rows["failure"] == ""]
    for suffix in ("", "_jpeg", "_jpeg_matched"):
        assert ok[f"accuracy{suffix}"].between(0, 1).all() and ok[f"accuracy{suffix}"].notna().all()
        assert (ok[f"train_s{suffix}"] > 0).all()
    # round 1: own images only (2), the forms alike; later: the others' shared images too
    first = ok[ok["round"] == 1]
    assert (first["train_images"] == 2).all()
    assert (first["accuracy"] == first["accuracy_jpeg"]).all()
    r2 = ok[(ok["round"] == 2) & (ok["label"] == "fp32")].set_index("device_id")["train_images"]
    assert r2[1] == 4 + 6 and r2[7] == 4  # fog node 1: the 3 other senders' 2 images; device 7 receives none
    # the learning is real: accuracy moves between rounds as the models train
    assert ok.groupby(["label", "device_id"])["accuracy"].nunique().max() > 1


@pytest.mark.parametrize("target", [900, 2500, 6000, 10**6])
def test_matched_jpeg_takes_the_highest_quality_within_the_bytes(target):
    from testbed.data import load_data
    from testbed.config import DataConfig
    from testbed.scenarios.datasharing import dataset_image, jpeg_payload, matched_jpeg, to_jpeg

    dataset = load_data(DataConfig(dataset="mnist-sample"), ".")
    images = [dataset_image(dataset, i) for i in range(4)]
    quality, files = matched_jpeg(images, target)
    size = jpeg_payload(files).nbytes
    assert files == [to_jpeg(im, quality) for im in images]
    assert size <= target or quality == 1
    if quality < 100:
        assert jpeg_payload([to_jpeg(im, quality + 1) for im in images]).nbytes > target


def test_fog_nodes_are_the_fleets_assignment_rule_and_hop_links():
    from testbed.config import ConfigError
    from testbed.fleet import Fleet

    def fleet(*overrides):
        config = tiny_config("fleet.devices=7", *overrides)
        return Fleet.from_config(config.fleet, config.seed)

    assert [fleet("fleet.fog.nodes=3").fog_node(d) for d in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert [fleet("fleet.fog.nodes=3", "fleet.fog.assign=blocks").fog_node(d) for d in range(7)] == [0, 0, 0, 1, 1, 2, 2]
    own = fleet()
    assert all(own.fog_link(d) is own.link(d) for d in range(7))  # no fog.link: the device's own radio
    drawn = fleet("fleet.fog.link={model: awgn, snr_db: {uniform: [0, 5]}}")
    snrs = [drawn.fog_link(d).params.snr_db for d in range(7)]
    assert all(0 <= s <= 5 for s in snrs) and len(set(snrs)) == 7
    assert [drawn.link(d).params for d in range(7)] == [own.link(d).params for d in range(7)]  # own draws untouched
    with pytest.raises(ConfigError) as err:
        tiny_config(*SHARING, "scenario.fog_nodes=2")
    assert "fleet.fog.nodes" in str(err.value) and "\n" not in str(err.value)


def test_the_report_of_a_sharing_run_has_its_figure(sharing_run, tmp_path):
    from testbed.report import write_report

    page = write_report([sharing_run], tmp_path / "report.html").read_text()
    assert 'id="fig-datasharing"' in page and "JPEG at the INR" in page
