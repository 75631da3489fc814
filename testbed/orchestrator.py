"""The fleet orchestrator: one experiment, round by round, into a run folder.

:func:`run_experiment` prepares the experiment in this process (config, fleet,
dataset, strategies and the scenario, all validated before the run folder is
touched), starts Flower's simulation engine on Ray with the apps of
:mod:`testbed.flower_app`, and the ServerApp drives the rounds of
:class:`Experiment`. Each round the scenario plans what every device needs
(encoded once), each node gets one message for its cohort of devices, the
replies' transfer and measurement rows are collected (a node that raised or
was lost becomes failed rows with the reason; the round goes on), the scenario
absorbs the devices' uploads, and the round is committed: rows appended and
flushed, the scenario's and the devices' state saved, then the progress marker.
``resume`` continues a killed run from its last committed round to the same
final metrics. A stop request (``stop_requested``, set by the signal handlers of
:mod:`testbed.runner`) abandons the round in progress before anything of it is
written, and the loop returns. Where the scenario's plan does not depend on the
round before (broadcast), the next round's messages are pushed while the current
round runs (:mod:`testbed.inflight`); rounds are still committed in order.

The round loop pushes the messages and pulls replies itself instead of
``grid.send_and_receive``: that call returns only when every reply is in, and
the progress display and the per-node timeout need each reply as it comes.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from pathlib import Path

import torch

from testbed import metrics
from testbed.atomic import atomic_write
from testbed.progress import console, fleet_rate
from testbed.config import ConfigError, ExperimentConfig, dump_config
from testbed.engine import cohort_size
from testbed.inflight import RoundInFlight, owner
from testbed.tables import ROUNDS, TRANSFERS

log = logging.getLogger("testbed.run")

PROGRESS_FILE = "progress.json"
STATE_DIR = "state"
STATE_FILE = "scenario.pt"  # under STATE_DIR: the scenario's and the devices' state after a round
LOCK_FILE = ".lock"  # held (flock) while a run writes the folder; names the holder
RUN_FILES = ("config.yaml", "devices.csv", "payloads.json", PROGRESS_FILE, "summary.json", "run.log",
             "metrics.csv", "metrics.parquet", "report.html", f"{TRANSFERS.name}.csv", f"{ROUNDS.name}.csv",
             "measurements.csv")


class Experiment:
    """The server side of one experiment: everything the ServerApp needs, and the run folder."""

    def __init__(
        self,
        config: ExperimentConfig,
        out_dir: str | Path,
        resume: bool = False,
        progress: bool = True,
        config_path: str | Path | None = None,
        overwrite: bool = False,
    ):
        self.config = config
        self.out = Path(out_dir)
        self.resume = resume
        self.overwrite = overwrite
        self.show_progress = progress
        self.base_dir = str(Path(config_path).resolve().parent) if config_path else str(Path.cwd())
        self.config_text = dump_config(config)
        self.labels = [e.label for e in config.strategies]
        self.rounds_done = 0
        self.wall_before = 0.0
        self.started = time.perf_counter()
        self.last_commit = 0.0  # perf_counter at the last round's commit
        self._log_handler: logging.Handler | None = None
        self.prepared = False
        self.expected_nodes = 0  # nodes the engine starts (0: whatever connects)
        self.restore: dict | None = None  # the scenario's saved state, on resume
        self.device_states: dict = {}  # (label, device_id) -> state, for scenarios that keep one
        self.accuracy_cache: dict[str, float] = {}  # state digest -> test accuracy (end-of-run figures)
        self.payload_reports: dict[str, dict] = {}
        self.stop_requested = threading.Event()  # set from a signal handler: abandon the round, end the run

    # ---- preparation -------------------------------------------------------------------
    def log(self, message: str) -> None:
        log.info(message)

    def _open_log(self) -> None:
        handler = logging.FileHandler(self.out / "run.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
        self._log_handler = handler

    def _check_folder(self) -> dict:
        """Refuse a folder that cannot take this run, before anything is written; return its progress."""
        config_file = self.out / "config.yaml"
        if self.resume:
            if not config_file.exists():
                raise ConfigError(f"{self.out}: not a run folder (no config.yaml), cannot resume")
            if config_file.read_text() != self.config_text:
                raise ConfigError(f"{config_file}: differs from the config given; resume takes the folder's config")
            return self._read_progress()
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"{self.out}: exists and is not a folder; choose another --out")
        held = [name for name in RUN_FILES if (self.out / name).exists()]
        if held and not self.overwrite:
            raise ConfigError(
                f"{self.out}: holds a run ({held[0]}); continue it with --resume {self.out}, "
                "replace it with --overwrite, or choose another --out"
            )
        return {}

    def prepare(self) -> None:
        from strategies.registry import build
        from testbed.data import load_data
        from testbed.fleet import Fleet
        from testbed.scenarios import build_scenario

        cfg = self.config
        progress = self._check_folder()
        if self.resume:
            self.base_dir = progress.get("base_dir", self.base_dir)  # the config's folder (trace paths)
        # Everything the run needs is built before the folder is touched: a bad fleet, dataset
        # or strategy leaves an existing run as it was.
        self.fleet = Fleet.from_config(cfg.fleet, cfg.seed, base_dir=self.base_dir)
        self.dataset = load_data(cfg.data, self.base_dir)
        self.strategies = {label: build(spec) for label, spec in cfg.strategy_specs().items()}
        self.scenario = build_scenario(cfg)
        self.measurements = self.scenario.measurements_table(self.scenario.options)
        self.tables = (TRANSFERS, self.measurements, ROUNDS)

        self.out.mkdir(parents=True, exist_ok=True)
        self._lock()
        progress = self._check_folder()  # again, now that no other run can write the folder
        if self.resume:
            self.rounds_done = int(progress.get("rounds_done", 0))
            self.wall_before = float(progress.get("wall_s", 0.0))
            for table in self.tables:
                table.truncate_after(self.out, self.rounds_done)
            self._load_state()
        else:
            for name in RUN_FILES:
                (self.out / name).unlink(missing_ok=True)
            (self.out / STATE_DIR / STATE_FILE).unlink(missing_ok=True)
            (self.out / "config.yaml").write_text(self.config_text)
            self._write_progress()
        self._open_log()
        self.log(f"experiment {cfg.name}: scenario {self.scenario.name}, {cfg.rounds} rounds, seed {cfg.seed}"
                 + (f", resuming after round {self.rounds_done}" if self.resume else ""))
        self.fleet.to_csv(self.out / "devices.csv")
        self.log(f"dataset {cfg.data.dataset}: {getattr(self.dataset, 'description', '')}")
        if self.show_progress:
            console().print(f"[bold]{cfg.name}[/]: {self.scenario.name}, {len(self.fleet.devices)} devices, "
                             f"{cfg.rounds} rounds, dataset {cfg.data.dataset} ({self.dataset.description})")
        self.scenario.start(self)
        self.prepared = True

    def _lock(self) -> None:
        """Hold the folder's lock for the whole run: a second run into it is refused, naming the holder."""
        import fcntl
        import os
        import socket

        handle = open(self.out / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(f"{self.out}: another run is writing this folder ({holder}); wait for it or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._lock_handle = handle  # released when the run ends (or the process does)

    def _unlock(self) -> None:
        handle = getattr(self, "_lock_handle", None)
        if handle is not None:
            handle.close()
            self._lock_handle = None

    def _load_state(self) -> None:
        path = self.out / STATE_DIR / STATE_FILE
        if self.rounds_done == 0 or not path.exists():
            if self.rounds_done and (self.scenario.saved_state() is not None or self.scenario.keeps_device_state):
                raise ConfigError(f"{path}: missing, cannot resume after round {self.rounds_done}")
            return
        saved = torch.load(path, weights_only=True)
        if int(saved["round"]) != self.rounds_done:
            raise ConfigError(f"{path}: holds round {saved['round']}, the folder finished {self.rounds_done}")
        self.restore = saved["scenario"]
        self.device_states = {(label, int(d)): s for label, d, s in saved["devices"]}

    def write_payload_reports(self, states: dict, payloads: dict) -> None:
        """payloads.json: what each label's strategy sends, byte by byte (testbed inspect's description)."""
        from testbed.inspect import payload_report
        from testbed.models import build_model

        with torch.random.fork_rng(devices=[]):  # only the shapes matter; leave the global generator alone
            plain = build_model(self.config.model, self.dataset.input_shape, self.dataset.num_classes).state_dict()
        reports = [
            payload_report(label, self.strategies[label], states[label], reference=plain, payload=payloads[label])
            for label in self.labels
        ]
        self.payload_reports = {r["label"]: r for r in reports}
        metrics.write_json(self.out / "payloads.json", reports)

    def _read_progress(self) -> dict:
        path = self.out / PROGRESS_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def _write_progress(self) -> None:
        wall = self.wall_before + (time.perf_counter() - self.started)
        metrics.write_json(self.out / PROGRESS_FILE,
                           {"rounds_done": self.rounds_done, "wall_s": wall, "base_dir": self.base_dir})

    # ---- rounds -------------------------------------------------------------------------
    def drive(self, grid) -> None:
        """The ServerApp's main loop: every round not yet done, committed in order.

        One round is in flight at a time, or two where the scenario plans ahead (its plan does not
        depend on the round before, :mod:`testbed.inflight`): the next round's messages are pushed
        as soon as the current one's are."""
        if not self.prepared:
            self.prepare()
        depth = 2 if self.scenario.plans_ahead else 1
        next_round, in_flight = self.rounds_done + 1, deque()
        with _Progress(self.show_progress, self.config.rounds, self.rounds_done) as bar:
            while not self.stop_requested.is_set():
                try:
                    while next_round <= self.config.rounds and len(in_flight) < depth:
                        in_flight.append(self._launch(grid, next_round))
                        next_round += 1
                    if not in_flight:
                        break
                    self._collect(grid, in_flight, bar)
                    self._finish_round(in_flight[0])
                    in_flight.popleft()
                except RoundAbandoned:
                    dropped = in_flight[0].round if in_flight else next_round
                    self.log(f"round {dropped}: abandoned (stop requested); {self.rounds_done} rounds are on disk")
                    break

    def _check_stop(self) -> None:
        if self.stop_requested.is_set():
            raise RoundAbandoned()

    def _launch(self, grid, round_: int) -> RoundInFlight:
        """Plan ``round_`` and push one message per cohort of the devices taking part."""
        from testbed.device import RoundJob
        from testbed.messages import PlanRecords, job_message

        cfg = self.config
        available = sorted(d.device_id for d in self.fleet.available(round_, cfg.seed))
        taking_part = set(available)
        absent = [d.device_id for d in self.fleet.devices if d.device_id not in taking_part]
        dpn = cohort_size(len(self.fleet.devices), cfg.engine)  # from the fleet, not the round: a fixed node count
        cohorts = [available[i : i + dpn] for i in range(0, len(available), dpn)]
        plan = self.scenario.plan_round(self, round_)
        node_ids = self._wait_for_nodes(grid)
        records = PlanRecords(plan)
        messages = []
        for i, cohort in enumerate(cohorts):
            members = set(cohort)
            job = RoundJob(
                config_text=self.config_text, base_dir=self.base_dir, round=round_, devices=cohort,
                labels=self.labels, plan=plan,
                device_states={k: s for k, s in self.device_states.items() if k[1] in members},
            )
            messages.append(job_message(job, node_ids[i % len(node_ids)], records))
        measurements = self._rows(round_, absent, unavailable=True)  # recorded, not failed
        pending = dict(zip(grid.push_messages(messages), cohorts))
        self.log(f"round {round_}: {len(messages)} messages pushed to {len(node_ids)} nodes")
        return RoundInFlight(round_, len(available), pending, measurements)

    def _collect(self, grid, in_flight: deque, bar) -> None:
        """Take replies until the round in front has all of its own; replies for the round behind
        it are kept for it. A node that raised, or has not replied ``engine.round_timeout_s`` after
        the round came to the front, becomes failed rows with the reason."""
        from testbed.messages import read_reply

        head = in_flight[0]
        bar.start_round(head.round, head.devices)
        for shown in head.early:
            bar.advance(*shown)

        def show(flight, devices: int, transfers: list[dict], measurements: list[dict]) -> None:
            if flight is head:
                bar.advance(devices, transfers, measurements)
            else:  # shown when its round comes to the front
                flight.early.append((devices, transfers, measurements))

        deadline = time.monotonic() + self.config.engine.round_timeout_s
        while head.pending:
            self._check_stop()
            if time.monotonic() > deadline:
                for cohort in head.pending.values():
                    show(head, len(cohort), [], self._lost(head, cohort, f"node lost: no reply within {self.config.engine.round_timeout_s:g} s"))
                head.pending.clear()
                break
            replies = list(grid.pull_messages({m for flight in in_flight for m in flight.pending}))
            for message in replies:
                found = owner(in_flight, message.metadata.reply_to_message_id)
                if found is None:
                    continue
                flight, cohort = found
                if message.has_error():
                    reason = "node error: " + " ".join(str(message.error.reason).split())[:300]  # one line
                    show(flight, len(cohort), [], self._lost(flight, cohort, reason))
                    continue
                reply = read_reply(message.content)
                flight.take(reply)
                show(flight, len(cohort), reply.transfers, reply.measurements)
            if head.pending and not replies:
                time.sleep(0.02)

    def _lost(self, flight: RoundInFlight, cohort: list[int], reason: str) -> list[dict]:
        """Failed rows, added to the round, for a cohort whose results never came back."""
        self.log(f"round {flight.round}: devices {cohort}: {reason}")
        rows = self._failed(flight.round, cohort, reason)
        flight.measurements.extend(rows)
        return rows

    def _finish_round(self, flight: RoundInFlight) -> None:
        """Sort the round's rows, let the scenario absorb its uploads, commit it."""
        from testbed.scenarios import RoundResults

        order = {label: i for i, label in enumerate(self.labels)}
        names = [t.name for t in self.scenario.transfers]

        def rank(r):  # (label as configured, device id): the same whatever the cohorts
            return order.get(r["label"], len(order)), r["device_id"]

        self._check_stop()  # nothing of this round is written yet
        measurements, transfers = flight.measurements, flight.transfers
        measurements.sort(key=rank)
        transfers.sort(key=lambda r: (*rank(r), names.index(r["transfer"]) if r["transfer"] in names else len(names)))
        self.device_states.update(flight.device_states)
        self.scenario.absorb(self, flight.round, RoundResults(measurements, flight.uploads))
        # The round's share of the wall time: since it was launched, or since the round before it
        # was committed when it was launched ahead.
        seconds = time.perf_counter() - max(flight.launched, self.last_commit)
        self._commit_round(flight.round, transfers, measurements, seconds)
        self.last_commit = time.perf_counter()

    def _wait_for_nodes(self, grid, timeout_s: float = 300.0) -> list[int]:
        """The connected nodes; at the start the engine may still be registering them."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_stop()
            node_ids = sorted(grid.get_node_ids())
            if len(node_ids) >= max(1, self.expected_nodes) or (node_ids and time.monotonic() > deadline):
                return node_ids
            if time.monotonic() > deadline:
                raise RuntimeError(f"no Flower nodes connected after {timeout_s:.0f} s")
            time.sleep(0.1)

    def _failed(self, round_: int, cohort: list[int], reason: str) -> list[dict]:
        """Measurement rows for devices whose results never came back (a node that raised or was lost)."""
        return self._rows(round_, cohort, failure=reason)

    def _rows(self, round_: int, devices: list[int], **values) -> list[dict]:
        """Measurement rows made on the server (every label) for devices no node ran."""
        return [
            self.measurements.empty_row(
                round=round_, label=label, device_id=d, strategy=self.strategies[label].name,
                bits=self.strategies[label].bits, link_model=str(self.fleet.device(d).link.model), **values,
            )
            for label in self.labels
            for d in devices
        ]

    def _commit_round(self, round_: int, transfers: list[dict], measurements: list[dict], seconds: float) -> None:
        """Flush the round: rows, round summary, the state to resume from, then the progress marker."""
        TRANSFERS.append(self.out, transfers)
        self.measurements.append(self.out, measurements)
        summaries = [
            metrics.round_summary(round_, label, [r for r in measurements if r["label"] == label],
                                  [r for r in transfers if r["label"] == label])
            for label in self.labels
        ]
        ROUNDS.append(self.out, summaries)
        saved = self.scenario.saved_state()
        if saved is not None or self.device_states:
            state_dir = self.out / STATE_DIR
            state_dir.mkdir(exist_ok=True)
            devices = [[label, d, s] for (label, d), s in sorted(self.device_states.items())]
            atomic_write(state_dir / STATE_FILE, lambda f: torch.save({"round": round_, "scenario": saved, "devices": devices}, f))
        self.rounds_done = round_
        self._write_progress()
        for s in summaries:
            self.log(
                f"round {round_} {s['label']}: {s['devices']} devices, {s['failed']} failed, "
                f"{s['bytes']} bytes, accuracy mean {s['accuracy_mean']:.4f}"
            )
        self.log(f"round {round_} done in {seconds:.2f} s")

    # ---- the end ------------------------------------------------------------------------
    def finish(self) -> dict | None:
        """The wide view, summary.json and the report from whatever rounds are done."""
        if not self.prepared:
            self._unlock()
            return None
        measurements = self.measurements.read(self.out)
        transfers = TRANSFERS.read(self.out)
        wide = metrics.wide_view(measurements, transfers)
        metrics.write_frame(self.out / "metrics.csv", wide)
        metrics.write_frame(self.out / "metrics.parquet", wide)
        over_rounds = self.scenario.fleet_accuracy
        strategies = {}
        for label in self.labels:
            strategy = self.strategies[label]
            report = self.payload_reports.get(label, {})
            strategies[label] = {
                "strategy": strategy.name,
                "bits": strategy.bits,
                "payload_bytes": report.get("total_bytes"),
                "model_ratio": report.get("model_ratio"),
                "conv_ratio": report.get("conv_ratio"),
                **self.scenario.summary(self, label),
                **metrics.label_totals(measurements, transfers, label, over_rounds),
            }
        summary = {
            "name": self.config.name,
            "seed": self.config.seed,
            "scenario": self.scenario.name,
            "fleet_accuracy": over_rounds,
            "rounds_done": self.rounds_done,
            "rounds": self.config.rounds,
            "wall_s": self.wall_before + (time.perf_counter() - self.started),
            "machine": metrics.machine_info(),
            "strategies": strategies,
        }
        metrics.write_json(self.out / "summary.json", summary)
        self._write_report()
        self.log(f"finished: {self.rounds_done}/{self.config.rounds} rounds in {summary['wall_s']:.1f} s")
        if self._log_handler is not None:
            log.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
        self._unlock()
        return summary

    def _write_report(self) -> None:
        try:
            from testbed.report import write_report

            write_report(self.out)
        except Exception as exc:  # the report must never lose a finished run
            self.log(f"report failed: {type(exc).__name__}: {exc}")


class RoundAbandoned(Exception):
    """The round in progress is dropped, uncommitted, because the run was asked to stop."""


# ---- progress display --------------------------------------------------------------------


class _Progress:
    """Rounds and devices done, with the running bytes and accuracy (rich; silent when off)."""

    def __init__(self, enabled: bool, rounds: int, done: int):
        self.enabled, self.rounds, self.done = enabled, rounds, done
        self.bytes = 0
        self.acc_sum = 0.0
        self.acc_n = 0

    def __enter__(self):
        if self.enabled:
            from testbed.progress import progress_bar

            self.bar = progress_bar("{task.fields[info]}")
            self.bar.__enter__()
            self.rounds_task = self.bar.add_task("rounds", total=self.rounds, completed=self.done, info="")
            self.devices_task = self.bar.add_task("devices", total=1, completed=0, info="")
        return self

    def start_round(self, round_: int, devices: int) -> None:
        self.round_started = time.perf_counter()
        self.round_devices = 0
        self.round_total, self.rounds_after = devices, self.rounds - round_
        if self.enabled:
            self.bar.update(self.devices_task, description=f"round {round_} devices", total=devices, completed=0)

    def advance(self, devices: int, transfers: list[dict], measurements: list[dict]) -> None:
        self.round_devices += devices
        self.bytes += sum(int(r["bytes"]) for r in transfers if r.get("bytes") is not None)
        for r in measurements:
            a = r.get("accuracy")
            if a is not None and not math.isnan(a):
                self.acc_sum += a
                self.acc_n += 1
        if self.enabled:
            acc = self.acc_sum / self.acc_n if self.acc_n else math.nan
            rate = fleet_rate(self.round_devices, self.round_total, self.rounds_after, time.perf_counter() - self.round_started)
            info = f"{rate}, {self.bytes / 1e6:.2f} MB sent, mean accuracy {acc:.3f}"
            self.bar.update(self.devices_task, advance=devices, info=info)
            task = self.bar.tasks[self.devices_task]
            if task.completed >= task.total:
                self.bar.update(self.rounds_task, advance=1)

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)
        return False


def print_summary(summary: dict, out_dir: Path) -> None:
    """The table that ends a run (narrow enough for an 80-column terminal)."""
    from rich import box
    from rich.table import Table

    title = (f"{summary['name']} ({summary['scenario']}): {summary['rounds_done']}/{summary['rounds']} rounds, "
             f"{summary['wall_s']:.1f} s")
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    labels = list(summary["strategies"])
    table.add_column("strategy", no_wrap=True, min_width=max(len(label) for label in labels))
    for column in ("bits", "bytes", "ratio", "acc\nideal", "acc\nmean", "acc\np10", "MB\nsent", "failed"):
        table.add_column(column, justify="right", no_wrap=True)

    def fmt(value, spec):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)

    for label, s in summary["strategies"].items():
        table.add_row(
            label, "-" if s["bits"] is None else str(s["bits"]), fmt(s["payload_bytes"], ","),
            fmt(s["model_ratio"], ".2f"), fmt(s.get("clean_accuracy"), ".3f"), fmt(s["accuracy_mean"], ".3f"),
            fmt(s["accuracy_p10"], ".3f"), f"{s['bytes_total'] / 1e6:.2f}", str(s["failed"]),
        )
    out = console()
    out.print(table)
    out.print("acc mean/p10: across the devices' local test splits; acc ideal: what an ideal link "
              "delivers, on the full test set; ratio: against float32; MB sent: every transfer")
    out.print(f"run folder: {out_dir} (report.html, transfers.csv, measurements.csv)")
