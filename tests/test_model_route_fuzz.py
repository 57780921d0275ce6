"""The whole-model route against the pair route, on random user models (hypothesis).

A model holds one recurrent module under its own name and a head that reads it through a unit-wise linear map (the
last step, a mean or a sum over time, or the last layer's final state, its directions in either order), in either
layout. Pruned as a whole model,
it must keep the units the pair route keeps for its recurrent module and head, and return exactly what the pair
route's pruned modules return through the same map (float64)."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pruning import spectral_prune

READS = {
    "last": lambda o, h: o[:, -1],
    "mean": lambda o, h: o.mean(1),
    "sum": lambda o, h: o.sum(1),
    "final": lambda o, h: torch.cat([h[-2], h[-1]], -1) if h.shape[0] % 2 == 0 and h.shape[0] > 1 else h[-1],
    # torch.cat((h_n[-1], h_n[-2]), 1): the two directions backward first
    "final_backward_first": lambda o, h: torch.cat([h[-1], h[-2]], -1) if h.shape[0] == 2 else h[-1],
}


class UserModel(torch.nn.Module):
    def __init__(self, kind, layers, bidirectional, batch_first, read, hidden=5, d_x=3):
        super().__init__()
        kw = dict(nonlinearity=kind[4:]) if kind.startswith("RNN") else {}
        self.bidirectional, self.batch_first, self.read = bidirectional, batch_first, read
        self.encoder = getattr(torch.nn, kind[:4].rstrip("_"))(
            d_x, hidden, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
            dtype=torch.float64, **kw)
        self.classifier = torch.nn.Linear(hidden * (2 if bidirectional else 1), 3, dtype=torch.float64)

    def states(self, rnn, x):
        """(output batch-first, last layer's final states) of ``rnn`` on batch-first ``x``."""
        out, h = rnn(x if self.batch_first else x.transpose(0, 1))
        h = h[0] if isinstance(h, tuple) else h
        out = out if self.batch_first else out.transpose(0, 1)
        D = 2 if self.bidirectional else 1
        return out, h[-D:]

    def forward(self, x):
        out, h = self.states(self.encoder, x)
        return self.classifier(READS[self.read](out, h))


def _all_stats(covariance):
    """A result's statistics as one list: one CovarianceStats, or a [layer][direction] grid of them."""
    return [c for row in covariance for c in row] if isinstance(covariance, list) else [covariance]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["RNN_tanh", "RNN_relu", "LSTM", "GRU"]), layers=st.integers(1, 2),
       bidirectional=st.booleans(), batch_first=st.booleans(), read=st.sampled_from(sorted(READS)),
       k=st.integers(1, 5), seed=st.integers(0, 2 ** 16), mode=st.sampled_from(["sequential", "original"]))
def test_a_user_model_prunes_like_its_pair(kind, layers, bidirectional, batch_first, read, k, seed, mode):
    """In "original" mode the model route takes the top layer's states from the model's run (and runs the layers
    below); in "sequential" mode a stack's later passes replay the recorded inputs: both equal the pair route."""
    torch.manual_seed(seed)
    model = UserModel(kind, layers, bidirectional, batch_first, read)
    x = torch.randn(9, 6, 3, dtype=torch.float64)  # the model's own inputs: batch-first
    res = spectral_prune(model, x, k=k, batch_size=4, covariance_mode=mode)
    pair_inputs = x if batch_first else x.transpose(0, 1).contiguous()
    head = model.classifier
    if read == "final_backward_first" and bidirectional:
        # the pair reads the module's own order: the same head with its two column blocks swapped
        head = torch.nn.Linear(10, 3, dtype=torch.float64)
        with torch.no_grad():
            head.weight.copy_(torch.cat([model.classifier.weight[:, 5:], model.classifier.weight[:, :5]], 1))
            head.bias.copy_(model.classifier.bias)
        read = "final"
    pair = spectral_prune((model.encoder, head), pair_inputs, k=k, covariance_mode=mode)
    assert [lp.units for lp in res.layers] == [lp.units for lp in pair.layers]
    for a, b in zip(_all_stats(res.covariance), _all_stats(pair.covariance)):
        assert a.count == b.count
        torch.testing.assert_close(a.outer_sum, b.outer_sum, rtol=1e-12, atol=1e-12)
    assert res.paths == ("encoder", ("classifier",))
    with torch.no_grad():
        out, h = model.states(pair.rnn, x)
        expected = pair.readout(READS[read](out, h))
        torch.testing.assert_close(res.model(x), expected, rtol=1e-10, atol=1e-12)
    assert res.model.encoder.hidden_size == k and model.encoder.hidden_size == 5  # the user's model untouched
