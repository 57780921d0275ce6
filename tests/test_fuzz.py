"""Fuzzing the public API: every malformed input gives a clear error naming the argument, or a correct result.

Each case draws a well-formed call and one corruption of one argument. Allowed outcomes: ``ValueError`` or
``TypeError`` whose message starts with the name of the corrupted argument (or of the data it came from),
or a result that an independent float64 computation confirms. Anything else (``LinAlgError``,
``RuntimeError``, ``IndexError``, a silently wrong answer) fails.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pruning import information_loss, reconstruction_matrix, select_units, spectral_prune, time_mean_covariance
from pruning.compress import compress

CLEAN = (ValueError, TypeError)


def call(fn, names):
    """Run ``fn``; return (True, result) or (False, message) for a clean error naming one of ``names``."""
    try:
        return True, fn()
    except CLEAN as err:
        msg = str(err)
        assert any(msg.startswith(n) for n in names), f"error does not name {names}: {msg!r}"
        return False, msg


def psd(m, rank, seed, dead=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((max(rank, 1), m)) * (rank > 0)
    S = X.T @ X / max(rank, 1)
    if dead:
        S[:dead] = 0.0
        S[:, :dead] = 0.0
    return S


def reference_loss(S, J, lam):
    """L_A(J) = Tr(S) - Tr(S_FJ (S_JJ + lam I)^-1 S_JF), by a float64 least-squares solve (no inverse)."""
    J = list(J)
    SJJ = S[np.ix_(J, J)] + lam * np.eye(len(J))
    SFJ = S[:, J]
    return float(np.trace(S) - np.trace(SFJ @ np.linalg.solve(SJJ, SFJ.T)))


SIGMA_CORRUPTIONS = ["none", "nan", "inf", "nonsquare", "3d", "asymmetric", "negative_diag", "empty", "rank0",
                     "rank1", "dead", "half", "int", "noncontiguous", "list"]


def corrupt_sigma(S, how):
    if how == "nan":
        S = S.copy(); S[0, 0] = np.nan
    elif how == "inf":
        S = S.copy(); S[-1, 0] = S[0, -1] = np.inf
    elif how == "nonsquare":
        S = S[:-1]
    elif how == "3d":
        S = S[None]
    elif how == "asymmetric":
        S = S + np.triu(np.ones_like(S), 1)
    elif how == "negative_diag":
        S = S.copy(); S[0, 0] = -1.0
    elif how == "empty":
        S = np.zeros((0, 0))
    elif how == "rank0":
        S = np.zeros_like(S)
    elif how == "rank1":
        v = np.arange(1.0, S.shape[0] + 1); S = np.outer(v, v)
    elif how == "half":
        S = torch.tensor(S).half()
    elif how == "int":
        S = np.rint(S * 10).astype(np.int64); S = (S + S.T)  # symmetric integer matrix
        S = S + np.diag(np.abs(S).sum(1))  # diagonally dominant: positive definite
    elif how == "noncontiguous":
        S = np.asfortranarray(S)[:, ::1]
    elif how == "list":
        S = S.tolist()
    return S


@settings(max_examples=120, deadline=None)
@given(m=st.integers(1, 7), seed=st.integers(0, 10**6), how=st.sampled_from(SIGMA_CORRUPTIONS),
       k=st.integers(-1, 9), lam=st.sampled_from([1e-3, 1.0, 0.0, -1.0, float("nan"), float("inf")]),
       method=st.sampled_from(["greedy", "greedy_naive", "leverage", "energy", "random"]))
def test_select_units_and_losses(m, seed, how, k, lam, method):
    S0 = psd(m, min(m, 3), seed, dead=1 if how == "dead" else 0)
    S = corrupt_sigma(S0, how)
    ok, units = call(lambda: select_units(S, k, lam, method=method, seed=seed), ("sigma", "k", "lam", "seed"))
    if not ok:
        return
    # only well-formed arguments may succeed, and the result is a valid unit set
    # (a 1 x 1 matrix has no entry above the diagonal to make asymmetric)
    assert how in ("none", "rank0", "rank1", "dead", "half", "int", "noncontiguous", "list") or \
        (how == "asymmetric" and m == 1)
    assert 1 <= k <= np.asarray(S, dtype=float).shape[0] and np.isfinite(lam) and lam > 0
    Sf = np.asarray(torch.as_tensor(S).double() if how == "half" else S, dtype=np.float64)
    assert len(units) == k and len(set(units)) == k and all(0 <= u < Sf.shape[0] for u in units)
    # and the losses agree with an independent least-squares computation
    ok, loss = call(lambda: information_loss(S, units, lam), ("sigma", "J", "lam"))
    assert ok and loss == pytest.approx(reference_loss(Sf, units, lam), rel=1e-7, abs=1e-9 * (1 + np.trace(Sf)))
    ok, A = call(lambda: reconstruction_matrix(S, units, lam), ("sigma", "J", "lam"))
    assert ok and np.all(np.isfinite(A)) and A.shape == (Sf.shape[0], k)
    J = list(units)
    np.testing.assert_allclose(A @ (Sf[np.ix_(J, J)] + lam * np.eye(k)), Sf[:, J], rtol=1e-7,
                               atol=1e-9 * (1 + np.abs(Sf).max()))


@settings(max_examples=80, deadline=None)
@given(m=st.integers(2, 6), J=st.lists(st.integers(-2, 8), max_size=5), lam=st.sampled_from([1e-3, 0.0, -1e-3]),
       as_float=st.booleans())
def test_unit_sets(m, J, lam, as_float):
    S = psd(m, m, 1)
    Jarg = np.asarray(J, dtype=float) + 0.5 if as_float and J else J
    ok, loss = call(lambda: information_loss(S, Jarg, lam), ("J", "lam"))
    if ok:
        assert not as_float or not J
        assert lam > 0 and len(set(J)) == len(J) and all(0 <= j < m for j in J)
        if J:
            assert loss == pytest.approx(reference_loss(S, J, lam), rel=1e-8)


INPUT_CORRUPTIONS = ["none", "nan", "inf", "1d", "4d", "features", "empty", "emptyT", "half", "int", "complex",
                     "noncontiguous", "list_of_batches", "string", "none_data"]


def corrupt_inputs(x, how):
    if how == "nan":
        x = x.clone(); x[0, 0, 0] = float("nan")
    elif how == "inf":
        x = x.clone(); x[-1, -1, -1] = float("inf")
    elif how == "1d":
        x = x[0, :, 0]
    elif how == "4d":
        x = x[None]
    elif how == "features":
        x = torch.cat([x, x], dim=-1)
    elif how == "empty":
        x = x[:0]
    elif how == "emptyT":
        x = x[:, :0]
    elif how == "half":
        x = x.half()
    elif how == "int":
        x = (x * 3).round().to(torch.int64)
    elif how == "complex":
        x = x.to(torch.complex64)
    elif how == "noncontiguous":
        x = torch.cat([x, x], dim=-1)[..., ::2]
        assert not x.is_contiguous()
    elif how == "list_of_batches":
        x = [x[:2], (x[2:], None)]
    elif how == "string":
        x = "sequences"
    elif how == "none_data":
        x = None
    return x


@settings(max_examples=60, deadline=None)
@given(how=st.sampled_from(INPUT_CORRUPTIONS), cell=st.sampled_from(["RNN", "LSTM", "GRU"]),
       seed=st.integers(0, 1000), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_covariance_pass(how, cell, seed, dtype):
    torch.manual_seed(seed)
    rnn = getattr(torch.nn, cell)(2, 5, batch_first=True, dtype=dtype)
    x = torch.randn(4, 6, 2, generator=torch.Generator().manual_seed(seed))
    data = corrupt_inputs(x, how)
    ok, stats = call(lambda: time_mean_covariance(rnn, data, batch_size=3), ("batches", "data"))
    if not ok:
        assert how not in ("none", "half", "int", "noncontiguous", "list_of_batches")
        return
    assert how in ("none", "half", "int", "noncontiguous", "list_of_batches")
    # reference: the states of the whole (cleaned) input at once, accumulated in float64
    ref_x = x if how in ("none", "list_of_batches") else data.to(dtype) if how != "noncontiguous" else \
        data.contiguous()
    with torch.no_grad():
        H = rnn(ref_x.to(dtype))[0].reshape(-1, 5).double()
    assert stats.count == H.shape[0]
    torch.testing.assert_close(stats.outer_sum, H.T @ H, rtol=1e-5 if dtype == torch.float32 else 1e-10,
                               atol=1e-5 if dtype == torch.float32 else 1e-10)


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(["k", "ratio", "target_dof", "lam", "rel_lam", "theta", "Z", "method", "covariance",
                              "A", "J", "model"]),
       bad=st.sampled_from([0, -1, 99, 0.5, float("nan"), float("inf"), "x", None, True]),
       seed=st.integers(0, 100))
def test_spectral_prune_and_compress_arguments(field, bad, seed):
    torch.manual_seed(seed)
    rnn, head = torch.nn.GRU(2, 6, batch_first=True), torch.nn.Linear(6, 3)
    x = torch.randn(5, 4, 2)
    if field == "A":
        ok, _ = call(lambda: compress(rnn, head, [0, 1], np.full((6, 2), bad, dtype=object)
                                      if not isinstance(bad, (int, float)) else np.full((6, 2), float(bad))),
                     ("A",))
        assert ok == (isinstance(bad, (int, float)) and np.isfinite(float(bad)))
        return
    if field == "J":
        ok, _ = call(lambda: compress(rnn, head, bad if not isinstance(bad, (int, float)) else [bad]), ("J",))
        assert ok == (isinstance(bad, int) and not isinstance(bad, bool) and 0 <= bad < 6)
        return
    if field == "model":
        call(lambda: spectral_prune(bad, x, k=2), ("model_or_rnn",))
        return
    kwargs = dict(k=2)
    if field in ("ratio", "target_dof"):
        kwargs = {}
    if field == "covariance":
        kwargs.update(covariance=bad)
        fn = lambda: spectral_prune((rnn, head), None, **kwargs)
    else:
        kwargs[field] = bad
        fn = lambda: spectral_prune((rnn, head), x, **kwargs)
    names = (field, "k, ratio, target_dof", "target_dof", "lam, rel_lam", "covariance", "seed", "data")
    ok, res = call(fn, names)
    if ok:  # only well-formed values succeed, and then the result is a real pruned module
        assert res.rnn.hidden_size == res.k and 1 <= res.k <= 6
        with torch.no_grad():
            out = res.readout(res.rnn(x)[0])
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("method", ["greedy", "leverage", "random"])
def test_float32_models_get_float64_statistics_and_identical_reruns(method):
    def run():
        torch.manual_seed(0)
        lstm, head = torch.nn.LSTM(3, 8, num_layers=2, batch_first=True), torch.nn.Linear(8, 2)
        x = torch.randn(12, 7, 3, generator=torch.Generator().manual_seed(5))
        return spectral_prune((lstm, head), x, k=[4, 3], method=method, seed=11)

    a, b = run(), run()
    assert all(c.outer_sum.dtype == torch.float64 for row in a.covariance for c in row)
    assert [lp.units for lp in a.layers] == [lp.units for lp in b.layers]
    for p, q in zip(a.rnn.state_dict().values(), b.rnn.state_dict().values()):
        assert p.dtype == torch.float32 and torch.equal(p, q)
    assert torch.equal(a.readout.weight, b.readout.weight)


@settings(max_examples=25, deadline=None)
@given(flag=st.sampled_from(["--k", "--ratio", "--target-dof", "--target", "--rel-lam", "--lam", "--theta",
                             "--batch-size", "--holdout"]),
       value=st.sampled_from(["0", "-1", "99", "nan", "inf", "abc", "1,2,3", "0.5", ""]))
def test_cli_arguments(tmp_path_factory, flag, value):
    """The prune CLI exits 0 with a pruned model, or 2 with a message naming the option's argument; never a
    traceback."""
    from pruning.cli import main

    tmp = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    torch.save((torch.nn.GRU(2, 6, batch_first=True), torch.nn.Linear(6, 2)), tmp / "m.pt")
    torch.save(torch.randn(12, 5, 2), tmp / "x.pt")
    width = [] if flag in ("--k", "--ratio", "--target-dof", "--target") else ["--k", "3"]
    argv = ["prune", "--checkpoint", str(tmp / "m.pt"), "--trust-checkpoint", "--data", str(tmp / "x.pt"), "--out",
            str(tmp / "p.safetensors"), "--no-progress", *width, flag, value]
    if flag == "--holdout":
        argv = [a for a in argv if a not in ("--k", "3")] + ["--target", "0.5"]
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse rejects what it cannot parse, with usage and status 2
            code = exit_.code
    assert code in (0, 2)
    assert (tmp / "p.safetensors").exists() == (code == 0)
    if code == 2:
        message = err.getvalue()
        assert flag in message or f"{flag[2:].replace('-', '_')}" in message, message
