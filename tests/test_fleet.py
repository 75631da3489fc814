from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed.config import ComputeConfig, ConfigError, FleetConfig, LinkConfig
from testbed.fleet import CSV_COLUMNS, REQUIRED_COLUMNS, Device, Fleet, FleetError
from testbed.links import AWGNLink, BSCLink, LinkParams


def fleet_config(devices: int = 12, **link) -> FleetConfig:
    base = dict(
        model={"choice": ["awgn", "bsc", "erasure"], "weights": [2, 1, 1]},
        snr_db={"uniform": [0.0, 20.0]},
        ber={"choice": [1e-4, 1e-3]},
        modulation=["bpsk", "qpsk", "16qam"],
        bandwidth_mbps={"lognormal": [1.0, 0.5]},
        latency_ms={"normal": [30.0, 5.0]},
        packet_bytes={"uniform": [200, 1500]},
        loss=0.05,
        max_attempts=6,
    )
    base.update(link)
    return FleetConfig(
        devices=devices,
        link=LinkConfig(**base),
        compute=ComputeConfig(speed_factor=[1.0, 0.5], availability={"uniform": [0.5, 1.0]}),
    )


def test_from_config_draws_cycles_and_fixes():
    fleet = Fleet.from_config(fleet_config(), seed=3)
    assert len(fleet) == 12 and [d.device_id for d in fleet] == list(range(12))
    for i, d in enumerate(fleet):
        assert d.partition == i
        assert d.link.model in ("awgn", "bsc", "erasure") and d.link.ber in (1e-4, 1e-3)
        assert 0 <= d.link.snr_db <= 20 and d.link.bandwidth_mbps > 0
        assert d.link.modulation == ["bpsk", "qpsk", "16qam"][i % 3]
        assert isinstance(d.link.packet_bytes, int) and 200 <= d.link.packet_bytes <= 1500
        assert d.link.loss == 0.05 and d.link.max_attempts == 6
        assert d.speed_factor == [1.0, 0.5][i % 2] and 0.5 <= d.availability <= 1
    assert len({d.link.snr_db for d in fleet}) == 12  # drawn per device
    assert len({d.link.model for d in fleet}) > 1


def test_adding_devices_keeps_earlier_draws_and_seed_matters():
    small = Fleet.from_config(fleet_config(devices=5), seed=3)
    large = Fleet.from_config(fleet_config(devices=40), seed=3)
    assert large.devices[:5] == small.devices
    other = Fleet.from_config(fleet_config(devices=5), seed=4)
    assert [d.link.snr_db for d in other] != [d.link.snr_db for d in small]
    assert Fleet.from_config(fleet_config(devices=5), seed=3) == small


def test_choice_weights_are_respected():
    cfg = FleetConfig(devices=2000, link=LinkConfig(model={"choice": ["awgn", "bsc"], "weights": [0.9, 0.1]}))
    models = [d.link.model for d in Fleet.from_config(cfg, seed=0)]
    share = models.count("bsc") / len(models)
    assert 0.07 < share < 0.13


