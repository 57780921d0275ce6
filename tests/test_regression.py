"""Reorganising or speeding up the code must not change results: the cases of ``tests/regression_cases.py`` against
the outputs recorded in ``tests/data/regression_fixture.json`` (which names its commit; the history of the fixture is
in ``regression_cases.py``).

Integers, unit sets and method labels must be equal. Floats of the float64 cases agree to 1e-9 relative (the same
operations in the same order give the same bits; the tolerance only allows a reordered float64 sum). The reproduce
case trains float32 networks and forms float32 Gram products, whose last bits depend on the machine's BLAS kernel; in
its tiny, nearly singular covariances that moves N(lambda) and the information losses by up to 2.9% relative
(measured between the machine that recorded the fixture and a CI machine, with equal units and accuracies), so its
floats are compared at 5e-2."""

import json
import math
from pathlib import Path

import pytest

from regression_cases import compute_cases

RTOL = {"selection": 1e-9, "prune": 1e-9, "bounds": 1e-9, "reproduce": 5e-2}


def _compare(before, after, path="cases", rtol=1e-9):
    if isinstance(before, dict):
        assert isinstance(after, dict) and set(before) == set(after), f"{path}: keys {set(before) ^ set(after)}"
        for key in before:
            _compare(before[key], after[key], f"{path}.{key}", rtol)
    elif isinstance(before, list):
        assert isinstance(after, list) and len(before) == len(after), f"{path}: lengths differ"
        for i, (b, a) in enumerate(zip(before, after)):
            _compare(b, a, f"{path}[{i}]", rtol)
    elif isinstance(before, float) and not isinstance(after, str):
        if math.isinf(before) or math.isnan(before):
            assert str(before) == str(after), f"{path}: {before} != {after}"
        else:
            assert after == pytest.approx(before, rel=rtol, abs=1e-300), f"{path}: {before} != {after}"
    else:
        assert before == after, f"{path}: {before!r} != {after!r}"


@pytest.fixture(scope="module")
def cases():
    stored = json.loads((Path(__file__).parent / "data" / "regression_fixture.json").read_text())
    return stored["cases"], compute_cases()


@pytest.mark.parametrize("part", ["selection", "prune", "bounds", "reproduce"])
def test_outputs_are_those_recorded_in_the_fixture(cases, part):
    before, after = cases
    _compare(before[part], after[part], part, RTOL[part])
