"""One rule per attribute: a link model's parameters, a config section and a trace cell accept the same values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from testbed.attributes import Choice, Normal, Uniform, draw, number, rule_of, whole
from testbed.links import available, get, link_params
from testbed.links.schema import link_section

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2.0, 2.0),
    st.integers(-5, 5000),
    st.sampled_from(["auto", "bpsk", "16qam", "qam", "", True, False, None, 2.5, 0, 1]),
)


def accepts(build) -> bool:
    try:
        build()
    except ValidationError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(data=st.data(), value=values)
def test_parameters_config_and_trace_take_the_same_values(data, value):
    model = data.draw(st.sampled_from(list(available())))
    fields = {k: f for k, f in get(model).Params.model_fields.items() if k != "model"}
    name = data.draw(st.sampled_from(sorted(fields)))
    rule = rule_of(fields[name])
    ok = rule.problem(value) is None
    assert accepts(lambda: link_params(model, **{name: value})) == ok
    assert accepts(lambda: link_section(model=model, **{name: value})) == ok
    assert accepts(lambda: link_section(model=model, **{name: [value, value]})) == ok
    if ok:
        stored = link_params(model, **{name: value}).model_dump()[name]
        assert stored == rule.check(value) and type(stored) is type(rule.check(value))
        cell = repr(stored) if isinstance(stored, float) else str(stored)
        assert rule.check(rule.from_text(cell)) == stored  # what devices.csv writes reads back exactly


def test_rule_texts():
    assert number(gt=0).text == "a number > 0" and number(ge=0, lt=1).text == "a number in [0, 1)"
    assert number(gt=0, le=1).text == "a number in (0, 1]" and number().text == "a finite number"
    assert whole(ge=1).text == "a whole number >= 1"
    assert whole(ge=1).check(4.0) == 4 and isinstance(whole(ge=1).check(np.int64(3)), int)
    for bad in (True, 1.5, "4", math.inf):
        assert whole(ge=1).problem(bad) == "must be a whole number >= 1"


def test_draws_are_keyed_by_attribute_and_device():
    rule = number()
    spec = Uniform(uniform=(0.0, 1.0))
    a = [draw(spec, rule, 7, "link.snr_db", device, device)[0] for device in range(5)]
    assert a == [draw(spec, rule, 7, "link.snr_db", device, 99)[0] for device in range(5)]  # not by position
    assert a != [draw(spec, rule, 7, "link.ber", device, device)[0] for device in range(5)]
    assert draw([1.0, 2.0], rule, 7, "k", 10, 3) == (2.0, False)  # a list: by position
    assert draw(Normal(normal=(2.0, 0.0)), whole(), 0, "k", 0, 0) == (2, True)  # a count drawn: rounded
    weighted = [draw(Choice(choice=["a", "b"], weights=[0.0, 1.0]), rule, 0, "k", d, d)[0] for d in range(50)]
    assert set(weighted) == {"b"}


@pytest.mark.parametrize("spec", [{"uniform": [0, 0]}, {"normal": [3, 0]}, {"lognormal": [0, 0]}])
def test_degenerate_distributions_are_fine(spec):
    assert link_section(snr_db=spec).snr_db is not None
