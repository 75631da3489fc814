from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed.config import ConfigError, FleetConfig
from testbed.fleet import Device, Fleet, FleetError, columns, required_columns
from testbed.links import link_params
from testbed.links.awgn import AWGNLink
from testbed.links.bsc import BSCLink
from testbed.links.schema import link_section, parameters


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
        link=base,
        compute={"speed_factor": [1.0, 0.5], "availability": {"uniform": [0.5, 1.0]}},
    )


def test_from_config_draws_cycles_and_fixes():
    fleet = Fleet.from_config(fleet_config(), seed=3)
    assert len(fleet) == 12 and [d.device_id for d in fleet] == list(range(12))
    for i, d in enumerate(fleet):
        link = d.link
        assert d.partition == i and link.model in ("awgn", "bsc", "erasure")
        assert link.bandwidth_mbps > 0 and link.max_attempts == 6
        assert isinstance(link.packet_bytes, int) and 200 <= link.packet_bytes <= 1500
        # each device has its own model's parameters only
        if link.model == "awgn":
            assert 0 <= link.snr_db <= 20 and link.modulation == ["bpsk", "qpsk", "16qam"][i % 3]
            assert not hasattr(link, "ber") and not hasattr(link, "loss")
        elif link.model == "bsc":
            assert link.ber in (1e-4, 1e-3) and not hasattr(link, "snr_db")
        else:
            assert link.loss == 0.05 and not hasattr(link, "modulation")
        assert d.speed_factor == [1.0, 0.5][i % 2] and 0.5 <= d.availability <= 1
    assert len({d.link.bandwidth_mbps for d in fleet}) == 12  # drawn per device
    assert len({d.link.model for d in fleet}) > 1


def test_adding_devices_keeps_earlier_draws_and_seed_matters():
    small = Fleet.from_config(fleet_config(devices=5), seed=3)
    large = Fleet.from_config(fleet_config(devices=40), seed=3)
    assert large.devices[:5] == small.devices
    other = Fleet.from_config(fleet_config(devices=5), seed=4)
    assert [d.link.bandwidth_mbps for d in other] != [d.link.bandwidth_mbps for d in small]
    assert Fleet.from_config(fleet_config(devices=5), seed=3) == small


def test_choice_weights_are_respected():
    cfg = FleetConfig(devices=2000, link={"model": {"choice": ["awgn", "bsc"], "weights": [0.9, 0.1]}})
    models = [d.link.model for d in Fleet.from_config(cfg, seed=0)]
    share = models.count("bsc") / len(models)
    assert 0.07 < share < 0.13


def test_a_mixed_fleet_gives_each_device_its_own_models_parameters(tmp_path):
    # the tests' fleet: device i has model[i % 4] and snr_db[i]
    cfg = FleetConfig(devices=8, link={"model": ["ideal", "awgn", "awgn", "awgn"], "snr_db": [8, 8, 10, 12, 8, 10, 12, 16]})
    fleet = Fleet.from_config(cfg, seed=0)
    assert [d.link.model for d in fleet] == ["ideal", "awgn", "awgn", "awgn"] * 2
    assert [d.link.snr_db for d in fleet if d.link.model == "awgn"] == [8.0, 10.0, 12.0, 10.0, 12.0, 16.0]
    assert not hasattr(fleet.device(0).link, "snr_db")
    path = fleet.to_csv(tmp_path / "devices.csv")
    ideal_row = dict(zip(path.read_text().splitlines()[0].split(","), path.read_text().splitlines()[1].split(",")))
    assert ideal_row["link_model"] == "ideal" and ideal_row["snr_db"] == "" and ideal_row["bandwidth_mbps"] == "10.0"
    assert Fleet.from_csv(path) == fleet


