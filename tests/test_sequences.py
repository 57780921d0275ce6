"""Variable-length data (issue: prune the models people have): padded batches with lengths, PackedSequences and lists
of sequences give the statistics, the kept units and the pruned outputs of a sequence-by-sequence computation, in
float64, for every layer and both directions."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence, pad_sequence

from pruning import layer_covariances, spectral_prune, time_mean_covariance
from pruning.modules import as_layers
from pruning.sequences import iter_sequence_batches


def _module(cell, m, layers, bidirectional, batch_first, seed):
    torch.manual_seed(seed)
    kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, dtype=torch.float64)
    rnn = torch.nn.RNN(3, m, nonlinearity="tanh", **kw) if cell == "RNN" else getattr(torch.nn, cell)(3, m, **kw)
    return rnn, torch.nn.Linear((2 if bidirectional else 1) * m, 2, dtype=torch.float64)


def _per_sequence_stats(rnn, seqs):
    """Sums of outer products of every layer-direction's states, each sequence run alone (no padding at all)."""
    layers = as_layers(rnn)
    D = 2 if rnn.bidirectional else 1
    sums = [[torch.zeros(l.hidden_size, l.hidden_size, dtype=torch.float64) for _ in range(D)] for l in layers]
    count = 0
    with torch.no_grad():
        for s in seqs:
            x = s[None] if rnn.batch_first else s[:, None]
            for l, layer in enumerate(layers):
                x, _ = layer(x)
                H = x.reshape(-1, D * layer.hidden_size)
                for d in range(D):
                    h = H[:, d * layer.hidden_size:(d + 1) * layer.hidden_size]
                    sums[l][d] += h.T @ h
            count += s.shape[0]
    return sums, count


@settings(max_examples=20, deadline=None)
@given(cell=st.sampled_from(["RNN", "LSTM", "GRU"]), layers=st.integers(1, 2), bidirectional=st.booleans(),
       batch_first=st.booleans(), lengths=st.lists(st.integers(1, 9), min_size=1, max_size=7),
       batch_size=st.integers(1, 4), seed=st.integers(0, 100))
def test_padded_packed_and_listed_sequences_give_the_per_sequence_statistics(cell, layers, bidirectional, batch_first,
                                                                             lengths, batch_size, seed):
    rnn, _ = _module(cell, 5, layers, bidirectional, batch_first, seed)
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randn(L, 3, generator=g, dtype=torch.float64) for L in lengths]
    ref, count = _per_sequence_stats(rnn, seqs)
    padded = pad_sequence(seqs, batch_first=batch_first, padding_value=7.0)  # padding that would show if counted
    lens = torch.tensor(lengths)
    packed = pack_sequence(seqs, enforce_sorted=False)
    forms = {
        "padded + lengths": dict(data=padded, lengths=lens),
        "list of sequences": dict(data=seqs),
        "packed": dict(data=packed),
        "list of packed batches": dict(data=[pack_sequence(seqs[i:i + batch_size], enforce_sorted=False)
                                             for i in range(0, len(seqs), batch_size)]),
        "padded batches + per-batch lengths": dict(
            data=[pad_sequence(seqs[i:i + batch_size], batch_first=batch_first)
                  for i in range(0, len(seqs), batch_size)],
            lengths=[lens[i:i + batch_size] for i in range(0, len(seqs), batch_size)]),
    }
    for name, kw in forms.items():
        got = layer_covariances(as_layers(rnn), kw["data"], lengths=kw.get("lengths"), batch_size=batch_size)
        for l in range(layers):
            for d in range(2 if bidirectional else 1):
                assert got[l][d].count == count, name
                torch.testing.assert_close(got[l][d].outer_sum, ref[l][d], rtol=1e-12, atol=1e-12, msg=name)


@settings(max_examples=10, deadline=None)
@given(cell=st.sampled_from(["RNN", "LSTM", "GRU"]), bidirectional=st.booleans(), mode=st.sampled_from(
    ["sequential", "original"]), lengths=st.lists(st.integers(1, 8), min_size=2, max_size=6), seed=st.integers(0, 50))
