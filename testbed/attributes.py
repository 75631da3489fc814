"""A fleet attribute: what one device's value must be, and the forms a config gives it in.

A :class:`Rule` says what one device's value of an attribute must be (``number(gt=0)``,
``whole(ge=1)``, ``one_of("bpsk", "qpsk")``, ``auto_or_whole()``). It is written once, as
pydantic metadata on the field (``Annotated[float, number(gt=0)]``), and that one rule
checks a link model's parameters, a config's values, a device's drawn value and a trace
cell, and describes the attribute in the docs.

In a config an attribute takes one of these forms (:func:`forms`), checked when the
config is loaded:

- a fixed value: every device has it;
- a list: device ``i`` takes item ``i mod len``;
- a distribution drawn per device: ``{uniform: [low, high]}``, ``{normal: [mean, std]}``,
  ``{lognormal: [mu, sigma]}`` (of the underlying normal), ``{choice: [...], weights: [...]}``
  (only ``choice`` for names).

:func:`draw` gives one device's value, keyed by the attribute and the device id.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, core_schema

from testbed.rng import derive_rng

AUTO = "auto"


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _text(x: float) -> str:
    return f"{x:g}"


class Rule:
    """What one device's value of an attribute must be; pydantic metadata, so fields validate with it."""

    def __init__(self, kind: str, text: str, accept: Callable[[Any], bool], coerce: Callable[[Any], Any], parse: Callable[[str], Any]):
        self.kind = kind  # "number", "whole", "name" or "auto_or_whole"
        self.text = text  # what the value must be: "a number > 0"
        self._accept, self._coerce, self._parse = accept, coerce, parse

    @property
    def numeric(self) -> bool:
        """Whether a continuous distribution can give its values."""
        return self.kind in ("number", "whole")

    def problem(self, value) -> str | None:
        """What is wrong with ``value``, or None."""
        try:
            return None if self._accept(value) else f"must be {self.text}"
        except TypeError:
            return f"must be {self.text}"

    def check(self, value):
        """``value`` in the type the attribute stores; ValueError("must be ...") if it breaks the rule."""
        problem = self.problem(value)
        if problem:
            raise ValueError(problem)
        return self._coerce(value)

    def from_text(self, text: str):
        """A value from a trace cell (stripped); ValueError("'x' is not a number") if it cannot be one."""
        return self._parse(text)

    def __get_pydantic_core_schema__(self, source, handler):
        return core_schema.no_info_plain_validator_function(self._validate)

    def _validate(self, value):
        try:
            return self.check(value)
        except ValueError as exc:
            raise _error(f"{value!r} {exc}") from None

    def __repr__(self) -> str:
        return f"Rule({self.text!r})"


def _error(message: str) -> PydanticCustomError:
    # The message goes in as context: braces in it ({uniform: ...}) are not a template.
    return PydanticCustomError("fleet_attribute", "{message}", {"message": message})


def _parse_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def _parse_whole(text: str, expected: str = "a whole number") -> int:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not {expected}") from None
    if not (math.isfinite(value) and value.is_integer()):
        raise ValueError(f"{text!r} is not a whole number")
    return int(value)


def number(*, gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None) -> Rule:
    """A finite number within the given bounds."""
    low = f"[{_text(ge)}" if ge is not None else f"({_text(gt)}" if gt is not None else None
    high = f"{_text(le)}]" if le is not None else f"{_text(lt)})" if lt is not None else None
    if low and high:
        text = f"a number in {low}, {high}"
    elif low:
        text = f"a number {'>=' if ge is not None else '>'} {low[1:]}"
    elif high:
        text = f"a number {'<=' if le is not None else '<'} {high[:-1]}"
    else:
        text = "a finite number"

    def accept(v) -> bool:
        return (
            _is_number(v)
            and math.isfinite(v)
            and (gt is None or v > gt)
            and (ge is None or v >= ge)
            and (lt is None or v < lt)
            and (le is None or v <= le)
        )

    return Rule("number", text, accept, float, _parse_number)


