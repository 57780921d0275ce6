"""The printed forms of a PruneResult: a repr of one line whatever the network's width, and summary(), a table whose
rows are the layer-directions with the values the result holds."""

import numpy as np
import pytest
import torch

from pruning import spectral_prune
from pruning.criteria import prune_by_criterion


def _stack(m: int, seed: int = 0):
    torch.manual_seed(seed)
    rnn = torch.nn.LSTM(3, m, num_layers=2, batch_first=True, bidirectional=True)
    return rnn, torch.nn.Linear(2 * m, 4), torch.randn(40, 9, 3)


@pytest.mark.parametrize("m", [16, 256])
def test_the_repr_is_one_line_of_bounded_length_whatever_the_width(m):
    rnn, readout, x = _stack(m)
    res = spectral_prune((rnn, readout), x, k=[m // 2, m // 4])
    text = repr(res)
    assert "\n" not in text and len(text) < 400  # the dataclass repr printed every A_J: over 100 kB at m = 256
    assert f"{m}->{m // 2}, {m}->{m // 4}" in text and "x 2 directions" in text
    for lp in res.layers:
        one = repr(lp)
        assert "\n" not in one and len(one) < 400 and f"m={m} -> k={lp.k}" in one
        assert f"A=array({m}, {lp.k})" in one


def _parse(table: str):
    lines = table.splitlines()
    header = lines[0].split("  ")
    rows = [line.split() for line in lines[1:] if line.strip()[:1].isdigit()]
    return [h.strip() for h in header if h.strip()], rows


def test_the_summary_has_one_row_per_layer_direction_with_the_results_values():
    rnn, readout, x = _stack(24, seed=1)
    res = spectral_prune((rnn, readout), x, k=[12, 6])
    header, rows = _parse(res.summary())
    assert header[:5] == ["layer", "dir", "m", "k", "lambda"] and header[-1] == "N(lambda) (S7)"
    assert len(rows) == len(res.layers) == 4
    keys = ["input", "recurrent", "readout", "objective"]
    for row, lp in zip(rows, res.layers):
        assert [int(v) for v in row[:4]] == [lp.layer, lp.direction, lp.m, lp.k]
        values = [float(v) for v in row[4:]]
        want = [lp.lam] + [lp.losses[key] for key in keys] + [lp.dof]
        np.testing.assert_allclose(values, want, rtol=5e-3)  # printed to 3-4 significant digits
    assert f"theta={res.theta:g}" in res.summary() and "covariance_mode=sequential" in res.summary()
    for stage in res.timings:
        assert stage in res.summary().splitlines()[-1]


def test_a_criterion_result_prints_dashes_for_what_it_does_not_compute():
    rnn, readout, x = _stack(12, seed=2)
    res = prune_by_criterion((rnn, readout), x, 4, method="mean_activation")
    _, rows = _parse(res.summary())
    assert len(rows) == 4 and all(row[5:] == ["-"] * 5 for row in rows)
    assert "theta=-" in res.summary() and "nan" not in res.summary() + repr(res)
    assert "method='mean_activation'" in repr(res)


def test_an_error_target_result_names_its_search():
    torch.manual_seed(3)
    rnn, readout = torch.nn.RNN(3, 20, batch_first=True), torch.nn.Linear(20, 2)
    res = spectral_prune((rnn, readout), torch.randn(60, 8, 3), target=0.05)
    assert f"search=(k={res.search['k']}" in repr(res)
    assert f"error target 0.05 (measured): k={res.search['k']}" in res.summary()