def test_variable_length_data_give_the_units_and_outputs_of_the_per_sequence_computation(cell, bidirectional, mode,
                                                                                          lengths, seed):
    rnn, head = _module(cell, 6, 2, bidirectional, True, seed)
    g = torch.Generator().manual_seed(seed + 1)
    seqs = [torch.randn(L, 3, generator=g, dtype=torch.float64) for L in lengths]
    # reference: the sequences one at a time as separate batches of one (never padded)
    ref = spectral_prune((rnn, head), [s[None] for s in seqs], k=[3, 2], covariance_mode=mode, batch_size=1)
    padded = pad_sequence(seqs, batch_first=True, padding_value=-3.0)
    for kw in (dict(data=padded, lengths=torch.tensor(lengths)), dict(data=seqs),
               dict(data=pack_sequence(seqs, enforce_sorted=False))):
        res = spectral_prune((rnn, head), kw["data"], lengths=kw.get("lengths"), k=[3, 2], covariance_mode=mode)
        assert [lp.units for lp in res.layers] == [lp.units for lp in ref.layers]
        for a, b in zip(res.layers, ref.layers):
            np.testing.assert_allclose(a.A, b.A, rtol=1e-9, atol=1e-12)
        # the pruned module on packed data equals it run on each sequence alone, step by step
        with torch.no_grad():
            out, _ = pad_packed_sequence(res.rnn(pack_sequence(seqs, enforce_sorted=False))[0], batch_first=True)
            for i, s in enumerate(seqs):
                torch.testing.assert_close(out[i, :len(s)], res.rnn(s[None])[0][0], rtol=1e-10, atol=1e-12)
                assert not out[i, len(s):].any()


def test_padding_would_change_the_statistics():
    # the point of lengths=: counting padded steps is wrong by as much as the padding is long
    rnn, _ = _module("GRU", 4, 1, False, True, 0)
    seqs = [torch.randn(L, 3, dtype=torch.float64) for L in (2, 9, 3)]
    padded = pad_sequence(seqs, batch_first=True)
    with_lengths = time_mean_covariance(rnn, padded, lengths=[2, 9, 3])
    without = time_mean_covariance(rnn, padded)
    assert with_lengths.count == 14 and without.count == 27
    assert not np.allclose(with_lengths.mean(), without.mean(), rtol=1e-3)


def test_bad_lengths_are_refused_by_name():
    rnn, _ = _module("RNN", 4, 1, False, True, 0)
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    for lengths, message in (([1, 2], "one length per sequence"), ([0, 2, 3], r"every length in 1..5"),
                             ([1, 2, 6], r"every length in 1..5")):
        with pytest.raises(ValueError, match=f"lengths: expected {message}"):
            time_mean_covariance(rnn, x, lengths=lengths)
    with pytest.raises(TypeError, match="lengths: expected integer lengths"):
        time_mean_covariance(rnn, x, lengths=[1.5, 2.0, 3.0])
    with pytest.raises(ValueError, match="lengths: a PackedSequence carries its own lengths"):
        time_mean_covariance(rnn, pack_sequence([x[0]]), lengths=[5])
    with pytest.raises(ValueError, match="data: sequence 1 is empty"):
        time_mean_covariance(rnn, [x[0], x[1, :0]])


def test_batches_of_a_list_of_sequences_keep_their_lengths():
    seqs = [torch.randn(L, 2) for L in (3, 1, 4, 4, 2)]
    batches = list(iter_sequence_batches(seqs, batch_size=2))
    assert [b.inputs.shape[:2] for b in batches] == [(2, 3), (2, 4), (1, 2)]
    assert batches[0].lengths.tolist() == [3, 1] and batches[1].lengths is None and batches[2].lengths is None
    assert sum(b.steps for b in batches) == 14


def test_cli_reads_padded_data_with_lengths_and_packed_sequences(tmp_path, capsys):
    import json

    from safetensors.torch import save_file

    from pruning.__main__ import main

    rnn, head = _module("GRU", 6, 1, True, True, 3)
    torch.manual_seed(3)
    seqs = [torch.randn(L, 3, dtype=torch.float64) for L in (4, 1, 7, 3, 5)]
    ref = spectral_prune((rnn, head), seqs, k=3)
    save_file({f"rnn.{k}": v for k, v in rnn.state_dict().items()} | {f"readout.{k}": v for k, v in
                                                                       head.state_dict().items()},
              str(tmp_path / "w.safetensors"))
    files = {"padded.pt": dict(inputs=pad_sequence(seqs, batch_first=True), lengths=torch.tensor([4, 1, 7, 3, 5])),
             "packed.pt": pack_sequence(seqs, enforce_sorted=False), "list.pt": seqs}
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
        out = tmp_path / f"{name}.safetensors"
        assert main(["prune", "--checkpoint", str(tmp_path / "w.safetensors"), "--model", "test_sequences:factory",
                     "--data", str(tmp_path / name), "--k", "3", "--out", str(out), "--no-progress"]) == 0, \
            capsys.readouterr().err
        summary = json.loads(out.with_suffix(".json").read_text())
        assert [lp["units"] for lp in summary["layers"]] == [lp.units for lp in ref.layers], name
        assert summary["before"]["T"] == 7


def factory():
    return _module("GRU", 6, 1, True, True, 3)