def whole(*, ge: int = 0, le: int | None = None) -> Rule:
    """A whole number >= ``ge`` (and <= ``le`` if given; 4.0 is 4)."""

    def accept(v) -> bool:
        return _is_number(v) and math.isfinite(v) and float(v).is_integer() and v >= ge and (le is None or v <= le)

    text = f"a whole number >= {ge}" if le is None else f"a whole number in [{ge}, {le}]"
    return Rule("whole", text, accept, int, _parse_whole)


def one_of(*names: str) -> Rule:
    """One of ``names``."""
    return Rule("name", "one of " + ", ".join(names), lambda v: isinstance(v, str) and v in names, str, str)


def on_off() -> Rule:
    """A schedule: a string of 0 and 1 (one per round, cycled), at least one character."""

    def accept(v) -> bool:
        return isinstance(v, str) and len(v) > 0 and set(v) <= {"0", "1"}

    def parse(text: str) -> str:
        if not accept(text):
            raise ValueError(f"{text!r} is not a string of 0 and 1")
        return text

    return Rule("name", "a string of 0 and 1, one per round (quoted in YAML: '0101')", accept, str, parse)


def auto_or_whole(*, ge: int = 1, le: int | None = None) -> Rule:
    """The word "auto" or a whole number >= ``ge`` (and <= ``le`` if given)."""
    count = whole(ge=ge, le=le)

    def parse(text: str):
        return AUTO if text == AUTO else _parse_whole(text, "a whole number or 'auto'")

    return Rule(
        "auto_or_whole",
        f"'auto' or {count.text}",
        lambda v: v == AUTO if isinstance(v, str) else count.problem(v) is None,
        lambda v: v if v == AUTO else int(v),
        parse,
    )


class Measured:
    """Field metadata: a trace of measured devices must give this attribute (for the models that have it)."""

    def __repr__(self) -> str:
        return "MEASURED"


MEASURED = Measured()


def rule_of(field: FieldInfo) -> Rule:
    """The rule in a field's metadata (of the field itself, or of its config forms)."""
    for item in field.metadata:
        if isinstance(item, Rule):
            return item
        if isinstance(item, _Forms):
            return item.rule
    raise TypeError(f"field {field} has no Rule")


def is_measured(field: FieldInfo) -> bool:
    return any(isinstance(item, Measured) for item in field.metadata)


# ---- distributions -------------------------------------------------------------------


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Uniform(_Form):
    uniform: tuple[float, float]  # low, high

    def check(self, rule: Rule) -> None:
        low, high = self.uniform
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"uniform: [{low}, {high}] must be finite")
        if low > high:
            raise ValueError(f"uniform: low {low} is above high {high}")

    def draw(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(*self.uniform))


class Normal(_Form):
    normal: tuple[float, float]  # mean, std

    def check(self, rule: Rule) -> None:
        mean, std = self.normal
        if not (math.isfinite(mean) and math.isfinite(std)):
            raise ValueError(f"normal: [{mean}, {std}] must be finite")
        if std < 0:
            raise ValueError(f"normal: std {std} must be >= 0")

    def draw(self, rng: np.random.Generator) -> float:
        return float(rng.normal(*self.normal))


class LogNormal(_Form):
    lognormal: tuple[float, float]  # mu, sigma of the underlying normal

    def check(self, rule: Rule) -> None:
        mu, sigma = self.lognormal
        if not (math.isfinite(mu) and math.isfinite(sigma)):
            raise ValueError(f"lognormal: [{mu}, {sigma}] must be finite")
        if sigma < 0:
            raise ValueError(f"lognormal: sigma {sigma} must be >= 0")

    def draw(self, rng: np.random.Generator) -> float:
        return float(rng.lognormal(*self.lognormal))


