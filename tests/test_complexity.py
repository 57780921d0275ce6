"""Complexity measures of an Elman network (theory.complexity) against independent computations: the path norm
against an explicit enumeration of every path of the unrolled network, the norm products and the spectral
complexity against numpy's SVD, the margins against a loop."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.complexity import frobenius_product, margin_percentile, margins, path_norm, spectral_complexity, \
    spectral_product
from theory.elman import ElmanWeights


def _weights(k, d_x, d_y, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: scale * torch.randn(*s, generator=g, dtype=torch.float64)
    return ElmanWeights(r(k, k), r(k, d_x), r(k), r(d_y, k), r(d_y), "tanh")


def _paths_squared(w: ElmanWeights, T: int) -> float:
    """Sum over every path of the product of its squared weights, by enumeration.

    A path enters at step t (1..T) through an input coordinate i and U[j_t, i] (or through the bias b[j_t]),
    follows W[j_{s+1}, j_s] for s = t..T-1, and leaves through V[o, j_T]; the read-out bias c[o] is a path alone.
    """
    W, U, b, V, c = (a.numpy() for a in (w.W, w.U, w.b, w.V, w.c))
    k, d_x = U.shape
    total = float((c ** 2).sum())
    for t in range(1, T + 1):
        steps = T - t
        for chain in itertools.product(range(k), repeat=steps + 1):  # j_t, ..., j_T
            through = np.prod([W[chain[s + 1], chain[s]] ** 2 for s in range(steps)]) if steps else 1.0
            entry = sum(U[chain[0], i] ** 2 for i in range(d_x)) + b[chain[0]] ** 2
            total += float(entry * through * (V[:, chain[-1]] ** 2).sum())
    return total


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 3), d_x=st.integers(1, 3), d_y=st.integers(1, 3), T=st.integers(1, 4),
       scale=st.sampled_from([0.3, 1.0, 2.0]), seed=st.integers(0, 10_000))
def test_path_norm_equals_the_enumeration_of_paths(k, d_x, d_y, T, scale, seed):
    w = _weights(k, d_x, d_y, seed, scale)
    assert path_norm(w, T) ** 2 == pytest.approx(_paths_squared(w, T), rel=1e-10)


@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 6), d_x=st.integers(1, 4), T=st.integers(1, 12), seed=st.integers(0, 10_000),
       gamma=st.floats(0.01, 10.0))
def test_norm_products_and_spectral_complexity_against_numpy(k, d_x, T, seed, gamma):
    w = _weights(k, d_x, 3, seed)
    op = lambda a: np.linalg.svd(a.numpy(), compute_uv=False)[0]
    fro = lambda a: np.sqrt((a.numpy() ** 2).sum())
    assert spectral_product(w, T) == pytest.approx(math.log(op(w.U) * op(w.W) * op(w.V)), abs=1e-9)
    assert spectral_product(w, T, unrolled=True) == pytest.approx(
        math.log(op(w.U)) + (T - 1) * math.log(op(w.W)) + math.log(op(w.V)), abs=1e-9)
    assert frobenius_product(w) == pytest.approx(math.log(fro(w.U) * fro(w.W) * fro(w.V)), abs=1e-9)
    # the chain U, W (T - 1 times), V written out layer by layer
    chain = [w.U.numpy()] + [w.W.numpy()] * (T - 1) + [w.V.numpy()]
    prod = np.prod([np.linalg.svd(a, compute_uv=False)[0] for a in chain])
    ratios = sum((np.linalg.norm(a, axis=1).sum() / np.linalg.svd(a, compute_uv=False)[0]) ** (2 / 3) for a in chain)
    assert spectral_complexity(w, T, gamma) == pytest.approx(math.log(prod * ratios ** 1.5 / gamma), rel=1e-9,
                                                             abs=1e-9)


def test_margins_and_their_percentile_by_hand():
    f = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.5, 4.0], [5.0, 0.0, 0.0]])
    y = np.array([0, 1, 0, 0])
    # by hand: 2 - 1, 3 - 1, 1 - 4, 5 - 0
    np.testing.assert_allclose(margins(f, y), [1.0, 2.0, -3.0, 5.0])
    # the correctly classified margins are 1, 2, 5: their median is 2, their 0th percentile 1
    assert margin_percentile(f, y, 50) == pytest.approx(2.0) and margin_percentile(f, y, 0) == pytest.approx(1.0)
    assert math.isnan(margin_percentile(f[2:3], y[2:3]))
    with pytest.raises(ValueError, match="f, y: expected outputs"):
        margins(f[:, :1], y)


def test_bad_arguments_are_named():
    w = _weights(2, 1, 2, 0)
    with pytest.raises(ValueError, match="T"):
        path_norm(w, 0)
    with pytest.raises(ValueError, match="gamma: expected a finite margin > 0"):
        spectral_complexity(w, 3, 0.0)