class _Classifier(torch.nn.Module):
    def __init__(self, layers: int = 1, cell: bool = False):
        super().__init__()
        self.cell = cell
        self.rnn = (torch.nn.GRUCell(3, 6, dtype=torch.float64) if cell
                    else torch.nn.GRU(3, 6, num_layers=layers, batch_first=True, dtype=torch.float64))
        self.head = torch.nn.Linear(6, 2, dtype=torch.float64)

    def forward(self, x):
        if not self.cell:
            return self.head(self.rnn(x)[0][:, -1])
        h = x.new_zeros(x.shape[0], self.rnn.hidden_size)
        for t in range(x.shape[1]):
            h = self.rnn(x[:, t], h)
        return self.head(h)


def _batches(seed: int = 0):
    x = torch.randn(23, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return list(torch.split(x, 6))


@pytest.mark.parametrize("subject", ["pair", "model", "cell"])
def test_a_generator_gives_every_batch_once_like_a_list(subject):
    """A generator of batches is read once. A whole model's checks look at its first batch before the pass; they
    used to take it from the generator, so the statistics silently left that batch out. Now the statistics equal
    those of the same batches as a list."""
    torch.manual_seed(0)
    model = _Classifier(cell=subject == "cell")
    target = (model.rnn, model.head) if subject == "pair" else model
    listed = spectral_prune(target, _batches(), k=3)
    generated = spectral_prune(target, (b for b in _batches()), k=3)
    assert generated.covariance.count == listed.covariance.count == 23 * 5
    torch.testing.assert_close(generated.covariance.outer_sum, listed.covariance.outer_sum, rtol=0, atol=0)
    assert generated.units == listed.units


@pytest.mark.parametrize("subject", ["pair", "model"])
def test_a_generator_read_twice_is_kept_or_refused_and_one_pass_serves(subject, monkeypatch):
    """A stacked network measured layer by layer reads its data once per layer: a generator would be empty the
    second time, which was reported as 'no data'. Its batches (for a whole model, its recurrent inputs) are now kept
    after the first pass when they fit in pruning.sequences.INPUT_CACHE_BYTES and hold only tensors, and the layers
    above replay them: the result is that of a list. Without room it is refused saying why, and the one-pass mode
    prunes from it exactly as from a list."""
    import pruning.sequences as sequences_module

    torch.manual_seed(1)
    model = _Classifier(layers=2)
    target = (model.rnn, model.head) if subject == "pair" else model
    kept = spectral_prune(target, iter(_batches()), k=3)
    listed = spectral_prune(target, _batches(), k=3)
    assert [lp.units for lp in kept.layers] == [lp.units for lp in listed.layers]
    for a, b in zip(kept.covariance, listed.covariance):
        torch.testing.assert_close(a[0].outer_sum, b[0].outer_sum, rtol=0, atol=0)
    monkeypatch.setattr(sequences_module, "INPUT_CACHE_BYTES", 0)
    with pytest.raises(ValueError, match=r"data: a generator or other one-shot iterator can be read only once.* "
                                         r"covariance_mode='original'"):
        spectral_prune(target, iter(_batches()), k=3)
    listed = spectral_prune(target, _batches(), k=3, covariance_mode="original")
    generated = spectral_prune(target, iter(_batches()), k=3, covariance_mode="original")
    for a, b in zip(generated.covariance, listed.covariance):
        torch.testing.assert_close(a[0].outer_sum, b[0].outer_sum, rtol=0, atol=0)


@pytest.mark.parametrize("subject", ["pair", "model"])
def test_the_error_target_search_reads_held_out_generators_once(subject):
    """The search measures the held-out error for every k it tries: a generator there was empty from the second k
    on (the search then stopped with 'the read-out of the full network is zero'), and was then refused. Its batches
    are now read once and kept: the search evaluates the same errors and finds the same k as with a list."""
    from pruning import prune_to_target

    torch.manual_seed(2)
    model = _Classifier()
    target = (model.rnn, model.head) if subject == "pair" else model
    listed = prune_to_target(target, _batches(), 0.1, holdout_data=_batches(1))
    generated = prune_to_target(target, iter(_batches()), 0.1, holdout_data=(b for b in _batches(1)))
    assert len(listed.search["evaluated"]) > 2  # several k, each measured on all held-out batches
    assert generated.search["evaluated"] == listed.search["evaluated"] and generated.k == listed.k
    torch.testing.assert_close(generated.covariance.outer_sum, listed.covariance.outer_sum, rtol=0, atol=0)


def _one_buffer(batches):
    """A generator that reuses one buffer for every batch, as a data pipeline that fills it in place does."""
    buffer = batches[0].clone()
    for b in batches:
        buffer[: len(b)].copy_(b)
        yield buffer[: len(b)]


@pytest.mark.parametrize("case", ["over_budget", "one_buffer", "numpy"])
def test_held_out_generators_that_cannot_be_kept_are_refused_saying_why(monkeypatch, case):
    import pruning.target as target_module
    from pruning import prune_to_target

    torch.manual_seed(2)
    model = _Classifier()
    held = {"over_budget": (b for b in _batches(1)), "one_buffer": _one_buffer(_batches(1)),
            "numpy": (b.numpy() for b in _batches(1))}[case]
    if case == "over_budget":
        monkeypatch.setattr(target_module, "REFERENCE_CACHE_BYTES", 1000)
    with pytest.raises(ValueError, match=r"holdout_data: a generator is read once and its batches kept .* take more "
                                         r"than pruning.target.REFERENCE_CACHE_BYTES .*NumPy arrays.*one buffer"):
        prune_to_target((model.rnn, model.head), _batches(), 0.1, holdout_data=held)


def test_only_one_shot_iterators_are_wrapped_and_peeking_loses_nothing():
    from pruning.sequences import OnePass, is_one_shot, one_pass_if_iterator

    batches = _batches()
    loader = torch.utils.data.DataLoader(torch.cat(batches), batch_size=6)
    for reusable in (batches, tuple(batches), torch.cat(batches), loader):
        assert not is_one_shot(reusable) and one_pass_if_iterator(reusable) is reusable
    once = one_pass_if_iterator(b for b in batches)
    assert isinstance(once, OnePass) and once.peek() is batches[0] and once.peek() is batches[0]
    assert [b.shape[0] for b in once] == [b.shape[0] for b in batches]
    with pytest.raises(ValueError, match="data: a generator or other one-shot iterator can be read only once"):
        list(once)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 30), T=st.integers(1, 6), batch_size=st.integers(1, 12), batch_first=st.booleans(),
       form=st.sampled_from(["tensor", "array", "unbatched", "tokens+lengths", "sequences", "batches", "tuples",
                             "loader", "packed", "generator"]))