def test_config_fleet_round_trips_through_devices_csv(tmp_path):
    fleet = Fleet.from_config(fleet_config(devices=30), seed=11)
    path = fleet.to_csv(tmp_path / "devices.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert tuple(header) == CSV_COLUMNS
    reloaded = Fleet.from_csv(path)
    assert reloaded == fleet  # floats exactly, every field
    assert reloaded.to_csv(tmp_path / "again.csv").read_bytes() == path.read_bytes()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TRACE = """device_id,snr_db,bandwidth_mbps,latency_ms,compute_factor,availability
10,12.5,4.0,35,1.0,0.9
11,3.25,0.5,120,0.25,0.5
12,20,50,5,2,1
"""


def test_trace_with_required_columns_only_takes_defaults(tmp_path):
    path = write(tmp_path / "trace.csv", TRACE)
    defaults = LinkConfig(model="fading", modulation="qpsk", packet_bytes={"uniform": [100, 200]}, max_attempts=3)
    fleet = Fleet.from_csv(path, defaults=defaults, seed=5)
    assert [d.device_id for d in fleet] == [10, 11, 12] and [d.partition for d in fleet] == [0, 1, 2]
    d = fleet.device(11)
    assert (d.link.snr_db, d.link.bandwidth_mbps, d.link.latency_ms, d.speed_factor, d.availability) == (3.25, 0.5, 120.0, 0.25, 0.5)
    assert d.link.model == "fading" and d.link.modulation == "qpsk" and d.link.max_attempts == 3
    assert all(100 <= x.link.packet_bytes <= 200 for x in fleet)
    assert Fleet.from_csv(path, defaults=defaults, seed=5) == fleet
    plain = Fleet.from_csv(path)  # LinkConfig defaults
    assert plain.device(10).link.model == "awgn" and plain.device(10).link.packet_bytes == 1024


def test_trace_optional_columns_and_empty_cells(tmp_path):
    text = (
        "device_id,snr_db,bandwidth_mbps,latency_ms,compute_factor,availability,link_model,ber,loss,partition\n"
        "0,10,1,1,1,1,bsc,0.001,,7\n"
        "1,10,1,1,1,1,,,0.2,3\n"
    )
    fleet = Fleet.from_csv(write(tmp_path / "t.csv", text), defaults=LinkConfig(model="erasure"))
    a, b = fleet.devices
    assert (a.link.model, a.link.ber, a.link.loss, a.partition) == ("bsc", 0.001, 0.0, 7)
    assert (b.link.model, b.link.loss, b.partition) == ("erasure", 0.2, 3)


def test_from_config_reads_the_trace_relative_to_base_dir(tmp_path):
    write(tmp_path / "trace.csv", TRACE)
    cfg = FleetConfig(devices=99, trace="trace.csv", link=LinkConfig(model="bsc", ber=1e-3))
    fleet = Fleet.from_config(cfg, seed=0, base_dir=tmp_path)
    assert len(fleet) == 3 and fleet.device(12).link.model == "bsc" and fleet.device(12).link.ber == 1e-3
    fleet.to_csv(tmp_path / "devices.csv")
    assert Fleet.from_csv(tmp_path / "devices.csv") == fleet


@pytest.mark.parametrize(
    "text, message",
    [
        (TRACE.replace("3.25", "abc"), "{p} line 3, column snr_db: 'abc' is not a number"),
        (TRACE.replace("0.5,120", "-1,120"), "{p} line 3, column bandwidth_mbps: -1.0 must be > 0"),
        (TRACE.replace("0.25,0.5", "0.25,1.5"), "{p} line 3, column availability: 1.5 must be in [0, 1]"),
        (TRACE.replace("12,20", "1.5,20"), "{p} line 4, column device_id: '1.5' is not a whole number"),
        (TRACE.replace("12,20", "10,20"), "{p} line 4, column device_id: device 10 already on line 2"),
        (TRACE.replace("12,20,50", "12,,50"), "{p} line 4, column snr_db: empty, a value is required"),
        (TRACE.replace("11,3.25,0.5,", "11,3.25,"), "{p} line 3: 5 cells, expected 6"),
        (TRACE.replace("snr_db", "snr"), "{p} line 1: unknown column 'snr' (known: " + ", ".join(CSV_COLUMNS) + ")"),
        (TRACE.replace("snr_db,", "").replace("12.5,", "").replace("3.25,", "").replace("12,20,", "12,"),
         "{p} line 1: missing column(s) snr_db"),
        (TRACE.replace("availability\n", "availability,link_model\n").replace("0.9\n", "0.9,wifi\n").replace(",0.5\n", ",0.5,bsc\n").replace(",1\n", ",1,bsc\n"),
         "{p} line 2, column link_model: 'wifi' must be one of ideal, bsc, awgn, analog, erasure, fading"),
        ("", "{p}: empty, expected a header line with " + ", ".join(REQUIRED_COLUMNS)),
        (TRACE.splitlines()[0] + "\n", "{p}: no devices after the header"),
    ],
)
def test_malformed_trace_names_file_line_and_column(tmp_path, text, message):
    path = write(tmp_path / "trace.csv", text)
    with pytest.raises(FleetError) as info:
        Fleet.from_csv(path)
    assert str(info.value) == message.format(p=path)
    assert "\n" not in str(info.value)


def test_missing_trace_file(tmp_path):
    with pytest.raises(FleetError, match=r"nope\.csv: cannot read trace"):
        Fleet.from_config(FleetConfig(trace="nope.csv"), seed=0, base_dir=tmp_path)


@pytest.mark.parametrize(
    "cfg, pattern",
    [
        (FleetConfig(devices=50, link=LinkConfig(bandwidth_mbps={"normal": [1.0, 5.0]})),
         r"fleet\.link\.bandwidth_mbps: device \d+ drew -\d[\d.e-]*, must be > 0"),
        (FleetConfig(link=LinkConfig(loss=1.0)), r"fleet\.link\.loss: device 0 has 1\.0, must be in \[0, 1\)"),
        (FleetConfig(link=LinkConfig(model="wifi")), r"fleet\.link\.model: device 0 has 'wifi', must be one of ideal, bsc"),
        (FleetConfig(link=LinkConfig(modulation=["bpsk", "64qam"])), r"fleet\.link\.modulation: device 1 has '64qam'"),
        (FleetConfig(compute=ComputeConfig(availability=1.5)), r"fleet\.compute\.availability: device 0 has 1\.5, must be in \[0, 1\]"),
        (FleetConfig(compute=ComputeConfig(speed_factor={"uniform": [-2.0, -1.0]})), r"fleet\.compute\.speed_factor: device 0 drew -1\.\d+, must be > 0"),
        (FleetConfig(link=LinkConfig(snr_db=[])), r"fleet\.link\.snr_db: the list of values is empty"),
        (FleetConfig(link=LinkConfig(model={"choice": ["awgn", "bsc"], "weights": [-1, 2]})), r"fleet\.link\.model: weights must be non-negative"),
    ],
)
def test_config_values_validated_with_the_key(cfg, pattern):
    with pytest.raises(FleetError) as info:
        Fleet.from_config(cfg, seed=0)
    assert re.fullmatch(pattern + ".*", str(info.value)), str(info.value)
    assert isinstance(info.value, ConfigError)


def test_availability_draws():
    cfg = FleetConfig(devices=400, compute=ComputeConfig(availability=[0.0, 1.0, 0.3, 0.8]))
    fleet = Fleet.from_config(cfg, seed=1)
    first = fleet.available(round=2, seed=1)
    assert first == fleet.available(round=2, seed=1)
    ids = {d.device_id for d in first}
    assert not any(i % 4 == 0 for i in ids) and all(i in ids for i in range(1, 400, 4))
    share_03 = sum(1 for i in ids if i % 4 == 2) / 100
    share_08 = sum(1 for i in ids if i % 4 == 3) / 100
    assert 0.15 < share_03 < 0.45 and 0.65 < share_08 < 0.95
    assert {d.device_id for d in fleet.available(round=3, seed=1)} != ids
    assert {d.device_id for d in fleet.available(round=2, seed=2)} != ids
    # a device's draw depends on its id, not on which other devices are in the fleet
    subset = Fleet(fleet.devices[200:])
    assert {d.device_id for d in subset.available(round=2, seed=1)} == {i for i in ids if i >= 200}


def test_links_are_cached_per_device():
    fleet = Fleet([Device(7, LinkParams("bsc", ber=1e-3)), Device(3, LinkParams("awgn"))])
    assert [d.partition for d in fleet] == [0, 1]
    assert isinstance(fleet.link(7), BSCLink) and isinstance(fleet.link(3), AWGNLink)
    assert fleet.link(7) is fleet.link(7)
    with pytest.raises(KeyError, match="no device 5"):
        fleet.link(5)


def test_device_ids_unique():
    with pytest.raises(FleetError, match=r"repeated: \[1\]"):
        Fleet([Device(1, LinkParams()), Device(1, LinkParams())])
