"""Traffic scenarios by name: the project's own, and any installed package's.

A package adds a scenario by declaring, in its pyproject.toml::

    [project.entry-points."testbed.scenarios"]
    myscenario = "mypackage.scenario:MyScenario"

where ``MyScenario`` subclasses :class:`testbed.scenarios.base.Scenario`. Configs
then say ``scenario: {name: myscenario, ...its options}``.
"""

from __future__ import annotations

from pydantic import ValidationError

from testbed.plugins import Registry
from testbed.scenarios.base import DeviceRun, RoundPlan, RoundResults, Scenario, ScenarioOptions, Upload

SCENARIOS = Registry(
    "scenario",
    "testbed.scenarios",
    {
        "broadcast": "testbed.scenarios.broadcast:Broadcast",
        "federated": "testbed.scenarios.federated:Federated",
        "update": "testbed.scenarios.update:Update",
        "split": "testbed.scenarios.split:Split",
        "datasharing": "testbed.scenarios.datasharing:DataSharing",
    },
    base=Scenario,
)


class ScenarioSpecError(ValueError):
    """A scenario entry of a config that cannot be used; the message is one line (key: problem)."""


def scenario_options(spec: dict) -> tuple[type[Scenario], ScenarioOptions]:
    """The scenario class and its validated options from ``{name: ..., **options}``."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name is None:
        raise ScenarioSpecError("name: missing (e.g. scenario: {name: broadcast})")
    try:
        cls = SCENARIOS.get(str(name))
    except KeyError as exc:
        raise ScenarioSpecError(f"name: {exc.args[0]}") from None
    try:
        return cls, cls.Options(**spec)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or name
        raise ScenarioSpecError(f"{where}: {err['msg'].removeprefix('Value error, ')}") from None


def build_scenario(config) -> Scenario:
    cls, options = scenario_options(config.scenario)
    return cls(options, config)


__all__ = [
    "SCENARIOS", "DeviceRun", "RoundPlan", "RoundResults", "Scenario", "ScenarioOptions", "ScenarioSpecError",
    "Upload", "build_scenario", "scenario_options",
]