def test_the_batch_count_of_a_progress_bar_is_the_number_of_batches_read(n, T, batch_size, batch_first, form):
    """count_batches, the covariance pass's progress-bar total, equals the number of batches iter_sequence_batches
    yields for every form of data whose length can be told without reading it, and is None for a generator."""
    from pruning.sequences import count_batches

    gen = torch.Generator().manual_seed(n * 31 + T)
    n = max(n, 1) if form in ("sequences", "packed", "unbatched") else n
    x = torch.randn(n, T, 2, generator=gen)
    lengths = None
    if form == "tensor":
        data = x if batch_first else x.transpose(0, 1)
    elif form == "array":
        data = (x if batch_first else x.transpose(0, 1)).numpy()
    elif form == "unbatched":
        data = x[0]
    elif form == "tokens+lengths":
        data, lengths = torch.randint(1, 9, (n, T)), torch.randint(1, T + 1, (n,))
        data = data if batch_first else data.T
    elif form == "sequences":
        data = [torch.randn(1 + i % T, 2) for i in range(n)] + [torch.randn(T + 1, 2)]
    elif form in ("batches", "tuples"):
        data = [x[i:i + batch_size] for i in range(0, n, batch_size)]
        data = [(b, torch.zeros(len(b))) for b in data] if form == "tuples" else data
    elif form == "loader":
        data = torch.utils.data.DataLoader(x, batch_size=batch_size)
    elif form == "packed":
        data = pack_sequence([torch.randn(T, 2)] * n)
    else:
        data = (b for b in [x])
    counted = count_batches(data, batch_size, batch_first=batch_first, lengths=lengths)
    if form == "generator":
        assert counted is None
        return
    read = sum(1 for _ in iter_sequence_batches(data, batch_size, batch_first=batch_first, lengths=lengths))
    assert counted == read


def test_a_one_pass_keeps_its_batches_only_when_it_can_replay_them_faithfully():
    """OnePass.keep(): tensor batches within the budget are replayed as they were; batches over the budget, holding
    NumPy arrays (whose changes in place cannot be seen) or written in place since (a generator that reuses one
    buffer) are not, and the second pass is refused saying why."""
    from pruning.sequences import OnePass

    batches = [(torch.randn(4, 3, 2), torch.arange(4)) for _ in range(3)]
    data = OnePass(iter(batches))
    data.keep(2 ** 20)
    first, again = list(data), list(data)
    assert all(a is b for a, b in zip(first, again)) and len(again) == 3

    def reusing_one_buffer():
        buffer = torch.zeros(4, 3, 2)
        for b, _ in batches:
            buffer.copy_(b)
            yield buffer

    for source, budget in ((iter(batches), 10), (iter([b.numpy() for b, _ in batches]), 2 ** 20),
                           (reusing_one_buffer(), 2 ** 20)):
        data = OnePass(source)
        data.keep(budget)
        list(data)
        with pytest.raises(ValueError, match=r"can be read only once.*its batches were not kept for the passes after "
                                             r"the first: they take more than pruning\.sequences\.INPUT_CACHE_BYTES"):
            list(data)
