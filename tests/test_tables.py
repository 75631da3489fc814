"""The declared tables: rows written are read back with their declared types, whatever was cut or added."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.tables import MEASUREMENTS, TRANSFERS, Column, Table


def test_a_row_reads_back_with_its_declared_types(tmp_path):
    row = TRANSFERS.empty_row(round=3, label="q8", device_id=5, transfer="down", hop="server->device", direction="down",
                              bytes=1234, snr_db=-math.inf, delivered=True, failure="delivery: gave up, then more")
    TRANSFERS.append(tmp_path, [row])
    frame = TRANSFERS.read(tmp_path)
    got = frame.iloc[0]
    assert got["bytes"] == 1234 and got["round"] == 3 and bool(got["delivered"]) is True
    assert got["snr_db"] == -math.inf and math.isnan(got["airtime_s"]) and got["bit_errors"] is not None
    assert str(got["failure"]) == "delivery: gave up, then more"
    assert frame["resends"].isna().all()  # an int never measured is missing, not 0


def test_a_cut_last_line_is_not_read(tmp_path):
    rows = [MEASUREMENTS.empty_row(round=r, label="a", device_id=0) for r in (1, 2)]
    MEASUREMENTS.append(tmp_path, rows)
    path = MEASUREMENTS.file(tmp_path)
    path.write_bytes(path.read_bytes()[:-3])
    assert MEASUREMENTS.read(tmp_path)["round"].tolist() == [1]


def test_columns_of_a_scenario_not_installed_read_as_numbers_or_text(tmp_path):
    mine = MEASUREMENTS.with_columns([Column("count", "int", "", "x"), Column("note", "str", "", "y")])
    mine.append(tmp_path, [mine.empty_row(round=1, label="a", device_id=0, count=4, note="fine"),
                           mine.empty_row(round=1, label="a", device_id=1)])
    frame = MEASUREMENTS.read(tmp_path)  # the reader does not know these columns
    assert frame["count"].tolist()[0] == 4 and math.isnan(frame["count"].tolist()[1])
    assert frame["note"].tolist()[0] == "fine"


def test_an_unknown_column_in_a_row_is_refused():
    with pytest.raises(KeyError, match="no column"):
        TRANSFERS.empty_row(round=1, bytez=3)


def test_a_table_must_start_with_the_round():
    with pytest.raises(ValueError, match="round"):
        Table("x", "rows", (Column("label", "str", "", "a"),))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.text(min_size=0, max_size=12), st.floats(allow_nan=True),
                          st.booleans()), min_size=1, max_size=20))
def test_any_rows_round_trip(tmp_path_factory, values):
    folder = tmp_path_factory.mktemp("t")
    rows = [TRANSFERS.empty_row(round=r, label=label, airtime_s=x, delivered=ok, failure=label)
            for r, label, x, ok in values]
    TRANSFERS.append(folder, rows)
    frame = TRANSFERS.read(folder)
    assert frame["round"].tolist() == [r for r, *_ in values]
    one_line = [label.replace("\r", " ").replace("\n", " ") for _, label, *_ in values]
    assert [str(v) for v in frame["label"]] == one_line
    for got, (_, _, x, ok) in zip(frame.itertuples(), values):
        assert (math.isnan(got.airtime_s) and math.isnan(x)) or got.airtime_s == x
        assert bool(got.delivered) == ok
