"""The fleet orchestrator: one experiment, round by round, into a run folder.

:func:`run_experiment` prepares the experiment in this process (fleet, central
models, payloads), starts Flower's simulation engine on Ray with the ServerApp
and ClientApp of :mod:`testbed.flower_app`, and the ServerApp drives the rounds
of :class:`Experiment`: each round it encodes every strategy's model once,
sends each node one message for its cohort of devices, collects the metric
rows (a node that raised or was lost becomes failed rows with the reason, the
round goes on) and appends them to the run folder. Rows are flushed every
round; ``resume`` continues a killed run from its last finished round to the
same final metrics (federated mode saves the global models every round).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path

import torch

from testbed import metrics
from testbed.config import ConfigError, ExperimentConfig, dump_config

log = logging.getLogger("testbed.run")

PROGRESS_FILE = "progress.json"
STATE_DIR = "state"


def _state_sha(state) -> str:
    h = hashlib.sha256()
    for name, tensor in state.items():
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _plain_state(state) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


class Experiment:
    """The server side of one experiment: everything the ServerApp needs, and the run folder."""

    def __init__(
        self,
        config: ExperimentConfig,
        out_dir: str | Path,
        resume: bool = False,
        progress: bool = True,
        config_path: str | Path | None = None,
    ):
        self.config = config
        self.out = Path(out_dir)
        self.resume = resume
        self.show_progress = progress
        self.base_dir = str(Path(config_path).resolve().parent) if config_path else str(Path.cwd())
        self.config_text = dump_config(config)
        self.labels = [e.label for e in config.strategies]
        self.rounds_done = 0
        self.wall_before = 0.0
        self.started = time.perf_counter()
        self._log_handler: logging.Handler | None = None
        self.prepared = False
        self.expected_nodes = 0  # nodes the engine starts (0: whatever connects)

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

    def prepare(self) -> None:
        from strategies.registry import build
        from testbed.data import load_dataset
        from testbed.fleet import Fleet

        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        config_file = self.out / "config.yaml"
        if self.resume:
            if not config_file.exists():
                raise ConfigError(f"{self.out}: not a run folder (no config.yaml), cannot resume")
            if config_file.read_text() != self.config_text:
                raise ConfigError(f"{config_file}: differs from the config given; resume takes the folder's config")
            progress = self._read_progress()
            self.rounds_done = int(progress.get("rounds_done", 0))
            self.wall_before = float(progress.get("wall_s", 0.0))
            metrics.truncate_after(self.out / "metrics.csv", self.rounds_done)
            metrics.truncate_after(self.out / "rounds.csv", self.rounds_done)
        else:
            for name in ("metrics.csv", "rounds.csv", "metrics.parquet", PROGRESS_FILE, "summary.json"):
                (self.out / name).unlink(missing_ok=True)
            config_file.write_text(self.config_text)
        self._open_log()
        self.log(f"experiment {cfg.name}: mode {cfg.mode}, {cfg.rounds} rounds, seed {cfg.seed}"
                 + (f", resuming after round {self.rounds_done}" if self.resume else ""))

        self.fleet = Fleet.from_config(cfg.fleet, cfg.seed, base_dir=self.base_dir)
        self.fleet.to_csv(self.out / "devices.csv")
        self.dataset = load_dataset(cfg.data.dataset, cfg.data.dir)
        self.log(f"dataset {cfg.data.dataset}: {getattr(self.dataset, 'description', '')}")
        if self.show_progress:
            _console().print(f"[bold]{cfg.name}[/]: {cfg.mode}, {len(self.fleet.devices)} devices, "
                             f"{cfg.rounds} rounds, dataset {cfg.data.dataset} ({self.dataset.description})")
        self.strategies = {label: build(spec) for label, spec in cfg.strategy_specs().items()}
        self.states = self._initial_states()
        self.uplink = build(dict(cfg.federated.uplink)) if cfg.mode == "federated" else None
        self._write_payloads()
        self.prepared = True

    def _initial_states(self) -> dict[str, dict[str, torch.Tensor]]:
        """The float model each strategy sends: central (broadcast) or the FedAvg start / checkpoint."""
        from testbed.flower_app import receiver_model

        cfg = self.config
        if cfg.mode == "broadcast":
            from testbed.training import central_model

            states = {}
            self.central_accuracy = {}
            for label, strategy in self.strategies.items():
                self.log(f"central model for {label} (training key {strategy.training_key()})")
                model = central_model(strategy, cfg.model, self.dataset, cfg.seed, progress=self.show_progress)
                states[label] = _plain_state(model.state_dict())
            return states
        if self.resume and self.rounds_done > 0:
            path = self.out / STATE_DIR / "global.pt"
            saved = torch.load(path, weights_only=True)
            if int(saved["round"]) != self.rounds_done:
                raise ConfigError(f"{path}: holds round {saved['round']}, the folder finished {self.rounds_done}")
            return {label: saved["states"][label] for label in self.labels}
        # FedAvg from the same starting model: the receiver architecture, seeded init.
        return {label: _plain_state(receiver_model(s, cfg, self.dataset).state_dict()) for label, s in self.strategies.items()}

    def _write_payloads(self) -> None:
        from testbed.inspect import payload_report
        from testbed.models import build_model

        with torch.random.fork_rng(devices=[]):  # only the shapes matter; leave the global generator alone
            plain = build_model(self.config.model, self.dataset.input_shape, self.dataset.num_classes).state_dict()
        self.payloads: dict = {}
        reports = []
        for label in self.labels:
            strategy = self.strategies[label]
            payload = strategy.encode(self.states[label])
            self.payloads[label] = payload
            reports.append(payload_report(label, strategy, self.states[label], reference=plain, payload=payload))
        self.payload_reports = {r["label"]: r for r in reports}
        metrics.write_json(self.out / "payloads.json", reports)

    def _read_progress(self) -> dict:
        path = self.out / PROGRESS_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    # ---- rounds -------------------------------------------------------------------------
    def drive(self, grid) -> None:
        """The ServerApp's main loop: every round not yet done."""
        if not self.prepared:
            self.prepare()
        first = self.rounds_done + 1
        with _Progress(self.show_progress, self.config.rounds, self.rounds_done) as bar:
            for round_ in range(first, self.config.rounds + 1):
                self.run_round(grid, round_, bar)

    def _round_payloads(self, round_: int):
        """Payload bytes and reference states of this round (encoded once, shared by every node)."""
        from testbed.flower_app import state_to_record

        if self.config.mode == "federated":  # the global models changed last round
            self.payloads = {label: self.strategies[label].encode(self.states[label]) for label in self.labels}
        raw = {label: self.payloads[label].to_bytes() for label in self.labels}
        index, records, powers, seen = {}, [], {}, {}
        for label in self.labels:
            sha = _state_sha(self.states[label])
            if sha not in seen:
                seen[sha] = len(records)
                records.append(state_to_record(self.states[label]))
            index[label] = seen[sha]
            powers[label] = metrics.float_power(self.states[label])
        return raw, records, index, powers

    def run_round(self, grid, round_: int, bar) -> None:
        from flwr.app import Message

        from testbed.flower_app import BROADCAST, FEDERATED, round_content

        cfg = self.config
        t0 = time.perf_counter()
        available = sorted(d.device_id for d in self.fleet.available(round_, cfg.seed))
        dpn = cfg.engine.devices_per_node
        cohorts = [available[i : i + dpn] for i in range(0, len(available), dpn)]
        raw, records, index, powers = self._round_payloads(round_)
        node_ids = self._wait_for_nodes(grid)
        kind = FEDERATED if cfg.mode == "federated" else BROADCAST
        messages = []
        for i, cohort in enumerate(cohorts):
            content = round_content(
                config_text=self.config_text, base_dir=self.base_dir, round_=round_, devices=cohort,
                labels=self.labels, payloads=raw, ref_records=records, ref_index=index, ref_powers=powers,
            )
            messages.append(Message(content, dst_node_id=node_ids[i % len(node_ids)], message_type=kind))
        bar.start_round(round_, len(available))
        ids = list(grid.push_messages(messages))
        pending = dict(zip(ids, cohorts))
        rows: list[dict] = []
        uplinks: dict[str, bytes] = {}
        deadline = time.monotonic() + cfg.engine.round_timeout_s
        while pending:
            if time.monotonic() > deadline:
                for cohort in pending.values():
                    reason = f"node lost: no reply within {cfg.engine.round_timeout_s:g} s"
                    self.log(f"round {round_}: devices {cohort}: {reason}")
                    got = self._failed(round_, cohort, reason)
                    rows.extend(got)
                    bar.advance(len(cohort), got)
                break
            replies = list(grid.pull_messages(set(pending)))
            for reply in replies:
                cohort = pending.pop(reply.metadata.reply_to_message_id, None)
                if cohort is None:
                    continue
                if reply.has_error():
                    reason = "node error: " + " ".join(str(reply.error.reason).split())[:300]  # one line
                    self.log(f"round {round_}: devices {cohort}: {reason}")
                    got = self._failed(round_, cohort, reason)
                else:
                    got = json.loads(str(reply.content["rows"]["json"]))
                    if "uplinks" in reply.content:
                        uplinks.update({k: bytes(v) for k, v in reply.content["uplinks"].items()})
                rows.extend(got)
                bar.advance(len(cohort), got)
            if pending and not replies:
                time.sleep(0.02)
        rows = metrics.sort_rows(rows, self.labels)
        if cfg.mode == "federated":
            self._aggregate(round_, rows, uplinks)
        for row in rows:
            row.pop("_n_train", None)
        self._commit_round(round_, rows, time.perf_counter() - t0)

    def _wait_for_nodes(self, grid, timeout_s: float = 300.0) -> list[int]:
        """The connected nodes; at the start the engine may still be registering them."""
        deadline = time.monotonic() + timeout_s
        while True:
            node_ids = sorted(grid.get_node_ids())
            if len(node_ids) >= max(1, self.expected_nodes) or (node_ids and time.monotonic() > deadline):
                return node_ids
            if time.monotonic() > deadline:
                raise RuntimeError(f"no Flower nodes connected after {timeout_s:.0f} s")
            time.sleep(0.1)

    def _failed(self, round_: int, cohort: list[int], reason: str) -> list[dict]:
        labels = [(label, self.strategies[label].name, self.strategies[label].bits) for label in self.labels]
        devices = [(d, str(self.fleet.device(d).link.model)) for d in cohort]
        return metrics.failed_rows(round_, labels, devices, reason)

    def _aggregate(self, round_: int, rows: list[dict], uplinks: dict[str, bytes]) -> None:
        """FedAvg over the updates that arrived, in device-id order (the same sum whatever the cohorts)."""
        from testbed.payload import Payload, PayloadError

        for label in self.labels:
            glob = self.states[label]
            template = {k: v for k, v in glob.items() if v.dtype.is_floating_point}
            total = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in template.items()}
            weight = 0.0
            for row in rows:  # sorted by device id within the strategy
                if row["strategy"] != label:
                    continue
                raw = uplinks.get(f"{label}/{row['device_id']}")
                if raw is None:
                    continue
                try:
                    delta = self.uplink.decode(self.uplink.read(raw, template), template)
                except PayloadError as exc:
                    row["failure"] = f"uplink decode: {exc}"
                    continue
                if not all(bool(torch.isfinite(t).all()) for t in delta.values()):
                    # One NaN would poison the global model of every later round.
                    row["failure"] = "uplink update not finite: left out of the aggregate"
                    continue
                w = float(row.get("_n_train") or 1)
                for k in total:
                    total[k] += w * delta[k].double()
                weight += w
            if weight > 0:
                new = {k: (v + (total[k] / weight).to(v.dtype)) if k in total else v for k, v in glob.items()}
                self.states[label] = self._constrain(label, new)

    def _constrain(self, label: str, state: dict) -> dict:
        """Project an aggregate back onto the strategy's trained form (symmetric kernels)."""
        from testbed.flower_app import constrained, receiver_model

        strategy = self.strategies[label]
        if not strategy.keeps_form_in_federated_training():
            return state
        model = receiver_model(strategy, self.config, self.dataset)
        model.load_state_dict(state)
        return _plain_state(constrained(strategy, model).state_dict())

    def _commit_round(self, round_: int, rows: list[dict], seconds: float) -> None:
        """Flush the round: rows, round summary, (federated) models, then the progress marker."""
        metrics.append_metrics(self.out, rows)
        summaries = [metrics.round_summary(round_, label, [r for r in rows if r["strategy"] == label]) for label in self.labels]
        metrics.append_rounds(self.out, summaries)
        if self.config.mode == "federated":
            state_dir = self.out / STATE_DIR
            state_dir.mkdir(exist_ok=True)
            tmp = state_dir / "global.pt.tmp"
            torch.save({"round": round_, "states": self.states}, tmp)
            tmp.replace(state_dir / "global.pt")
        self.rounds_done = round_
        wall = self.wall_before + (time.perf_counter() - self.started)
        metrics.write_json(self.out / PROGRESS_FILE, {"rounds_done": round_, "wall_s": wall})
        for s in summaries:
            self.log(
                f"round {round_} {s['strategy']}: {s['devices']} devices, {s['failed']} failed, "
                f"{s['total_bytes_down']} bytes down, accuracy mean {s['accuracy_mean']:.4f}"
            )
        self.log(f"round {round_} done in {seconds:.2f} s")

    # ---- the end ------------------------------------------------------------------------
    def finish(self) -> dict | None:
        """summary.json, metrics.parquet and the report from whatever rounds are done."""
        if not self.prepared:
            return None
        from testbed.training import evaluate
        from testbed.flower_app import receiver_model

        frame = metrics.read_metrics(self.out)
        metrics.write_parquet(self.out)
        accuracy_of: dict[str, float] = {}  # by state hash: strategies sharing a model evaluate it once

        def test_accuracy(model, state) -> float:
            sha = _state_sha(state)
            if sha not in accuracy_of:
                model.load_state_dict(state)
                accuracy_of[sha] = float(evaluate(model, self.dataset.test_x, self.dataset.test_y)[0])
            return accuracy_of[sha]

        strategies = {}
        for label in self.labels:
            strategy = self.strategies[label]
            model = receiver_model(strategy, self.config, self.dataset)
            # What an ideal link delivers: the clean decode of what the strategy sends (pruned,
            # projected, quantised), which can differ much from the server's float model.
            clean = strategy.decode(strategy.encode(self.states[label]), model.state_dict())
            report = self.payload_reports[label]
            strategies[label] = {
                "strategy": strategy.name,
                "bits": strategy.bits,
                "payload_bytes": report["total_bytes"],
                "model_ratio": report["model_ratio"],
                "conv_ratio": report["conv_ratio"],
                "central_accuracy": test_accuracy(model, self.states[label]),
                "clean_accuracy": test_accuracy(model, clean),
                **metrics.strategy_totals(frame, label, self.config.mode),
            }
        summary = {
            "name": self.config.name,
            "seed": self.config.seed,
            "mode": self.config.mode,
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
        return summary

    def _write_report(self) -> None:
        try:
            import testbed.report as report
        except ImportError:
            return
        write = getattr(report, "write_report", None)
        if write is None:
            return
        try:
            write(self.out)
        except Exception as exc:  # the report must never lose a finished run
            self.log(f"report failed: {type(exc).__name__}: {exc}")


# ---- progress display --------------------------------------------------------------------


def _console():
    from rich.console import Console

    return Console(stderr=True)


class _Progress:
    """Rounds and devices done, with the running bytes and accuracy (rich; silent when off)."""

    def __init__(self, enabled: bool, rounds: int, done: int):
        self.enabled, self.rounds, self.done = enabled, rounds, done
        self.bytes_down = 0
        self.acc_sum = 0.0
        self.acc_n = 0

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"), console=_console(), transient=False,
            )
            self.bar.__enter__()
            self.rounds_task = self.bar.add_task("rounds", total=self.rounds, completed=self.done, info="")
            self.devices_task = self.bar.add_task("devices", total=1, completed=0, info="")
        return self

    def start_round(self, round_: int, devices: int) -> None:
        if self.enabled:
            self.bar.update(self.devices_task, description=f"round {round_} devices", total=devices, completed=0)

    def advance(self, devices: int, rows: list[dict]) -> None:
        for r in rows:
            b = r.get("bytes_down")
            if b is not None and not (isinstance(b, float) and math.isnan(b)):
                self.bytes_down += int(b)
            a = r.get("accuracy")
            if a is not None and not math.isnan(a):
                self.acc_sum += a
                self.acc_n += 1
        if self.enabled:
            acc = self.acc_sum / self.acc_n if self.acc_n else math.nan
            info = f"{self.bytes_down / 1e6:.2f} MB down, mean accuracy {acc:.3f}"
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

    title = f"{summary['name']}: {summary['rounds_done']}/{summary['rounds']} rounds, {summary['wall_s']:.1f} s"
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    labels = list(summary["strategies"])
    table.add_column("strategy", no_wrap=True, min_width=max(len(label) for label in labels))
    for column in ("bits", "bytes", "ratio", "acc\nideal", "acc\nmean", "acc\np10", "MB\ndown", "failed"):
        table.add_column(column, justify="right", no_wrap=True)

    def fmt(value, spec):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)

    for label, s in summary["strategies"].items():
        table.add_row(
            label, "-" if s["bits"] is None else str(s["bits"]), f"{s['payload_bytes']:,}",
            fmt(s["model_ratio"], ".2f"), fmt(s["clean_accuracy"], ".3f"), fmt(s["accuracy_mean"], ".3f"),
            fmt(s["accuracy_p10"], ".3f"), f"{s['bytes_down_total'] / 1e6:.2f}", str(s["failed"]),
        )
    console = _console()
    console.print(table)
    console.print("acc mean/p10: across the devices' local test splits; acc ideal: what an ideal link "
                  "delivers, on the full test set; ratio: against float32")
    console.print(f"run folder: {out_dir} (report.html, metrics.csv)")


# ---- the entry point ---------------------------------------------------------------------


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    resume: bool = False,
    ray_address: str | None = None,
    progress: bool = True,
    config_path: str | Path | None = None,
) -> Path:
    """Run one experiment into ``out_dir`` (continuing it with ``resume``); return the run folder."""
    from testbed.engine import run_simulation_fleet
    from testbed.flower_app import client_app, make_server_app

    experiment = Experiment(config, out_dir, resume=resume, progress=progress, config_path=config_path)
    try:
        experiment.prepare()
        if experiment.rounds_done < config.rounds:
            dpn = config.engine.devices_per_node
            nodes = max(1, math.ceil(len(experiment.fleet.devices) / dpn))
            experiment.expected_nodes = nodes
            run_simulation_fleet(
                make_server_app(experiment), client_app, nodes, config.engine,
                ray_address=ray_address or config.engine.ray_address,
            )
    finally:
        summary = experiment.finish()
    if experiment.rounds_done < config.rounds:
        raise RuntimeError(
            f"the run stopped after round {experiment.rounds_done} of {config.rounds}; see {Path(out_dir) / 'run.log'}"
        )
    if progress and summary is not None:
        print_summary(summary, Path(out_dir))
    return Path(out_dir)
