"""The experiment config: YAML, validated on load, overridable with ``key=value``.

Every section is a pydantic model that forbids unknown keys, so a typo is an
error naming the key and the file rather than a silently ignored setting.
:func:`load_config` turns any problem into one :class:`ConfigError` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from testbed.attributes import MEASURED, forms, number, on_off
from testbed.links.schema import LinkConfig, link_section

from testbed.errors import ConfigError
from testbed.recipes import TrainConfig


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComputeConfig(Section):
    speed_factor: forms(number(gt=0)) = 1.0  # relative compute speed (1: fleet.reference_flops_per_s)
    availability: Annotated[forms(number(ge=0, le=1)), MEASURED] = 1.0  # probability a device takes part in a round
    # When the device can take part: "1" (can) or "0" (cannot) per round, cycled ("10": every other round)
    schedule: forms(on_off()) = "1"


class FogConfig(Section):
    """Fog nodes (the data-sharing scenario's): how many, which devices each serves, their hop links."""

    nodes: int = Field(default=1, ge=1)
    # device at fleet position p of N: round-robin -> p mod nodes; blocks -> p * nodes // N (**our choice**)
    assign: Literal["round-robin", "blocks"] = "round-robin"
    # the device<->fog hops' links, drawn per device like fleet.link; none: the device's own link
    link: LinkConfig | None = None


class FleetConfig(Section):
    devices: int = Field(default=20, ge=1)
    link: LinkConfig = Field(default_factory=link_section)  # a section of the link models' own parameters
    compute: ComputeConfig = ComputeConfig()
    fog: FogConfig = FogConfig()
    trace: str | None = None  # CSV of measured devices; replaces the drawn ones
    # FLOP/s of a device with speed_factor 1 (testbed.compute: on-device times from FLOP counts)
    reference_flops_per_s: float = Field(default=1e9, gt=0)


class RoundConfig(Section):
    # Devices whose latency (airtime + compute) exceeds it are late: kept in the metrics, not
    # aggregated (federated), not on time (rounds.csv); None: no deadline.
    deadline_s: float | None = Field(default=None, gt=0)


class PartitionConfig(Section):
    scheme: Literal["iid", "dirichlet", "shards"] = "iid"
    alpha: float = Field(default=0.5, gt=0)  # dirichlet concentration
    shards_per_device: int = Field(default=2, ge=1)


class DataConfig(Section):
    dataset: str = "mnist"  # a registered dataset (testbed.data.registry): mnist, mnist-sample, cifar10, files
    dir: str | None = None  # else $TESTBED_DATA_DIR, else ~/.cache/testbed/data
    # dataset files: a folder or .npz file (relative: to the config file's folder), its format,
    # and for an image folder without train/ and test/ the fraction of each class held out for testing
    path: str | None = None
    format: str | None = None  # idx | npz | image-folder (testbed.data.files)
    test_fraction: float | None = Field(default=None, gt=0, lt=1)  # default 0.2 (testbed.data.image_folder)
    partition: PartitionConfig = PartitionConfig()
    test_per_device: int = Field(default=100, ge=1)  # local test split size
    train_per_device: int | None = Field(default=None, ge=1)  # local training split (federated)

    @field_validator("dataset")
    @classmethod
    def _registered(cls, name):
        from testbed.data.registry import DATASETS

        if name not in DATASETS.names():
            raise ValueError(DATASETS.unknown(name))
        return name

    @field_validator("format")
    @classmethod
    def _known_format(cls, value):
        from testbed.data.files import FORMATS

        if value is not None and value not in FORMATS:
            raise ValueError(f"unknown format {value!r}; known: {', '.join(FORMATS)}")
        return value

    @model_validator(mode="after")
    def _files_options(self):
        given = [k for k in ("path", "format", "test_fraction") if getattr(self, k) is not None]
        if self.dataset != "files" and given:
            raise ValueError(f"{', '.join('data.' + k for k in given)}: options of dataset files, not {self.dataset}")
        if self.dataset == "files" and (self.path is None or self.format is None):
            raise ValueError("dataset files needs data.path (a folder or .npz file) and data.format")
        if self.test_fraction is not None and self.format != "image-folder":
            raise ValueError(f"data.test_fraction: for format image-folder only, not {self.format}")
        return self


class ModelConfig(Section):
    arch: str = "deepcnn"  # a registered model (testbed.models.registry): deepcnn, resnet18
    width: int | None = Field(default=None, ge=1)  # first-stage channels; default: the model's own (32 deepcnn, 64 resnet18)
    train: TrainConfig = TrainConfig()
    # Models sent for inference carry BatchNorm folded into the conv before it (testbed.models.batchnorm):
    # applied after training, so it is not part of what the checkpoint cache keys.
    fold_batchnorm: bool = False

    @field_validator("arch")
    @classmethod
    def _registered(cls, name):
        from testbed.models.registry import MODELS

        if name not in MODELS.names():
            raise ValueError(MODELS.unknown(name))
        return name


class EngineConfig(Section):
    # Devices per Flower message (a cohort); default: chosen from the fleet and the workers
    # (testbed.engine.cohort_size).
    devices_per_node: int | None = Field(default=None, ge=1)
    num_workers: int | None = Field(default=None, ge=1)  # Ray workers; default: CPUs of the machine
    ray_address: str | None = None  # attach to an existing Ray cluster
    # A node whose reply has not come this long after the round started is taken as lost:
    # its devices are recorded as failed for the round, and the run goes on.
    round_timeout_s: float = Field(default=1800.0, gt=0)


class StrategyEntry(BaseModel):
    """One strategy of an experiment: ``label`` (unique), ``strategy`` (registered name), options."""

    model_config = ConfigDict(extra="allow")
    label: str
    strategy: str
    # The seed of this label's centrally trained model (default: the run's seed, which also keys
    # the fleet): models of several training seeds can meet the same devices and noise in one run.
    train_seed: int | None = Field(default=None, ge=0)


class ExperimentConfig(Section):
    name: str = "experiment"
    seed: int = 0
    # The traffic pattern: {name: broadcast | federated | any registered scenario, ...its options}
    scenario: dict[str, Any] = {"name": "broadcast"}
    rounds: int = Field(default=3, ge=1)
    round: RoundConfig = RoundConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    fleet: FleetConfig = FleetConfig()
    strategies: list[StrategyEntry] = Field(min_length=1)
    engine: EngineConfig = EngineConfig()
    sweep: dict[str, list[Any]] | None = None

    @field_validator("strategies")
    @classmethod
    def _unique_labels(cls, entries):
        labels = [e.label for e in entries]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"strategy labels must be unique, repeated: {', '.join(dupes)}")
        return entries

    def strategy_specs(self) -> dict[str, dict]:
        """label -> the options dict that :func:`strategies.registry.build` takes."""
        return {e.label: e.model_dump(exclude={"train_seed"}) for e in self.strategies}

    def train_seed(self, label: str) -> int:
        """The training seed of a label's central model: its entry's ``train_seed``, else the run's seed."""
        entry = next(e for e in self.strategies if e.label == label)
        return self.seed if entry.train_seed is None else entry.train_seed


