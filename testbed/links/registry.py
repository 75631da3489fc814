"""Link models by name: the project's own, and any installed package's.

A link model is a :class:`~testbed.links.base.Link` subclass (see its docstring). The
project's own are listed in ``LINKS``; code elsewhere registers one with
:func:`register`, and a package adds one by declaring, in its pyproject.toml::

    [project.entry-points."testbed.links"]
    mylink = "mypackage.link:MyLink"

The entry point's name is the model's name in configs, and must be the one its ``Params``
declares (``model: Literal["mylink"] = "mylink"``).
"""

from __future__ import annotations

from testbed.links.base import Link, LinkParams
from testbed.plugins import Registry

# The project's own link models: name -> "module:Class", imported when used.
LINKS = Registry(
    "link model",
    "testbed.links",
    {
        "ideal": "testbed.links.ideal:IdealLink",
        "bsc": "testbed.links.bsc:BSCLink",
        "awgn": "testbed.links.awgn:AWGNLink",
        "analog": "testbed.links.analog:AnalogLink",
        "erasure": "testbed.links.erasure:ErasureLink",
        "fading": "testbed.links.fading:FadingLink",
        "gilbert_elliott": "testbed.links.gilbert_elliott:GilbertElliottLink",
        "nr": "testbed.links.nr:NRLink",
    },
    base=Link,
)


def _checked(name: str, cls: type[Link]) -> type[Link]:
    if cls.model != name:
        raise TypeError(f"link model {name!r}: its Params name the model {cls.model!r}")
    return cls


def register(cls: type[Link]) -> type[Link]:
    """Class decorator: make a link model available under the name its ``Params`` declare."""
    if not cls.model:
        raise ValueError(f"{cls.__qualname__}.Params has no model name (model: Literal['name'] = 'name')")
    return LINKS.register(cls.model)(cls)


def available() -> dict[str, type[Link]]:
    """All link models by name: the built-in ones, registered ones, installed packages' entry points."""
    return {name: _checked(name, cls) for name, cls in LINKS.available().items()}


def get(model: str) -> type[Link]:
    return _checked(model, LINKS.get(model))


def link_params(model: str, **values) -> LinkParams:
    """The parameters of a ``model`` link: its own defaults, replaced by ``values``."""
    return get(model).Params(**values)


def make_link(params: LinkParams) -> Link:
    """The link of one device, by ``params.model``."""
    return get(params.model)(params)
