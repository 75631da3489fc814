"""Link models by name: the project's own, and any installed package's.

A link model is a :class:`~testbed.links.base.Link` subclass (see its docstring). The
project's own are listed in ``_BUILTIN``; code elsewhere registers one with
:func:`register`, and a package adds one by declaring, in its pyproject.toml::

    [project.entry-points."testbed.links"]
    mylink = "mypackage.link:MyLink"

The entry point's name is the model's name in configs, and must be the one its ``Params``
declares (``model: Literal["mylink"] = "mylink"``).
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from testbed.links.base import Link, LinkParams

ENTRY_POINT_GROUP = "testbed.links"

# The project's own link models: name -> "module:Class", imported when used.
_BUILTIN = {
    "ideal": "testbed.links.ideal:IdealLink",
    "bsc": "testbed.links.bsc:BSCLink",
    "awgn": "testbed.links.awgn:AWGNLink",
    "analog": "testbed.links.analog:AnalogLink",
    "erasure": "testbed.links.erasure:ErasureLink",
    "fading": "testbed.links.fading:FadingLink",
    "gilbert_elliott": "testbed.links.gilbert_elliott:GilbertElliottLink",
}

_registered: dict[str, type[Link]] = {}


def _checked(name: str, cls, where: str) -> type[Link]:
    if not (isinstance(cls, type) and issubclass(cls, Link)):
        raise TypeError(f"{where} is not a Link subclass")
    if cls.model != name:
        raise TypeError(f"{where}: its Params name the model {cls.model!r}, not {name!r}")
    return cls


def register(cls: type[Link]) -> type[Link]:
    """Class decorator: make a link model available under the name its ``Params`` declare."""
    if not cls.model:
        raise ValueError(f"{cls.__qualname__}.Params has no model name (model: Literal['name'] = 'name')")
    _registered[cls.model] = _checked(cls.model, cls, cls.__qualname__)
    return cls


@cache
def _builtin() -> dict[str, type[Link]]:
    found = {}
    for name, target in _BUILTIN.items():
        module, _, attr = target.partition(":")
        found[name] = _checked(name, getattr(importlib.import_module(module), attr), target)
    return found


@cache
def _installed() -> dict[str, type[Link]]:
    return {ep.name: _checked(ep.name, ep.load(), f"entry point {ep.name} = {ep.value}") for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> dict[str, type[Link]]:
    """All link models by name: the built-in ones, registered ones, installed packages' entry points."""
    return {**_builtin(), **_registered, **_installed()}


def get(model: str) -> type[Link]:
    models = available()
    if model not in models:
        raise KeyError(f"unknown link model {model!r}; known: {', '.join(models)}")
    return models[model]


def link_params(model: str, **values) -> LinkParams:
    """The parameters of a ``model`` link: its own defaults, replaced by ``values``."""
    return get(model).Params(**values)


def make_link(params: LinkParams) -> Link:
    """The link of one device, by ``params.model``."""
    return get(params.model)(params)
