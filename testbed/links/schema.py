"""The one link schema: the link models' parameters, and the config section and tables derived from them.

Each link model's ``Params`` is the only place its parameters are written (name, rule,
default, meaning). From them come:

- :data:`LinkConfig`, the type of a config's ``fleet.link``: a section per link model (a
  discriminated union on ``model``), each parameter a value, a per-device list or a
  distribution (:mod:`testbed.attributes`), checked when the config is loaded. A fleet
  of several models (``model: [ideal, awgn]`` or ``{choice: [...]}``) takes the parameters
  of every model in the mix; each device uses those of its own model;
- :func:`parameters`, which the fleet's trace and ``devices.csv`` columns come from;
- :func:`options_table`, the docs' tables.

A parameter name means one thing across link models: two models that both have ``snr_db``
give it the same rule and default (the meaning may be worded for each).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, SerializeAsAny, TypeAdapter, ValidationError, create_model
from pydantic_core import InitErrorDetails, PydanticCustomError

from testbed.attributes import Rule, forms, is_measured, one_of, rule_of
from testbed.links.base import Link, LinkParams
from testbed.links.registry import available

DEFAULT_MODEL = "awgn"


@dataclass(frozen=True)
class Parameter:
    name: str
    rule: Rule
    default: Any
    description: str
    measured: bool  # a trace of measured devices gives it (for the models that have it)
    models: tuple[str, ...]  # the link models that have it


def parameters(classes: tuple[type[Link], ...] | None = None) -> dict[str, Parameter]:
    """The parameters of the link models ``classes`` (default: every one available), shared ones first."""
    classes = tuple(available().values()) if classes is None else classes
    found: dict[str, Parameter] = {}
    for cls in classes:
        for name, field in cls.Params.model_fields.items():
            if name == "model":
                continue
            rule = rule_of(field)
            known = found.get(name)
            if known is None:
                found[name] = Parameter(name, rule, field.default, field.description or "", is_measured(field), (cls.model,))
                continue
            if (known.rule.text, known.default, known.measured) != (rule.text, field.default, is_measured(field)):
                raise TypeError(
                    f"link models {known.models[0]} and {cls.model} both have a parameter {name!r}, "
                    "with different rules or defaults"
                )
            found[name] = Parameter(name, known.rule, known.default, known.description, known.measured, (*known.models, cls.model))
    return found


class LinkSection(BaseModel):
    """A config's ``fleet.link``: the fleet's link models and their parameters (see :data:`LinkConfig`)."""

    model_config = ConfigDict(extra="forbid")
    models: ClassVar[tuple[str, ...]] = ()  # the link models the section's ``model`` names


@lru_cache(maxsize=None)
def section_class(classes: tuple[type[Link], ...]) -> type[LinkSection]:
    """The section type of a fleet of the link models ``classes`` (one, or a mix)."""
    names = tuple(cls.model for cls in classes)
    fields: dict[str, Any] = {"model": (forms(one_of(*names)), names[0] if len(names) == 1 else ...)}
    for name, p in parameters(classes).items():
        fields[name] = (forms(p.rule), Field(p.default, description=p.description))
    section = create_model("LinkSection_" + "_".join(names), __base__=LinkSection, **fields)
    section.models = names
    return section


def _refuse(loc: tuple, message: str, value) -> ValidationError:
    error = PydanticCustomError("link_config", "{message}", {"message": message})
    return ValidationError.from_exception_data("fleet.link", [InitErrorDetails(type=error, loc=loc, input=value)])


def _model_names(spec) -> list[str]:
    """The link models a section's ``model`` names, in order, each once."""
    if isinstance(spec, Mapping) and "choice" in spec and set(spec) <= {"choice", "weights"}:
        items, loc = spec["choice"], ("model", "choice")
    elif isinstance(spec, (list, tuple)):
        items, loc = spec, ("model",)
    else:
        items, loc = [spec], ("model",)
    if not isinstance(items, (list, tuple)) or not items:
        raise _refuse(loc, "expected at least one link model name", spec)
    models = available()
    for item in items:
        if not isinstance(item, str):
            raise _refuse(loc, f"expected a link model name, a list of names (one per device) or {{choice: [...]}}, got {item!r}", spec)
        if item not in models:
            raise _refuse(loc, f"unknown link model {item!r}; known: {', '.join(models)}", spec)
    return list(dict.fromkeys(items))


def _parse(value) -> LinkSection:
    if isinstance(value, LinkSection):
        return value
    if not isinstance(value, Mapping):
        raise _refuse((), f"expected a mapping of link parameters, got {value!r}", value)
    names = _model_names(value.get("model", DEFAULT_MODEL))
    models = available()
    section = section_class(tuple(models[name] for name in names))
    for key in value:
        if key not in section.model_fields:
            owners = [name for name, cls in models.items() if key in cls.Params.model_fields]
            whose = f"link model {names[0]}" if len(names) == 1 else "link models " + ", ".join(names)
            hint = f"; {key} is a parameter of {', '.join(owners)}" if owners else ""
            own = [name for name in section.model_fields if name != "model"]
            raise _refuse((key,), f"not a parameter of {whose} (parameters: {', '.join(own)}){hint}", value[key])
    return section.model_validate(dict(value))


# The type of a config's fleet.link: validated by _parse, dumped as the section it is.
LinkConfig = Annotated[SerializeAsAny[LinkSection], PlainValidator(_parse)]
_ADAPTER = TypeAdapter(LinkConfig)


def link_section(**values) -> LinkSection:
    """A ``fleet.link`` section from keyword values, checked as a config's (``model`` defaults to awgn)."""
    return _ADAPTER.validate_python(values)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def options_table(cls: type[LinkParams]) -> str:
    """A markdown table of a model's own parameters (``LinkParams``: the ones every model shares)."""
    shared = () if cls is LinkParams else LinkParams.model_fields
    rows = ["| parameter | value | default | meaning |", "|---|---|---|---|"]
    for name, field in cls.model_fields.items():
        if name == "model" or name in shared:
            continue
        default = field.default if isinstance(field.default, str) else f"{field.default:g}"
        rows.append(f"| `{name}` | {_cell(rule_of(field).text)} | `{default}` | {_cell(field.description or '')} |")
    return "\n".join(rows)
