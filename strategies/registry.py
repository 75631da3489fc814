"""Strategies by name: the project's own, and any installed package's.

A package adds strategies by declaring, in its pyproject.toml::

    [project.entry-points."testbed.strategies"]
    mycodec = "mypackage.codec:MyStrategy"

where ``MyStrategy`` subclasses :class:`strategies.base.Strategy`. The entry
point's name is the strategy's name in configs.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from pydantic import ValidationError

from strategies.base import Strategy

ENTRY_POINT_GROUP = "testbed.strategies"

# The project's own strategies: name -> "module:Class", imported when used.
_BUILTIN = {
    "raw": "strategies.raw:RawStrategy",
    "quantise": "strategies.quantise:QuantiseStrategy",
    "symmetry": "strategies.symmetry:SymmetryStrategy",
    "prune": "strategies.prune:PruneStrategy",
    "monocnn": "strategies.monocnn:MonoCNNStrategy",
    "lowrank": "strategies.lowrank:LowRankStrategy",
    "factorised": "strategies.factorised:FactorisedStrategy",
    "topk": "strategies.topk:TopKStrategy",
}

_registered: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    _registered[cls.name] = cls
    return cls


def _load(target: str) -> type[Strategy]:
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"{target} is not a Strategy subclass")
    return cls


def available() -> dict[str, type[Strategy]]:
    """All strategies: built-in ones present in this checkout, registered ones, entry points."""
    found: dict[str, type[Strategy]] = {}
    for name, target in _BUILTIN.items():
        try:
            found[name] = _load(target)
        except ModuleNotFoundError as exc:
            if exc.name != target.partition(":")[0]:
                raise
    found.update(_registered)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not a Strategy subclass")
        found[ep.name] = cls
    return found


def get(name: str) -> type[Strategy]:
    strategies = available()
    if name not in strategies:
        raise KeyError(f"unknown strategy {name!r}; registered: {', '.join(sorted(strategies))}")
    return strategies[name]


class StrategySpecError(ValueError):
    """A strategy entry of a config that cannot be built; the message is one line."""


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