class Choice(_Form):
    choice: list[Any]
    weights: list[float] | None = None

    def check(self, rule: Rule) -> None:
        """Check the values with ``rule`` and keep them in its type (4.0 -> 4 for a whole number)."""
        if not self.choice:
            raise ValueError("choice needs at least one value")
        for i, item in enumerate(self.choice):
            problem = rule.problem(item)
            if problem:
                raise ValueError(f"choice item {i}: {item!r} {problem}")
        self.choice = [rule.check(item) for item in self.choice]
        if self.weights is None:
            return
        if len(self.weights) != len(self.choice):
            raise ValueError(f"choice has {len(self.choice)} values but {len(self.weights)} weights")
        w = np.asarray(self.weights, dtype=np.float64)
        if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
            raise ValueError(f"weights must be non-negative with a positive sum, got {self.weights}")

    def draw(self, rng: np.random.Generator):
        if self.weights is None:
            return self.choice[int(rng.integers(len(self.choice)))]
        w = np.asarray(self.weights, dtype=np.float64)
        return self.choice[int(rng.choice(len(w), p=w / w.sum()))]


DISTRIBUTIONS: dict[str, type[_Form]] = {"uniform": Uniform, "normal": Normal, "lognormal": LogNormal, "choice": Choice}
SHAPES = {"uniform": "[low, high]", "normal": "[mean, std]", "lognormal": "[mu, sigma]", "choice": "[values...] (weights: [...])"}


class _Forms:
    """Pydantic metadata: a fixed value, a list of values or a distribution, checked with ``rule``."""

    def __init__(self, rule: Rule):
        self.rule = rule

    def __get_pydantic_core_schema__(self, source, handler):
        return core_schema.no_info_plain_validator_function(self._validate)

    def _expected(self) -> str:
        if self.rule.numeric:
            forms = ", ".join("{" + f"{name}: {shape}" + "}" for name, shape in SHAPES.items())
            return f"expected a value, a list with one value per device, or a distribution ({forms})"
        return "expected a value, a list with one value per device, or {choice: [...]}"

    def _validate(self, value):
        rule = self.rule
        if isinstance(value, (list, tuple)):
            if not value:
                raise _error("the list of values is empty")
            for i, item in enumerate(value):
                problem = rule.problem(item)
                if problem:
                    raise _error(f"list item {i}: {item!r} {problem}")
            return [rule.check(item) for item in value]
        if isinstance(value, _Form):
            value = value.model_dump()
        if isinstance(value, dict):
            return self._distribution(value)
        problem = rule.problem(value)
        if problem:
            raise _error(f"{value!r} {problem}")
        return rule.check(value)

    def _distribution(self, value: dict):
        names = [name for name in DISTRIBUTIONS if name in value]
        if len(names) != 1 or (not self.rule.numeric and names != ["choice"]):
            raise _error(self._expected())
        name = names[0]
        try:
            form = DISTRIBUTIONS[name].model_validate(value)
        except ValidationError:
            raise _error(f"{name} needs {SHAPES[name]}, got {value}") from None
        try:
            form.check(self.rule)
        except ValueError as exc:
            raise _error(str(exc)) from None
        return form


def forms(rule: Rule) -> Any:
    """The config type of an attribute with ``rule``: a value, a list or a distribution."""
    return Annotated[Any, _Forms(rule)]


def draw(spec: Any, rule: Rule, seed: int, key: str, device_id: int, position: int) -> tuple[Any, bool]:
    """One device's value of a checked attribute ``spec``: (value, whether it was drawn).

    A draw uses ``derive_rng(seed, "fleet", key, device_id)``, so adding devices keeps the
    earlier devices' values; a whole number drawn from a continuous distribution is rounded.
    The value is not checked here: a draw can fall outside the rule (the caller says which
    device drew what).
    """
    if isinstance(spec, list):
        return spec[position % len(spec)], False
    if not isinstance(spec, _Form):
        return spec, False
    value = spec.draw(derive_rng(seed, "fleet", key, device_id))
    if rule.kind == "whole" and not isinstance(spec, Choice) and math.isfinite(value):
        value = round(value)
    return value, True
