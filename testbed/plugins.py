"""Registries of things found by name: the project's built-ins, registrations, installed packages.

A registry of one kind (datasets, models) maps a name to an object. Names come
from three places, later ones winning: the project's own table of
``"module:attribute"`` targets (imported only when asked for), :meth:`Registry.register`
calls, and the entry points that installed packages declare in their pyproject.toml::

    [project.entry-points."testbed.models"]
    mynet = "mypackage.nets:make_mynet"

Listing names imports nothing; :meth:`Registry.get` imports the one asked for. Any
failure is one line of the registry's error type.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points


class Registry:
    def __init__(self, kind: str, group: str, builtin: Mapping[str, str], error: type[Exception]):
        self.kind = kind  # "dataset", "model": how messages name an entry
        self.group = group  # the entry-point group of installed packages
        self._builtin = dict(builtin)
        self._registered: dict[str, object] = {}
        self._error = error

    def register(self, name: str) -> Callable:
        """Decorator: make the decorated object available under ``name``."""

        def add(obj):
            self._registered[name] = obj
            return obj

        return add

    def _entry_points(self) -> dict:
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        return sorted({*self._builtin, *self._registered, *self._entry_points()})

    def unknown(self, name: str) -> str:
        """The one-line message for a name nobody registered."""
        return f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}"

    def get(self, name: str):
        installed = self._entry_points()
        if name in installed:
            ep = installed[name]
            try:
                return ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken package is the user's one-line error
                raise self._error(f"{self.kind} {name!r}: entry point {ep.value} cannot be loaded ({exc})") from None
        if name in self._registered:
            return self._registered[name]
        if name in self._builtin:
            module, _, attr = self._builtin[name].partition(":")
            return getattr(importlib.import_module(module), attr)
        raise self._error(self.unknown(name))
