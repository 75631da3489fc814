"""Link models by name: the built-in ones, one registered in code, one from an installed package's entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Literal

import pytest

from plugins import install_plugin
from pydantic import Field

from testbed.attributes import number
from testbed.config import ConfigError, validate_tree
from testbed.links import Link, LinkParams, available, link_params, make_link, register, registry
from testbed.links.channel import Channel
from testbed.links.schema import link_section, parameters

ROOT = Path(__file__).resolve().parents[1]


def test_the_built_in_models():
    assert list(available()) == ["ideal", "bsc", "awgn", "analog", "erasure", "fading", "gilbert_elliott", "nr"]
    for name, cls in available().items():
        assert cls.model == name and cls.Params.model_fields["model"].default == name
        assert type(make_link(link_params(name))) is cls


class HalfDuplexLink(Link):
    """A test model: bits flip at ``flip``; a link of one class and one registration."""

    class Params(LinkParams):
        model: Literal["halfduplex"] = "halfduplex"
        flip: Annotated[float, number(ge=0, le=1)] = Field(0.0, description="bit flip probability")

    def channel(self, rng):
        return Channel(ber=self.params.flip)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(registry.LINKS, "_registered", {})  # registrations of this test only
    return register


def test_a_model_registered_in_code_is_configurable(registered):
    registered(HalfDuplexLink)
    assert available()["halfduplex"] is HalfDuplexLink
    section = link_section(model="halfduplex", flip=[0.1, 0.2])
    assert section.flip == [0.1, 0.2] and "flip" in parameters()
    with pytest.raises(ConfigError, match=r"^c\.yaml: fleet\.link\.snr_db: not a parameter of link model halfduplex"):
        validate_tree({"fleet": {"link": {"model": "halfduplex", "snr_db": 3}}, "strategies": [{"label": "r", "strategy": "raw"}]}, "c.yaml")


def test_registration_needs_a_model_name_and_one_meaning_per_parameter(registered):
    class Nameless(Link):
        def channel(self, rng):
            return Channel(ber=0.0)

    with pytest.raises(ValueError, match="Nameless.Params has no model name"):
        registered(Nameless)

    class OtherSnr(Link):
        class Params(LinkParams):
            model: Literal["othersnr"] = "othersnr"
            snr_db: Annotated[float, number(ge=0)] = 3.0

        def channel(self, rng):
            return Channel(ber=0.0)

    registered(OtherSnr)
    with pytest.raises(TypeError, match="link models awgn and othersnr both have a parameter 'snr_db', with different rules or defaults"):
        parameters()


PLUGIN = '''
from typing import Annotated, Literal

from pydantic import Field

from testbed.attributes import number
from testbed.links.base import Link, LinkParams
from testbed.links.channel import Channel


class FlakyLink(Link):
    """Bits flip at flip_rate and packets are lost at drop_rate."""

    class Params(LinkParams):
        model: Literal["flaky"] = "flaky"
        flip_rate: Annotated[float, number(ge=0, le=1)] = Field(0.0, description="bit flip probability")
        drop_rate: Annotated[float, number(ge=0, lt=1)] = Field(0.0, description="packet loss probability")

    def channel(self, rng):
        return Channel(ber=self.params.flip_rate, loss=self.params.drop_rate)
'''

PROBE = '''
import json, sys
from testbed.config import ConfigError, validate_tree
from testbed.fleet import Fleet, columns
from testbed.links import available
from testbed.payload import Payload, Segment
from testbed.rng import derive_rng

out = {"models": list(available())}
tree = {"fleet": {"devices": 2, "link": {"model": ["flaky", "awgn"], "flip_rate": 0.01, "drop_rate": 0.1, "snr_db": 5}},
        "strategies": [{"label": "r", "strategy": "raw"}]}
try:
    cfg = validate_tree(tree, "plugin.yaml")
except ConfigError as exc:
    print(json.dumps({**out, "error": str(exc)}))
    sys.exit()
fleet = Fleet.from_config(cfg.fleet, 0)
link = fleet.link(0)
payload = Payload([Segment("w", bytes(50_000), False), Segment("side", bytes(500), True)])
t = link.transmit(payload, derive_rng(0, "plugin"))
fleet.to_csv(sys.argv[1])
tree["fleet"]["link"] = {"model": "flaky", "ber": 0.1}
try:
    validate_tree(tree, "plugin.yaml")
except ConfigError as exc:
    out["misplaced"] = str(exc)
out.update(link=type(link).__name__, params=link.params.model_dump(), bit_errors=t.stats.bit_errors,
           lost=t.stats.packets_lost, columns=list(columns()), reloaded=Fleet.from_csv(sys.argv[1]) == fleet)
print(json.dumps(out))
'''


def probe(tmp_path: Path, with_plugin: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path)] * with_plugin + [str(ROOT)])}
    result = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "devices.csv")], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_link_model_from_an_installed_package_registers_through_its_entry_point(tmp_path):
    install_plugin(tmp_path, "flaky-link", {"flaky_link.py": textwrap.dedent(PLUGIN)},
                   {"testbed.links": {"flaky": "flaky_link:FlakyLink"}})

    got = probe(tmp_path, with_plugin=True)
    assert "flaky" in got["models"] and got["link"] == "FlakyLink"
    assert got["params"]["flip_rate"] == 0.01 and got["params"]["drop_rate"] == 0.1 and "snr_db" not in got["params"]
    assert got["bit_errors"] > 0 and got["lost"] > 0
    assert {"flip_rate", "drop_rate"} <= set(got["columns"]) and got["reloaded"]
    assert got["misplaced"].startswith("plugin.yaml: fleet.link.ber: not a parameter of link model flaky (parameters: ")

    without = probe(tmp_path, with_plugin=False)
    assert "flaky" not in without["models"]
    assert without["error"].startswith("plugin.yaml: fleet.link.model: unknown link model 'flaky'; known: ideal, bsc")
