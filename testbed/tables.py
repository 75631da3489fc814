"""The run folder's tables, declared once: name, dtype, unit and meaning of every column.

The writer (rows appended per round), the reader (pandas with the declared
dtypes), the resume truncation, the report and the docs' column tables are all
derived from these declarations; nothing else spells a column list.

- ``transfers.csv``: one row per (round, label, device, transfer): the link figures of
  everything that crossed a link.
- ``measurements.csv``: one row per (round, label, device): what the scenario measured
  on the device (accuracy, reconstruction error, training loss...), and whether the
  device failed that round.
- ``rounds.csv``: one row per (round, label): fleet statistics of the round.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from testbed.atomic import atomic_write_bytes

DTYPES = ("int", "float", "bool", "str")


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # int | float | bool | str
    unit: str  # "" when the value has none
    meaning: str  # one line, for the docs
    # Name of the column in the wide per-device view, with {t} for the transfer name
    # (transfer columns only; None: not in the wide view).
    wide: str | None = None

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"column {self.name}: dtype must be one of {DTYPES}")


@dataclass(frozen=True)
class Table:
    name: str  # the file is NAME.csv
    row: str  # what one row is
    columns: tuple[Column, ...]

    def __post_init__(self):
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name}: repeated column names")
        if names[0] != "round":
            raise ValueError(f"table {self.name}: the first column must be 'round' (resume truncates on it)")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name} has no column {name!r}")

    def with_columns(self, extra: Iterable[Column]) -> "Table":
        """This table with more columns (a scenario's own measurements) appended."""
        extra = [c for c in extra if c.name not in self.names]
        return Table(self.name, self.row, self.columns + tuple(extra))

    def file(self, run_dir: str | Path) -> Path:
        return Path(run_dir) / f"{self.name}.csv"

    # ---- rows -----------------------------------------------------------------------
    def empty_row(self, **values) -> dict:
        """A row with every column: NaN for numbers not measured, "" for strings, False for flags."""
        blank = {"int": None, "float": math.nan, "bool": False, "str": ""}
        row = {c.name: blank[c.dtype] for c in self.columns}
        unknown = set(values) - set(row)
        if unknown:
            raise KeyError(f"table {self.name} has no column(s) {', '.join(sorted(unknown))}")
        row.update(values)
        return row

    def _cell(self, column: Column, value) -> str:
        if value is None:
            return ""
        if column.dtype == "bool":
            return "true" if value else "false"
        if column.dtype == "float":
            value = float(value)
            return "nan" if math.isnan(value) else repr(value)
        if column.dtype == "int":
            if isinstance(value, float) and math.isnan(value):
                return ""
            return str(int(value))
        # Text cells are one line (a reason, a label): a line break would split the row.
        return str(value).replace("\r", " ").replace("\n", " ")

    def csv_text(self, rows: Iterable[dict], header: bool) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        if header:
            writer.writerow(self.names)
        for row in rows:
            writer.writerow([self._cell(c, row.get(c.name)) for c in self.columns])
        return out.getvalue()

    def append(self, run_dir: str | Path, rows: list[dict]) -> None:
        """Append rows (header first in a new file) and fsync: a finished round survives a crash."""
        path = self.file(run_dir)
        new = not path.exists() or path.stat().st_size == 0
        text = self.csv_text(rows, header=new)
        with open(path, "a", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, run_dir: str | Path, last_round: int) -> None:
        """Keep the header and the complete rows of rounds <= ``last_round``; drop anything after,
        including a partial last line of a round that was being written when the run was killed."""
        path = self.file(run_dir)
        if not path.exists():
            return
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1  # a line without its newline was cut mid-write
        lines = data[:end].decode("utf-8").splitlines(keepends=True)
        if not lines:
            path.write_bytes(b"")
            return
        keep = [lines[0]]
        for line in lines[1:]:
            first = line.split(",", 1)[0]
            if first.isdigit() and int(first) <= last_round:
                keep.append(line)
        text = "".join(keep).encode("utf-8")
        if text != data:
            atomic_write_bytes(path, text)

    def read(self, run_dir: str | Path):
        """The table as a pandas DataFrame with the declared dtypes (nullable ints, NaN floats).

        A last line without its newline (cut by a kill mid-write) is not read. Columns of the
        file not declared here (a scenario not installed) are numbers where every value parses
        as one (empty or "nan": missing), else text; declared columns the file lacks (written by
        an older version) are added empty.
        """
        import pandas as pd

        path = self.file(run_dir)
        data = path.read_bytes() if path.exists() else b""
        data = data[: data.rfind(b"\n") + 1]
        strings = {c.name for c in self.columns if c.dtype == "str"}
        if not data:
            frame = pd.DataFrame({c: [] for c in self.names})
        else:
            frame = pd.read_csv(io.BytesIO(data), keep_default_na=False, dtype=str)
        for name in frame.columns:
            if name not in self.names:
                try:
                    frame[name] = pd.to_numeric(frame[name].replace({"": None, "nan": None}))
                except (ValueError, TypeError):
                    pass  # text
        for c in self.columns:
            if c.name not in frame:
                frame[c.name] = "" if c.dtype == "str" else None
            if c.dtype == "str":
                frame[c.name] = frame[c.name].astype(str)
                continue
            values = frame[c.name].replace({"": None, "nan": None}) if c.name not in strings else frame[c.name]
            if c.dtype == "int":
                frame[c.name] = pd.to_numeric(values).astype("Int64")
            elif c.dtype == "float":
                frame[c.name] = pd.to_numeric(values, errors="coerce").astype(float)
            else:
                frame[c.name] = values.astype(str).str.lower().eq("true")
        return frame

    def markdown(self) -> str:
        """The docs' column table."""
        wide = any(c.wide for c in self.columns)
        head = "| column | type | unit | meaning |" + (" in metrics.csv (`{t}`: the transfer) |" if wide else "")
        lines = [f"`{self.name}.csv`: {self.row}.", "", head, "|---|---|---|---|" + ("---|" if wide else "")]
        for c in self.columns:
            cell = (f" `{c.wide}` |" if c.wide else " |") if wide else ""
            lines.append(f"| `{c.name}` | {c.dtype} | {c.unit} | {c.meaning} |{cell}")
        return "\n".join(lines) + "\n"


# ---- the declared tables ------------------------------------------------------------------

_ROUND = Column("round", "int", "", "round number, from 1")
_LABEL = Column("label", "str", "", "the strategy entry's label in the config")
_DEVICE = Column("device_id", "int", "", "device id (the fleet's devices.csv)")

TRANSFERS = Table(
    "transfers",
    "one row per (round, label, device, transfer): everything that crossed a link",
    (
        _ROUND,
        _LABEL,
        _DEVICE,
        Column("transfer", "str", "", "the scenario's name for the transfer (`down`, `up`...); keys its link noise"),
        Column("hop", "str", "", "which link carried it: server->device, device->server, fog->device, device->fog"),
        Column("direction", "str", "", "down (towards the device) or up (from the device)"),
        Column("strategy", "str", "", "registered name of the strategy that encoded the payload"),
        Column("link_model", "str", "", "the link model of the device on this hop"),
        Column("snr_db", "float", "dB", "effective SNR of this transmission (NaN where the model has none)", "snr_db_{t}"),
        Column("bytes", "int", "B", "bytes on the air: payload + CRC trailers + repetition copies + resends", "bytes_{t}"),
        Column("payload_bytes", "int", "B", "the payload's exact size, framing and side information included", "bytes_{t}_payload"),
        Column("protected_bytes", "int", "B", "the protected part of the payload (framing, side information, entropy-coded data)", "bytes_{t}_protected"),
        Column("overhead_bytes", "int", "B", "CRC-32 trailers of the protected packets' first sends", "bytes_{t}_overhead"),
        Column("coding_bytes", "int", "B", "the extra repetition copies of the protected packets' first sends", "bytes_{t}_coding"),
        Column("resent_bytes", "int", "B", "every byte of every resent protected packet", "bytes_{t}_resent"),
        Column("repetition", "int", "", "copies of each protected packet per send", "repetition_{t}"),
        Column("mcs", "int", "", "the MCS a coded link (nr) sent at, the one link adaptation chose; -1 for the uncoded links", "mcs_{t}"),
        Column("bit_errors", "int", "", "bits that differ in the exposed data as delivered", "bit_errors_{t}"),
        Column("packets_lost", "int", "", "exposed packets erased", "packets_lost_{t}"),
        Column("resends", "int", "", "protected packets resent (selective-repeat ARQ)", "resends_{t}"),
        Column("airtime_s", "float", "s", "time on the air including ARQ round trips", "airtime_{t}_s"),
        Column("delivered", "bool", "", "the protected part arrived intact (exposed data may still carry errors)", "delivered_{t}"),
        Column("failure", "str", "", "why the transfer failed (delivery or decoding); empty when it did not", "failure_{t}"),
    ),
)

MEASUREMENTS = Table(
    "measurements",
    "one row per (round, label, device): what the scenario measured, and whether the device failed",
    (
        _ROUND,
        _LABEL,
        _DEVICE,
        Column("strategy", "str", "", "registered name of the label's strategy"),
        Column("bits", "int", "", "the strategy's bit width (empty: unquantised)"),
        Column("link_model", "str", "", "the device's link model"),
        Column("failure", "str", "", "why the device failed this round (first failed transfer, decoding, an error); empty: it did not. A failed device is any row with a failure"),
        Column("unavailable", "bool", "", "the device did not take part this round (its availability draw or schedule): nothing else is measured, and it is not a failure"),
        Column("compute_s", "float", "s", "on-device time of the round's work from the cost model (FLOPs of decoding, evaluation, training, encoding / the device's FLOP/s); empty: no work counted (a device that failed before any)"),
        Column("latency_s", "float", "s", "the device's round latency: airtime of its transfers + compute_s"),
        Column("late", "bool", "", "latency_s exceeds round.deadline_s: kept in the metrics, not aggregated (federated), not on time"),
    ),
)

# What scenarios that deliver a model measure on it.
MODEL_QUALITY = (
    Column("decode_ok", "bool", "", "the model was delivered and decoded"),
    Column("accuracy", "float", "", "accuracy of the received model on the device's local test split (counts towards fleet accuracy when present)"),
    Column("loss", "float", "", "mean cross-entropy on the same split"),
    Column("n_test", "int", "", "images in the device's local test split"),
    Column("recon_nmse_db", "float", "dB", "NMSE of the received model against the server's float model (-inf: exact)"),
    Column("recon_nmse_compression_db", "float", "dB", "the part the compression causes: clean decode vs float model"),
    Column("recon_nmse_channel_db", "float", "dB", "the part the channel adds: received vs clean decode"),
)
# Asked for by the symmetry study (scenario option `measurements: [nmse_conv]`).
NMSE_CONV = Column("recon_nmse_conv_db", "float", "dB", "NMSE of the conv kernels alone (k > 1), where the symmetry codecs act")
TRAIN_LOSS = Column("train_loss", "float", "", "mean loss of the device's local training (federated)")

ROUNDS = Table(
    "rounds",
    "one row per (round, label): the fleet's figures for the round",
    (
        _ROUND,
        _LABEL,
        Column("devices", "int", "", "devices that took part (the unavailable left out)"),
        Column("failed", "int", "", "devices with a failure (the measurements table's definition)"),
        Column("unavailable", "int", "", "devices that did not take part (availability, schedule)"),
        Column("late", "int", "", "devices that took part and missed round.deadline_s"),
        Column("on_time", "int", "", "devices that took part, did not fail and were not late"),
        Column("latency_s_max", "float", "s", "the slowest device's latency: the round's duration on the air and on the devices"),
        Column("bytes", "int", "B", "bytes on the air over every transfer of every device"),
        Column("bytes_down", "int", "B", "bytes on the air towards the devices"),
        Column("bytes_up", "int", "B", "bytes on the air from the devices"),
        Column("airtime_s", "float", "s", "airtime summed over transfers and devices"),
        Column("accuracy_mean", "float", "", "mean accuracy over the devices that have one"),
        Column("accuracy_p10", "float", "", "10th percentile of the same"),
        Column("accuracy_min", "float", "", "minimum of the same"),
        Column("recon_nmse_db_mean", "float", "dB", "reconstruction NMSE averaged on the linear scale"),
    ),
)
