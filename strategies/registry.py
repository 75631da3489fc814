"""Strategies by name: the project's own, and any installed package's.

A package adds strategies by declaring, in its pyproject.toml::

    [project.entry-points."testbed.strategies"]
    mycodec = "mypackage.codec:MyStrategy"

where ``MyStrategy`` subclasses :class:`strategies.base.Strategy`. The entry
point's name is the strategy's name in configs.
"""

from __future__ import annotations

from pydantic import ValidationError

from strategies.base import Strategy
from testbed.plugins import Registry

# The project's own strategies: name -> "module:Class", imported when used.
STRATEGIES = Registry(
    "strategy",
    "testbed.strategies",
    {
        "raw": "strategies.raw:RawStrategy",
        "quantise": "strategies.quantise:QuantiseStrategy",
        "symmetry": "strategies.symmetry:SymmetryStrategy",
        "prune": "strategies.prune:PruneStrategy",
        "monocnn": "strategies.monocnn:MonoCNNStrategy",
        "lowrank": "strategies.lowrank:LowRankStrategy",
        "factorised": "strategies.factorised:FactorisedStrategy",
        "topk": "strategies.topk:TopKStrategy",
    },
    base=Strategy,
)


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    return STRATEGIES.register(cls.name)(cls)


def available() -> dict[str, type[Strategy]]:
    """All strategies: built-in ones, registered ones, installed packages' entry points."""
    return STRATEGIES.available()


def get(name: str) -> type[Strategy]:
    return STRATEGIES.get(name)


class StrategySpecError(ValueError):
    """A strategy entry of a config that cannot be built; the message is one line."""


def checked_spec(spec: dict) -> dict:
    """``spec`` if it builds a strategy, else ValueError with the one-line reason (for the
    option validators of scenarios that name a strategy, e.g. federated's uplink)."""
    try:
        build(dict(spec))
    except StrategySpecError as exc:
        raise ValueError(str(exc)) from None
    return spec


def build(spec: dict) -> Strategy:
    """Build a strategy from a config entry: ``{"strategy": NAME, **options}``."""
    spec = dict(spec)
    spec.pop("label", None)
    name = spec.pop("strategy", None)
    if name is None:
        raise StrategySpecError("missing key 'strategy'")
    try:
        cls = get(name)
    except KeyError as exc:
        raise StrategySpecError(exc.args[0]) from None
    try:
        return cls(**spec)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or name
        raise StrategySpecError(f"{name}.{where}: {err['msg']}") from None