def test_config_fleet_round_trips_through_devices_csv(tmp_path):
    fleet = Fleet.from_config(fleet_config(devices=30), seed=11)
    path = fleet.to_csv(tmp_path / "devices.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert tuple(header) == tuple(columns(fog_hops=False))  # no device has a fog hop link of its own
    reloaded = Fleet.from_csv(path)
    assert reloaded == fleet  # floats exactly, every field
    assert reloaded.to_csv(tmp_path / "again.csv").read_bytes() == path.read_bytes()


def test_the_trace_columns_come_from_the_link_schema():
    cols = columns()
    link_columns = {c.attr for c in cols.values() if c.link}
    assert link_columns == {"model", *parameters()}  # every parameter of every model, gilbert_elliott's too
    assert {"ber_good", "p_bad_to_good", "loss", "modulation"} <= set(cols)
    assert cols["compute_factor"].attr == "speed_factor" and not cols["compute_factor"].required
    assert required_columns() == ("device_id", "bandwidth_mbps", "latency_ms", "availability")
    assert cols["snr_db"].measured and not cols["snr_db"].required  # needed on the rows whose model has it


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
    defaults = link_section(model="fading", modulation="qpsk", packet_bytes={"uniform": [100, 200]}, max_attempts=3)
    fleet = Fleet.from_csv(path, defaults=defaults, seed=5)
    assert [d.device_id for d in fleet] == [10, 11, 12] and [d.partition for d in fleet] == [0, 1, 2]
    d = fleet.device(11)
    assert (d.link.snr_db, d.link.bandwidth_mbps, d.link.latency_ms, d.speed_factor, d.availability) == (3.25, 0.5, 120.0, 0.25, 0.5)
    assert d.link.model == "fading" and d.link.modulation == "qpsk" and d.link.max_attempts == 3
    assert all(100 <= x.link.packet_bytes <= 200 for x in fleet)
    assert Fleet.from_csv(path, defaults=defaults, seed=5) == fleet
    plain = Fleet.from_csv(path)  # the default section: awgn
    assert plain.device(10).link.model == "awgn" and plain.device(10).link.packet_bytes == 1024


def test_compute_factor_is_optional(tmp_path):
    text = "device_id,snr_db,bandwidth_mbps,latency_ms,availability\n0,5,1,1,1\n"
    assert Fleet.from_csv(write(tmp_path / "t.csv", text)).device(0).speed_factor == 1.0


def test_trace_optional_columns_and_empty_cells(tmp_path):
    text = (
        "device_id,snr_db,bandwidth_mbps,latency_ms,compute_factor,availability,link_model,ber,loss,partition\n"
        "0,10,1,1,1,1,bsc,0.001,,1\n"  # a measured SNR on a bsc link describes the device; bsc does not use it
        "1,,1,1,1,1,,,0.2,0\n"
    )
    fleet = Fleet.from_csv(write(tmp_path / "t.csv", text), defaults=link_section(model="erasure"))
    a, b = fleet.devices
    assert (a.link.model, a.link.ber, a.partition) == ("bsc", 0.001, 1) and not hasattr(a.link, "snr_db")
    assert (b.link.model, b.link.loss, b.partition) == ("erasure", 0.2, 0)


def test_from_config_reads_the_trace_relative_to_base_dir(tmp_path):
    write(tmp_path / "trace.csv", TRACE)
    cfg = FleetConfig(devices=99, trace="trace.csv", link={"model": "bsc", "ber": 1e-3})
    fleet = Fleet.from_config(cfg, seed=0, base_dir=tmp_path)
    assert len(fleet) == 3 and fleet.device(12).link.model == "bsc" and fleet.device(12).link.ber == 1e-3
    fleet.to_csv(tmp_path / "devices.csv")
    assert Fleet.from_csv(tmp_path / "devices.csv") == fleet


def _with_column(name: str, cells: list[str]) -> str:
    lines = TRACE.splitlines()
    return "\n".join([lines[0] + f",{name}"] + [f"{line},{cell}" for line, cell in zip(lines[1:], cells)]) + "\n"


@pytest.mark.parametrize(
    "text, message",
    [
        (TRACE.replace("3.25", "abc"), "{p} line 3, column snr_db: 'abc' is not a number"),
        (TRACE.replace("0.5,120", "-1,120"), "{p} line 3, column bandwidth_mbps: -1.0 must be a number > 0"),
        (TRACE.replace("0.25,0.5", "0.25,1.5"), "{p} line 3, column availability: 1.5 must be a number in [0, 1]"),
        (TRACE.replace("12,20", "1.5,20"), "{p} line 4, column device_id: '1.5' is not a whole number"),
        (TRACE.replace("12,20", "10,20"), "{p} line 4, column device_id: device 10 already on line 2"),
        (TRACE.replace("12,20,50", "12,,50"), "{p} line 4, column snr_db: link model awgn needs a measured value"),
        (TRACE.replace("12,20,50,5", "12,20,,5"), "{p} line 4, column bandwidth_mbps: empty, a value is required"),
        (TRACE.replace("11,3.25,0.5,", "11,3.25,"), "{p} line 3: 5 cells, expected 6"),
        (TRACE.replace("snr_db", "snr"), "{p} line 1: unknown column 'snr' (known: " + ", ".join(columns()) + ")"),
        (TRACE.replace("latency_ms,", "").replace(",35,", ",").replace(",120,", ",").replace(",5,", ","),
         "{p} line 1: missing column(s) latency_ms"),
        (_with_column("link_model", ["wifi", "bsc", "bsc"]),
         "{p} line 2, column link_model: 'wifi' must be one of ideal, bsc, awgn, analog, erasure, fading, gilbert_elliott, nr"),
        (_with_column("ber", ["0.1", "", ""]), "{p} line 2, column ber: link model awgn has no parameter ber (leave it empty)"),
        (_with_column("partition", ["0", "3", "1"]),
         "{p} line 3, column partition: 3 is beyond the fleet's 3 partitions (0..2, one per device)"),
        ("", "{p}: empty, expected a header line with " + ", ".join(required_columns())),
        (TRACE.splitlines()[0] + "\n", "{p}: no devices after the header"),
    ],
)
def test_malformed_trace_names_file_line_and_column(tmp_path, text, message):
    path = write(tmp_path / "trace.csv", text)
    with pytest.raises(FleetError) as info:
        Fleet.from_csv(path)
    assert str(info.value) == message.format(p=path)
    assert "\n" not in str(info.value)


def test_trace_encoding(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes(TRACE.encode() + "13,1,1,1,1,1 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(FleetError) as info:
        Fleet.from_csv(latin)
    assert str(info.value) == f"{latin} line 5: not UTF-8 text (byte 0xe9); save the trace as UTF-8"
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + TRACE.replace("\n", "\r\n").encode())  # as spreadsheets save it
    assert Fleet.from_csv(bom) == Fleet.from_csv(write(tmp_path / "plain.csv", TRACE))


def test_missing_trace_file(tmp_path):
    with pytest.raises(FleetError, match=r"nope\.csv: cannot read trace"):
        Fleet.from_config(FleetConfig(trace="nope.csv"), seed=0, base_dir=tmp_path)


@pytest.mark.parametrize(
    "cfg, pattern",
    [
        (FleetConfig(devices=50, link={"bandwidth_mbps": {"normal": [1.0, 5.0]}}),
         r"fleet\.link\.bandwidth_mbps: device \d+ drew -\d[\d.e-]*, must be a number > 0"),
        (FleetConfig(compute={"speed_factor": {"uniform": [-2.0, -1.0]}}),
         r"fleet\.compute\.speed_factor: device 0 drew -1\.\d+, must be a number > 0"),
        (FleetConfig(devices=30, link={"model": "erasure", "loss": {"uniform": [0.5, 1.5]}}),
         r"fleet\.link\.loss: device \d+ drew 1\.\d+, must be a number in \[0, 1\)"),
    ],
)
def test_draws_outside_the_rule_name_key_and_device(cfg, pattern):
    """A distribution's parameters are checked when the config is loaded; what it draws, when the fleet is drawn."""
    with pytest.raises(FleetError) as info:
        Fleet.from_config(cfg, seed=0)
    assert re.fullmatch(pattern, str(info.value)), str(info.value)
    assert isinstance(info.value, ConfigError)


def test_availability_draws():
    cfg = FleetConfig(devices=400, compute={"availability": [0.0, 1.0, 0.3, 0.8]})
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
    fleet = Fleet([Device(7, link_params("bsc", ber=1e-3)), Device(3, link_params("awgn"))])
    assert [d.partition for d in fleet] == [0, 1]
    assert isinstance(fleet.link(7), BSCLink) and isinstance(fleet.link(3), AWGNLink)
    assert fleet.link(7) is fleet.link(7) and fleet.link(7).params.model == "bsc"
    with pytest.raises(KeyError, match="no device 5"):
        fleet.link(5)


def test_device_ids_unique():
    with pytest.raises(FleetError, match=r"repeated: \[1\]"):
        Fleet([Device(1, link_params("awgn")), Device(1, link_params("awgn"))])


# ---- protected_repetition (config key and trace column) ----------------------------------------


def test_fleet_repetition_from_config_and_trace(tmp_path):
    assert link_section().protected_repetition == "auto"
    fleet = Fleet.from_config(FleetConfig(devices=4, link={"protected_repetition": ["auto", 3]}), seed=0)
    assert [d.link.protected_repetition for d in fleet] == ["auto", 3, "auto", 3]
    path = fleet.to_csv(tmp_path / "devices.csv")
    assert "protected_repetition" in path.read_text().splitlines()[0].split(",")
    assert Fleet.from_csv(path) == fleet
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "device_id,snr_db,bandwidth_mbps,latency_ms,compute_factor,availability,protected_repetition\n"
        "0,0,1,1,1,1,auto\n1,0,1,1,1,1,5\n2,0,1,1,1,1,\n"
    )
    reps = [d.link.protected_repetition for d in Fleet.from_csv(trace, defaults=link_section(protected_repetition=2))]
    assert reps == ["auto", 5, 2]
    assert Fleet.from_csv(trace).device(2).link.protected_repetition == "auto"  # the one default


@pytest.mark.parametrize(
    "cell, message",
    [
        ("abc", "column protected_repetition: 'abc' is not a whole number or 'auto'"),
        ("2.5", "column protected_repetition: '2.5' is not a whole number"),
        ("0", "column protected_repetition: 0 must be 'auto' or a whole number >= 1"),
    ],
)
def test_fleet_repetition_errors(tmp_path, cell, message):
    trace = tmp_path / "trace.csv"
    trace.write_text(f"device_id,snr_db,bandwidth_mbps,latency_ms,compute_factor,availability,protected_repetition\n0,0,1,1,1,1,{cell}\n")
    with pytest.raises(FleetError) as info:
        Fleet.from_csv(trace)
    assert str(info.value) == f"{trace} line 2, {message}"


def test_a_trace_gives_each_device_its_fog_node(tmp_path):
    from testbed.config import FogConfig

    path = write(tmp_path / "trace.csv", _with_column("fog", ["1", "0", ""]))
    fleet = Fleet.from_csv(path).with_fog(FogConfig(nodes=2), seed=0)
    # devices 10 and 11 as the trace says (round-robin would give 0 and 1); 12 (empty cell) by the rule: position 2 -> 0
    assert [fleet.fog_node(i) for i in (10, 11, 12)] == [1, 0, 0]
    again = Fleet.from_csv(fleet.to_csv(tmp_path / "devices.csv"))
    assert [d.fog for d in again] == [1, 0, None]
    with pytest.raises(FleetError, match=r"^fleet.trace: device 10: fog node 1 is beyond fleet.fog.nodes = 1 \(0..0\)$"):
        Fleet.from_csv(path).with_fog(FogConfig(nodes=1), seed=0)


def test_a_trace_gives_each_device_its_fog_hop_link(tmp_path):
    from testbed.config import FogConfig
    from testbed.links.schema import link_section

    text = TRACE.splitlines()
    text = "\n".join([text[0] + ",fog_link_model,fog_ber,fog_snr_db", text[1] + ",bsc,0.001,", text[2] + ",,,",
                      text[3] + ",,,7"]) + "\n"
    path = write(tmp_path / "trace.csv", text)
    fleet = Fleet.from_csv(path).with_fog(FogConfig(nodes=1), seed=0)
    # row 10: a bsc hop with its bit error rate; 12: its hop's SNR, the rest (awgn, 50 Mb/s) its own link's;
    # 11 gives none: its own link
    assert (fleet.fog_link(10).params.model, fleet.fog_link(10).params.ber) == ("bsc", 0.001)
    assert fleet.fog_link(12).params.snr_db == 7.0 and fleet.fog_link(12).params.bandwidth_mbps == 50.0
    assert fleet.fog_link(11) is fleet.link(11)
    assert [fleet.link(i).params.snr_db for i in (10, 11, 12)] == [12.5, 3.25, 20.0]  # the devices' own links untouched
    # a fog.link section fills the rows without hop cells only, keyed by device as when drawn
    drawn = Fleet.from_csv(path, fog_defaults=link_section(model="awgn", snr_db=-4)).with_fog(
        FogConfig(nodes=1, link={"model": "awgn", "snr_db": -4}), seed=0)
    assert [drawn.fog_link(i).params.model for i in (10, 11, 12)] == ["bsc", "awgn", "awgn"]
    assert [drawn.fog_link(i).params.snr_db for i in (11, 12)] == [-4.0, 7.0]
    # devices.csv carries the hop links and reloads them exactly
    again = Fleet.from_csv(drawn.to_csv(tmp_path / "devices.csv"))
    assert again == drawn and [again.fog_link(i).params for i in (10, 11, 12)] == [drawn.fog_link(i).params for i in (10, 11, 12)]
    assert "fog_snr_db" in (tmp_path / "devices.csv").read_text().splitlines()[0]


@pytest.mark.parametrize(
    "header, cells, message",
    [
        ("fog_snr_db", ["x", "", ""], "line 2, column fog_snr_db: 'x' is not a number"),
        ("fog_ber", ["0.1", "", ""], "line 2, column fog_ber: link model awgn has no parameter ber (leave it empty)"),
        ("link_model,ber,fog_link_model", ["bsc,0.01,awgn", "", ""],  # a bsc device has no SNR to lend its hop
         "line 2, column fog_snr_db: link model awgn needs a measured value"),
    ],
)
def test_fog_hop_cells_are_checked_like_the_devices_own(tmp_path, header, cells, message):
    empty = "," * header.count(",")
    path = write(tmp_path / "trace.csv", _with_column(header, [c or empty for c in cells]))
    with pytest.raises(FleetError) as info:
        Fleet.from_csv(path)
    assert str(info.value) == f"{path} {message}"