# ---- loading -----------------------------------------------------------------------

DEFAULT_CONFIG = "configs/quickstart.yaml"


def default_config_path() -> Path:
    """The quickstart config: configs/quickstart.yaml of the working directory, else of the project checkout."""
    local = Path(DEFAULT_CONFIG)
    if local.exists():
        return local
    return Path(__file__).resolve().parents[1] / DEFAULT_CONFIG



def _set_path(tree: dict, item: str, dotted: str, value: Any) -> None:
    """Set ``dotted`` (``a.b``, ``strategies.0.bits``) in ``tree``; a key that cannot be set is one line."""
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"--set {item!r}: empty key part in {dotted!r}; expected key.sub=value")
    node: Any = tree
    for depth, key in enumerate(keys):
        where = ".".join(keys[:depth]) or "the config"
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                indices = f"0-{len(node) - 1}" if node else "none: it is empty"
                raise ConfigError(f"--set {item!r}: {where} is a list; '{key}' is not one of its indices ({indices})")
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise ConfigError(f"--set {item!r}: {where} is a value ({node!r}), not a section with keys")


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML (``3``, ``[1,2]``, ``true``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({getattr(exc, 'problem', exc)})") from None
        _set_path(tree, item, key.strip(), value)
    return tree


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        first_line: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                seen = first_line.get(key)
            except TypeError:  # an unhashable key: the base loader reports it
                continue
            if seen is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen})", key_node.start_mark)
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _describe(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-after", "tagged-union")))
    # Union members add their class names to the path; keep the config's keys only.
    parts = [p for p in loc.split(".") if p and not p[0].isupper() and p not in ("list[float]", "list[str]", "float", "str", "int")]
    return ".".join(parts) or "(top level)"


def validate_tree(tree: dict, source: str) -> ExperimentConfig:
    from strategies.registry import StrategySpecError, build

    for old in ("mode", "federated"):
        if old in tree:  # configs written before scenarios were plug-ins
            raise ConfigError(
                f"{source}: {old}: replaced by 'scenario' (scenario: {{name: broadcast}}, or scenario: "
                "{name: federated, local: {...}, uplink: {...}}; see docs/ARCHITECTURE.md)"
            )
    try:
        config = ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        errors = exc.errors()
        key = _describe(errors[0])
        if sum(_describe(e).startswith(key) for e in errors) > 1:
            # A key that accepts several forms (a value, a list or a distribution).
            message = (
                "expected a value, a list with one value per device, or a distribution "
                "({uniform: [low, high]}, {normal: [mean, std]}, {lognormal: [mu, sigma]}, {choice: [...]})"
            )
        else:
            message = errors[0]["msg"]
        raise ConfigError(f"{source}: {key}: {message}") from None
    from testbed.scenarios import ScenarioSpecError, scenario_options

    try:
        scenario_options(config.scenario)
    except ScenarioSpecError as exc:
        raise ConfigError(f"{source}: scenario.{exc}") from None
    for index, (label, spec) in enumerate(config.strategy_specs().items()):
        try:
            build(spec)
        except StrategySpecError as exc:
            raise ConfigError(f"{source}: strategies.{index} ({label}): {exc}") from None
    return config


def load_config(path: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the config as UTF-8") from None
    try:
        tree = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys")
    apply_overrides(tree, list(overrides))
    return validate_tree(tree, str(path))


def dump_config(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
