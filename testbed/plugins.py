"""Named plug-ins: the project's own classes, and any installed package's, through entry points.

Every extension point of the testbed (strategies, scenarios, link models,
datasets, models) is a :class:`Registry`: a name -> class table filled from
three places, in this order (a later one wins):

1. the project's built-ins, given as ``"module:Class"`` and imported when first used;
2. classes registered in this process with :meth:`Registry.register`;
3. entry points of installed packages, group ``testbed.<kind>``, e.g.::

       [project.entry-points."testbed.scenarios"]
       myscenario = "mypackage.scenario:MyScenario"

The entry point's name is the name configs use.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str, base: type, builtin: dict[str, str]):
        self.kind = kind  # "scenario", "strategy": how messages name one
        self.group = group  # the entry-point group, "testbed.scenarios"
        self.base = base
        self.builtin = dict(builtin)
        self._registered: dict[str, type[T]] = {}

    def register(self, cls: type[T], name: str | None = None) -> type[T]:
        """Make ``cls`` available under ``name`` (default ``cls.name``); usable as a class decorator."""
        name = name or getattr(cls, "name", "")
        if not name:
            raise ValueError(f"{cls.__qualname__} has no name")
        self._check(cls, name)
        self._registered[name] = cls
        return cls

    def _check(self, cls, where: str) -> None:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"{where} is not a {self.base.__name__} subclass")

    def _load(self, target: str) -> type[T]:
        module, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        self._check(cls, target)
        return cls

    def available(self) -> dict[str, type[T]]:
        found: dict[str, type[T]] = {}
        for name, target in self.builtin.items():
            try:
                found[name] = self._load(target)
            except ModuleNotFoundError as exc:  # a built-in left out of this checkout
                if exc.name != target.partition(":")[0]:
                    raise
        found.update(self._registered)
        for ep in entry_points(group=self.group):
            cls = ep.load()
            self._check(cls, f"entry point {ep.name} = {ep.value}")
            found[ep.name] = cls
        return found

    def names(self) -> list[str]:
        return sorted(self.available())

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; KeyError with a one-line message listing the known names."""
        if name in self._registered:
            return self._registered[name]
        if name in self.builtin:
            return self._load(self.builtin[name])
        found = self.available()
        if name not in found:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(found))}")
        return found[name]
