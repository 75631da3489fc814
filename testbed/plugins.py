"""Registries of things found by name: the project's built-ins, registrations, installed packages.

Every extension point of the testbed (strategies, scenarios, link models,
datasets, models) is a :class:`Registry` mapping a name to an object (a class,
or a factory). Names come from three places, later ones winning: the
project's own table of ``"module:attribute"`` targets (imported only when asked
for), :meth:`Registry.register` calls, and the entry points that installed
packages declare in their pyproject.toml::

    [project.entry-points."testbed.scenarios"]
    myscenario = "mypackage.scenario:MyScenario"

The entry point's name is the name configs use. Listing names imports nothing;
:meth:`Registry.get` imports the one asked for. Any failure is one line of the
registry's error type.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points


class Registry:
    def __init__(self, kind: str, group: str, builtin: Mapping[str, str], error: type[Exception] = KeyError,
                 base: type | None = None):
        self.kind = kind  # "dataset", "scenario": how messages name an entry
        self.group = group  # the entry-point group of installed packages
        self._builtin = dict(builtin)
        self._registered: dict[str, object] = {}
        self._error = error
        self._base = base  # entries must be subclasses of it (None: any object)
        self._scanned: tuple | None = None  # (sys.path, entry points) of the last scan

    def register(self, name: str) -> Callable:
        """Decorator: make the decorated object available under ``name``."""

        def add(obj):
            self._check(name, obj)
            self._registered[name] = obj
            return obj

        return add

    def _check(self, name: str, obj) -> None:
        if self._base is not None and not (isinstance(obj, type) and issubclass(obj, self._base)):
            raise self._error(f"{self.kind} {name!r}: {obj!r} is not a {self._base.__name__} subclass")

    def _entry_points(self) -> dict:
        # Scanning the installed packages costs milliseconds and a fleet asks once per device:
        # scan again only when the import path changed.
        key = tuple(sys.path)
        if self._scanned is None or self._scanned[0] != key:
            self._scanned = (key, {ep.name: ep for ep in entry_points(group=self.group)})
        return self._scanned[1]

    def names(self) -> list[str]:
        """The built-ins in the project's order, then registered and installed ones."""
        return list(dict.fromkeys([*self._builtin, *self._registered, *self._entry_points()]))

    def builtin_names(self) -> list[str]:
        """The project's own entries, in its order (what the project's docs describe)."""
        return list(self._builtin)

    def unknown(self, name: str) -> str:
        """The one-line message for a name nobody registered."""
        return f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}"

    def get(self, name: str):
        installed = self._entry_points()
        if name in installed:
            ep = installed[name]
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken package is the user's one-line error
                raise self._error(f"{self.kind} {name!r}: entry point {ep.value} cannot be loaded ({exc})") from None
        elif name in self._registered:
            obj = self._registered[name]
        elif name in self._builtin:
            module, _, attr = self._builtin[name].partition(":")
            obj = getattr(importlib.import_module(module), attr)
        else:
            raise self._error(self.unknown(name))
        self._check(name, obj)
        return obj

    def available(self) -> dict[str, object]:
        """Every entry, loaded (for listings)."""
        return {name: self.get(name) for name in self.names()}
