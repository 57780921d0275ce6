"""A ``torch.compile``'d model prunes as its eager model does: the passes run the eager module (no graph is compiled
while they run), the pruned model comes back compiled with the same settings, prefixed paths are accepted, and the
saved weights load into a compiled or an eager fresh instance."""

import pytest
import torch
from torch import nn

from pruning import load_pruned, spectral_prune
from pruning.modules import compiled_like, uncompiled, without_compiled_prefix
from user_model_zoo import TokenClassifier, make_data


class CountingBackend:
    """A TorchDynamo backend that runs the captured graphs as they are and counts them: no compiler is needed, and
    the count says whether the compiled forward ran."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


class GRUModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 24, batch_first=True)
        self.out = nn.Linear(24, 4)

    def forward(self, x):
        return self.out(self.rnn(x)[0])


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    # allow_rnn: TorchDynamo then captures the recurrent modules in its graph instead of running them eagerly, so a
    # count of zero graphs means the compiled forward was not called at all
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True):
        yield
    torch._dynamo.reset()


def _pair(seed: int):
    torch.manual_seed(seed)
    eager = GRUModel().eval()
    backend = CountingBackend()
    return eager, torch.compile(eager, backend=backend, dynamic=False), backend


def test_a_compiled_model_prunes_as_its_eager_model_without_compiling_during_the_passes():
    eager, compiled, backend = _pair(0)
    x = torch.randn(48, 9, 3)
    reference = spectral_prune(eager, x, k=7)
    result = spectral_prune(compiled, x, k=7)
    assert backend.graphs == 0  # the covariance pass and the read-out checks ran the eager module
    assert result.units == reference.units
    assert result.paths == reference.paths == ("rnn", ("out",))
    assert uncompiled(result.model)[1] is not None and result.model.dynamo_ctx is compiled.dynamo_ctx
    assert result.rnn.hidden_size == 7 and result.model.rnn is result.rnn
    with torch.no_grad():
        got, want = result.model(x), reference.model(x)
    assert backend.graphs >= 1  # the pruned model's forward is the compiled one
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert compiled.rnn.hidden_size == 24  # the user's model is left as it was


def test_paths_of_the_compiled_wrapper_are_those_of_the_eager_model():
    eager, compiled, _ = _pair(1)
    x = torch.randn(32, 6, 3)
    named = spectral_prune(compiled, x, k=5, rnn="_orig_mod.rnn", readout=["_orig_mod.out"])
    plain = spectral_prune(compiled, x, k=5, rnn="rnn", readout="out")
    assert named.paths == plain.paths == ("rnn", ("out",))
    assert named.units == plain.units
    assert without_compiled_prefix(("_orig_mod.rnn", ["_orig_mod.a", "b"])) == ("rnn", ["a", "b"])


def test_the_error_target_search_returns_the_compiled_model_of_its_k():
    eager, compiled, backend = _pair(2)
    x = torch.randn(64, 8, 3)
    reference = spectral_prune(eager, x, target=0.05, seed=0)
    result = spectral_prune(compiled, x, target=0.05, seed=0)
    assert backend.graphs == 0  # every k the search tried was measured on eager models
    assert result.rnn.hidden_size == reference.rnn.hidden_size
    assert result.model.dynamo_ctx is compiled.dynamo_ctx
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference.model(x), rtol=0, atol=0)


def test_a_compiled_user_model_with_packed_time_major_data_saves_and_loads_into_either_form(tmp_path):
    torch.manual_seed(3)
    model = TokenClassifier(hidden=12).eval()
    tokens, _, _ = make_data(96, seed=4)
    reference = spectral_prune(model, tokens, k=5)
    result = spectral_prune(torch.compile(model, backend=CountingBackend()), tokens, k=5)
    assert [lp.units for lp in result.layers] == [lp.units for lp in reference.layers]
    path = result.save(tmp_path / "pruned.safetensors")
    assert path.exists()
    with torch.no_grad():
        want = reference.model(tokens)
        torch.manual_seed(9)  # other weights in the fresh instances: loading must overwrite every one
        as_compiled = load_pruned(tmp_path / "pruned.safetensors", model=torch.compile(TokenClassifier(hidden=12),
                                                                                        backend=CountingBackend()))
        as_eager = load_pruned(tmp_path / "pruned.safetensors", model=TokenClassifier(hidden=12))
        assert uncompiled(as_compiled)[1] is not None and uncompiled(as_eager)[1] is None
        torch.testing.assert_close(as_compiled.eval()(tokens), want, rtol=0, atol=0)
        torch.testing.assert_close(as_eager.eval()(tokens), want, rtol=0, atol=0)


def test_a_wrapper_that_cannot_be_rebuilt_returns_the_eager_model_with_a_warning():
    eager, compiled, _ = _pair(4)

    class Broken(type(compiled)):
        def __init__(self, *args):
            raise RuntimeError("no")

    broken = torch.compile(GRUModel(), backend=CountingBackend())
    broken.__class__ = Broken
    with pytest.warns(UserWarning, match="call torch.compile on it again"):
        assert compiled_like(eager, broken) is eager
    assert compiled_like(eager, None) is eager and compiled_like(None, compiled) is None
