"""``python -m pruning prune``: a saved model in (without running code from it unless trusted), pruned weights that
load back without unpickling, and a truthful summary out."""

import json
import subprocess
import sys

import pytest
import torch

from benchmarks.language import RNNLanguageModel
from pruning import RecurrentStack, count_macs, count_parameters, load_pruned, spectral_prune
from pruning.cli import main
from pruning.covariance import CovarianceStats


def lstm_pair(seed=0):
    torch.manual_seed(seed)
    rnn = torch.nn.LSTM(3, 12, num_layers=2, bidirectional=True, batch_first=True)
    return rnn, torch.nn.Linear(24, 4)


def run_cli(*args):
    return main([str(a) for a in args] + ["--no-progress"])


def test_stacked_lstm_pair_round_trip(tmp_path):
    rnn, head = lstm_pair()
    x = torch.randn(40, 9, 3, generator=torch.Generator().manual_seed(1))
    torch.save((rnn, head), tmp_path / "m.pt")
    torch.save(x, tmp_path / "x.pt")
    assert run_cli("prune", "--checkpoint", tmp_path / "m.pt", "--trust-checkpoint", "--data", tmp_path / "x.pt",
                   "--k", "6,4", "--out", tmp_path / "p.pt", "--pickle") == 0
    small, small_head = torch.load(tmp_path / "p.pt", weights_only=False)
    # an independent in-process run with the same settings gives the same module
    ref = spectral_prune((rnn, head), x, k=[6, 4], device="cpu")
    with torch.no_grad():
        assert torch.equal(small_head(small(x)[0]), ref.readout(ref.rnn(x)[0]))
    summary = json.loads((tmp_path / "p.json").read_text())
    assert [lp["units"] for lp in summary["layers"]] == [lp.units for lp in ref.layers]
    assert [lp["k"] for lp in summary["layers"]] == [6, 6, 4, 4]
    assert summary["before"]["parameters"] == count_parameters(rnn, head)
    assert summary["after"]["parameters"] == count_parameters(small, small_head)
    # hand formula: per layer, direction and step 4 (m d_in + m^2)
    assert summary["after"]["macs_per_step"] == 2 * 4 * (6 * 3 + 36) + 2 * 4 * (4 * 12 + 16)
    assert summary["after"]["macs_per_sequence"] == 9 * summary["after"]["macs_per_step"]
    assert summary["before"]["macs_per_step"] == count_macs(rnn)
    for lp in summary["layers"]:
        assert 0 < lp["dof"] <= lp["m"] and lp["lam"] > 0 and lp["losses"]["input"] >= 0
    # the summary's module settings rebuild the module for load_state_dict
    mod = summary["after"]["module"]
    assert mod["type"] == "RecurrentStack"
    rebuilt = RecurrentStack(mod["cell"], mod["input_size"], mod["hidden_sizes"], bias=mod["bias"],
                             batch_first=mod["batch_first"], bidirectional=mod["bidirectional"])
    rebuilt.load_state_dict(small.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x)[0], small(x)[0])


def test_model_with_embedding_and_token_data(tmp_path):
    torch.manual_seed(0)
    model = RNNLanguageModel(30, 5, 16)
    ids = torch.randint(0, 30, (20, 11))
    torch.save(model, tmp_path / "lm.pt")
    torch.save({"inputs": ids, "targets": ids}, tmp_path / "ids.pt")
    assert run_cli("prune", "--checkpoint", tmp_path / "lm.pt", "--trust-checkpoint", "--data", tmp_path / "ids.pt",
                   "--ratio", "0.5", "--out", tmp_path / "small.pt", "--pickle", "--summary", tmp_path / "s.json") == 0
    small = torch.load(tmp_path / "small.pt", weights_only=False)
    assert isinstance(small, RNNLanguageModel) and small.rnn.hidden_size == 8
    ref = spectral_prune(model, ids, ratio=0.5)
    with torch.no_grad():
        assert torch.equal(small(ids), ref.model(ids))
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["after"]["T"] == 11 and summary["layers"][0]["units"] == ref.units


def test_states_give_the_same_selection_as_inputs(tmp_path):
    torch.manual_seed(0)
    gru, head = torch.nn.GRU(2, 10, batch_first=True), torch.nn.Linear(10, 3)
    x = torch.randn(30, 7, 2)
    with torch.no_grad():
        H = gru(x)[0]
    torch.save((gru, head), tmp_path / "g.pt")
    torch.save(H, tmp_path / "h.pt")
    assert run_cli("prune", "--checkpoint", tmp_path / "g.pt", "--trust-checkpoint", "--states", tmp_path / "h.pt",
                   "--k", "4", "--out", tmp_path / "p.safetensors") == 0
    summary = json.loads((tmp_path / "p.json").read_text())
    ref = spectral_prune((gru, head), x, k=4)
    assert summary["layers"][0]["units"] == ref.units
    stats = CovarianceStats.from_states(H)
    assert stats.count == 30 * 7
    torch.testing.assert_close(stats.outer_sum, (H.reshape(-1, 10).double().T @ H.reshape(-1, 10).double()))


@pytest.mark.parametrize("case, message", [
    ("state_dict", "holds weights only; pass --model"),
    ("pickled", "loading it would run code from the file"),
    ("out_suffix", "--out: the pruned weights are written as safetensors"),
    ("missing", "--checkpoint: no such file"),
    ("k_range", "k[1]: expected 1 <= k <= m"),
    ("nan_data", "NaN"),
    ("dict_key", "key 'inputs'"),
])
def test_bad_input_gives_a_named_error(tmp_path, capsys, case, message):
    rnn, head = lstm_pair()
    torch.save((rnn, head), tmp_path / "m.pt")
    x = torch.randn(5, 4, 3)
    torch.save(x, tmp_path / "x.pt")
    ckpt, data, k = tmp_path / "m.pt", tmp_path / "x.pt", "6"
    trust, out = ["--trust-checkpoint"], tmp_path / "p.safetensors"
    if case == "pickled":
        trust = []
    elif case == "out_suffix":
        out = tmp_path / "p.pt"
    elif case == "state_dict":
        torch.save(rnn.state_dict(), tmp_path / "sd.pt")
        ckpt = tmp_path / "sd.pt"
    elif case == "missing":
        ckpt = tmp_path / "nope.pt"
    elif case == "k_range":
        k = "6,13"
    elif case == "nan_data":
        x[0, 0, 0] = float("nan")
        torch.save(x, data)
    elif case == "dict_key":
        torch.save({"x": x}, data)
    assert run_cli("prune", "--checkpoint", ckpt, *trust, "--data", data, "--k", k, "--out", out) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1  # one line, no traceback
    assert not out.exists() and not (tmp_path / "p.json").exists()


def test_module_entry_point(tmp_path):
    torch.manual_seed(0)
    torch.save((torch.nn.RNN(2, 6), torch.nn.Linear(6, 2)), tmp_path / "m.pt")
    torch.save(torch.randn(5, 8, 2), tmp_path / "x.pt")  # batch_first=False: (T, batch, d_x)
    proc = subprocess.run([sys.executable, "-m", "pruning", "prune", "--checkpoint", str(tmp_path / "m.pt"),
                           "--trust-checkpoint", "--data", str(tmp_path / "x.pt"), "--k", "3", "--out",
                           str(tmp_path / "p.safetensors"), "--no-progress"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "6 -> 3" in proc.stdout
    assert json.loads((tmp_path / "p.json").read_text())["after"]["T"] == 5


@pytest.mark.parametrize("device, message", [
    ("tpu", "argument --device: expected a torch device such as 'cpu' or 'cuda:0', got 'tpu'"),
    ("meta", "argument --device: the meta device holds no values"),
    ("cuda:64", "argument --device: 'cuda:64' requested, but torch finds"),
])
def test_a_device_this_machine_lacks_is_refused_before_anything_runs(tmp_path, capsys, device, message):
    from benchmarks.__main__ import main as benchmarks_main

    with pytest.raises(SystemExit) as exit_info:
        run_cli("prune", "--checkpoint", tmp_path / "m.pt", "--data", tmp_path / "x.pt", "--k", "2",
                "--out", tmp_path / "p.safetensors", "--device", device)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        benchmarks_main(["demo", "--out", str(tmp_path / "demo"), "--device", device])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_a_model_whose_forward_takes_more_than_a_batch_prunes_with_forward(tmp_path, importable, capsys):
    """A language model called as model(tokens, hidden) failed with the model's own TypeError and no way around it
    on the command line; the error now says what to pass, and --forward names the function that runs the model."""
    from safetensors.torch import save_file

    lm_zoo = importable("lm_zoo", """
        import torch

        class WordLM(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = torch.nn.Embedding(40, 12)
                self.rnn = torch.nn.LSTM(12, 12, 2)
                self.decoder = torch.nn.Linear(12, 40)

            def forward(self, tokens, hidden):
                out, hidden = self.rnn(self.embed(tokens), hidden)
                return self.decoder(out), hidden

        def build():
            return WordLM()

        def forward(model, tokens):
            zeros = model.embed.weight.new_zeros(2, tokens.shape[1], model.rnn.hidden_size)
            return model(tokens, (zeros, zeros.clone()))
    """)
    torch.manual_seed(18)
    model = lm_zoo.build()
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    batches = [torch.randint(0, 40, (10, 4)) for _ in range(3)]  # time-major token batches
    torch.save(batches, tmp_path / "calib.pt")
    args = ["prune", "--checkpoint", tmp_path / "w.safetensors", "--model", "lm_zoo:build", "--data",
            tmp_path / "calib.pt", "--k", "6", "--out", tmp_path / "p.safetensors"]
    assert run_cli(*args) == 2
    assert "needs forward=, a function forward(model, batch) (on the command line: --forward" in \
        capsys.readouterr().err
    assert run_cli(*args, "--forward", "lm_zoo:forward") == 0
    expected = spectral_prune(model, batches, k=6, forward=lm_zoo.forward)
    summary = json.loads((tmp_path / "p.json").read_text())
    assert [lp["units"] for lp in summary["layers"]] == [lp.units for lp in expected.layers]
    rebuilt = load_pruned(tmp_path / "p.safetensors", model=lm_zoo.build()).eval()
    with torch.no_grad():
        torch.testing.assert_close(lm_zoo.forward(rebuilt, batches[0])[0],
                                   lm_zoo.forward(expected.model.eval(), batches[0])[0], rtol=0, atol=0)
    sys.modules.pop("lm_zoo", None)


def test_states_of_a_stack_are_one_tensor_per_layer_and_direction(tmp_path, capsys):
    """A single tensor of states for a 2-layer network was refused as 'covariance: expected one covariance per
    layer', naming an argument the command line does not have; the error now names --states and the form it
    takes, and that form prunes as the API does from the same states."""
    torch.manual_seed(20)
    lstm, head = torch.nn.LSTM(3, 8, num_layers=2, batch_first=True), torch.nn.Linear(8, 2)
    torch.save((lstm, head), tmp_path / "m.pt")
    states = [[torch.randn(10, 5, 8)], [torch.randn(10, 5, 8)]]
    torch.save(states[1][0], tmp_path / "one.pt")
    torch.save(states, tmp_path / "grid.pt")
    args = ["prune", "--checkpoint", tmp_path / "m.pt", "--trust-checkpoint", "--k", "3", "--out",
            tmp_path / "p.safetensors"]
    assert run_cli(*args, "--states", tmp_path / "one.pt") == 2
    assert "--states: the network has 2 layer(s) and 1 direction(s)" in capsys.readouterr().err
    assert run_cli(*args, "--states", tmp_path / "grid.pt") == 0
    grid = [[CovarianceStats.from_states(s) for s in row] for row in states]
    expected = spectral_prune((lstm, head), None, k=3, covariance=grid)
    summary = json.loads((tmp_path / "p.json").read_text())
    assert [lp["units"] for lp in summary["layers"]] == [lp.units for lp in expected.layers]


_CLASSIFIER = """
import torch

class Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.GRU(3, 10, batch_first=True)
        self.head = torch.nn.Linear(10, 4)

    def forward(self, x):
        return self.head(self.encoder(x)[0][:, -1])

def build():
    return Classifier()
"""


@pytest.fixture
def classifier_zoo(tmp_path, importable):
    """A whole model built by --model from weights only, and importable for the reference run."""
    from safetensors.torch import save_file

    torch.manual_seed(21)
    model = importable("classifier_zoo", _CLASSIFIER).build()
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    return model


@pytest.mark.parametrize("form", ["npy", "npy_big_endian", "npz_named", "npz_unnamed", "safetensors", "torch"])
def test_numpy_and_safetensors_data_prune_as_the_api_does(tmp_path, classifier_zoo, form):
    """A NumPy array saved with np.save was read with torch.load and failed with a traceback from the unpickler.
    .npy, .npz and .safetensors files are now read (without unpickling), and NumPy's float64 is given to the model
    in its dtype: the units and the pruned model are those of the API on the float32 tensor."""
    import numpy as np
    from safetensors.torch import save_file

    x = torch.randn(60, 8, 3, generator=torch.Generator().manual_seed(22))
    x64 = x.double().numpy()  # NumPy's default dtype, which the model does not take
    data = tmp_path / f"x.{form.split('_')[0]}"
    if form == "npy":
        np.save(data, x64)
    elif form == "npy_big_endian":
        np.save(data, x64.astype(">f8"))
    elif form == "npz_named":
        np.savez(data, inputs=x64)
    elif form == "npz_unnamed":
        np.savez(data, x64)
    elif form == "safetensors":
        save_file({"inputs": x.double()}, data)
    else:
        torch.save(x.double(), data)
    assert run_cli("prune", "--checkpoint", tmp_path / "w.safetensors", "--model", "classifier_zoo:build",
                   "--data", data, "--k", "4", "--out", tmp_path / "p.safetensors") == 0
    expected = spectral_prune(classifier_zoo, x, k=4)
    summary = json.loads((tmp_path / "p.json").read_text())
    assert summary["layers"][0]["units"] == expected.units
    import classifier_zoo as zoo

    rebuilt = load_pruned(tmp_path / "p.safetensors", model=zoo.build()).eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), expected.model.eval()(x), rtol=0, atol=0)


def test_npz_lengths_pack_the_padding_as_the_api_does(tmp_path):
    """``np.savez(path, inputs=padded, lengths=lengths)`` is the NumPy form of ``{"inputs", "lengths"}``: the padding
    steps stay out of the statistics as with ``lengths=`` in the API."""
    import numpy as np

    torch.manual_seed(23)
    gru, head = torch.nn.GRU(2, 9, batch_first=True), torch.nn.Linear(9, 3)
    torch.save((gru, head), tmp_path / "g.pt")
    x = torch.randn(40, 10, 2)
    lengths = torch.randint(1, 11, (40,))
    x[torch.arange(10)[None, :] >= lengths[:, None]] = 1e3  # padding that would dominate Sigma if counted
    np.savez(tmp_path / "x.npz", inputs=x.numpy(), lengths=lengths.numpy())
    assert run_cli("prune", "--checkpoint", tmp_path / "g.pt", "--trust-checkpoint", "--data", tmp_path / "x.npz",
                   "--k", "3", "--out", tmp_path / "p.safetensors") == 0
    summary = json.loads((tmp_path / "p.json").read_text())
    expected = spectral_prune((gru, head), x, k=3, lengths=lengths)
    assert summary["layers"][0]["units"] == expected.units
    assert summary["layers"][0]["units"] != spectral_prune((gru, head), x, k=3).units


def test_numpy_states_give_the_same_selection(tmp_path):
    import numpy as np

    torch.manual_seed(24)
    gru, head = torch.nn.GRU(2, 10, batch_first=True), torch.nn.Linear(10, 3)
    torch.save((gru, head), tmp_path / "g.pt")
    H = torch.randn(30, 7, 10, dtype=torch.float64) * torch.linspace(0.1, 2.0, 10)
    np.save(tmp_path / "h.npy", H.numpy())
    assert run_cli("prune", "--checkpoint", tmp_path / "g.pt", "--trust-checkpoint", "--states", tmp_path / "h.npy",
                   "--k", "4", "--out", tmp_path / "p.safetensors") == 0
    summary = json.loads((tmp_path / "p.json").read_text())
    expected = spectral_prune((gru, head), None, k=4, covariance=CovarianceStats.from_states(H))
    assert summary["layers"][0]["units"] == expected.units


@pytest.mark.parametrize("case, message", [
    ("object_npy", "could not be read without unpickling"),
    ("string_npy", "holds an array of dtype <U1; expected numbers"),
    ("npz_keys", "must hold the inputs under the key 'inputs'; got keys ['a', 'b']"),
    ("garbage", "is not a readable torch.save file, .npy, .npz or .safetensors file ("),
    ("bad_safetensors", "is not a readable safetensors file"),
    ("pickled_class", "holds a pickled object other than tensors"),
])
def test_unreadable_data_files_give_one_line_errors(tmp_path, capsys, case, message):
    """Each was a traceback (the unpickler's, or torch's several paragraphs about weights_only)."""
    import numpy as np

    rnn, head = lstm_pair()
    torch.save((rnn, head), tmp_path / "m.pt")
    x = np.random.default_rng(0).standard_normal((5, 4, 3))
    data = tmp_path / {"object_npy": "x.npy", "string_npy": "x.npy", "npz_keys": "x.npz",
                       "bad_safetensors": "x.safetensors"}.get(case, "x.pt")
    if case == "object_npy":
        np.save(data, np.array([x[0], x[1, :2]], dtype=object), allow_pickle=True)
    elif case == "string_npy":
        np.save(data, np.array(["a", "b"]))
    elif case == "npz_keys":
        np.savez(data, a=x, b=x)
    elif case in ("garbage", "bad_safetensors"):
        data.write_bytes(b"not a data file")
    else:
        torch.save({"inputs": torch.as_tensor(x), "why": argparse_namespace()}, data)
    out = tmp_path / "p.safetensors"
    assert run_cli("prune", "--checkpoint", tmp_path / "m.pt", "--trust-checkpoint", "--data", data, "--k", "6",
                   "--out", out) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def argparse_namespace():
    import argparse

    return argparse.Namespace(note="an object whose unpickling names a class")


def test_a_damaged_checkpoint_gives_the_unpicklers_reason_in_one_line(tmp_path, capsys):
    (tmp_path / "m.pt").write_bytes(b"garbage")
    torch.save(torch.randn(3, 4, 2), tmp_path / "x.pt")
    assert run_cli("prune", "--checkpoint", tmp_path / "m.pt", "--data", tmp_path / "x.pt", "--k", "2",
                   "--out", tmp_path / "p.safetensors") == 2
    err = capsys.readouterr().err
    assert "is not a readable torch checkpoint (" in err and "weights_only" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argument", ["--checkpoint", "--data"])
def test_a_directory_is_named_as_one(tmp_path, capsys, argument):
    """A directory was reported as 'no such file'."""
    rnn, head = lstm_pair()
    torch.save((rnn, head), tmp_path / "m.pt")
    torch.save(torch.randn(5, 4, 3), tmp_path / "x.pt")
    paths = {"--checkpoint": tmp_path / "m.pt", "--data": tmp_path / "x.pt", argument: tmp_path}
    assert run_cli("prune", "--checkpoint", paths["--checkpoint"], "--trust-checkpoint", "--data", paths["--data"],
                   "--k", "6", "--out", tmp_path / "p.safetensors") == 2
    assert f"error: {argument}: {str(tmp_path)!r} is a directory; expected a file" in capsys.readouterr().err


def test_an_encoder_whose_final_state_starts_a_decoder_prunes_with_an_empty_readout(tmp_path, importable, capsys):
    """``--readout ''`` is ``readout=[]``: the encoder's output sequence has no read-out and its final state starts
    the decoder, so the pruned encoder returns that state reconstructed; the CLI writes what the API computes, and
    the file loads into a fresh model that computes the same outputs."""
    from safetensors.torch import save_file

    zoo = importable("seq2seq_zoo", """
        import torch

        class Seq2Seq(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.enc = torch.nn.GRU(3, 10, batch_first=True)
                self.dec = torch.nn.GRU(2, 10, batch_first=True)
                self.head = torch.nn.Linear(10, 4)

            def forward(self, x):
                _, h = self.enc(x[..., :3])
                return self.head(self.dec(x[..., 3:], h)[0])

        def build():
            return Seq2Seq()
    """)
    torch.manual_seed(21)
    model = zoo.build().eval()
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    x = torch.randn(24, 6, 5)
    torch.save(x, tmp_path / "calib.pt")
    args = ["prune", "--checkpoint", tmp_path / "w.safetensors", "--model", "seq2seq_zoo:build", "--data",
            tmp_path / "calib.pt", "--rnn", "enc", "--k", "4", "--out", tmp_path / "p.safetensors"]
    assert run_cli(*args) == 2  # the head reading the decoder is found by its width, and the check names the way
    assert "readout=[] if none" in capsys.readouterr().err
    assert run_cli(*args, "--readout", "") == 0
    expected = spectral_prune(model, x, k=4, rnn="enc", readout=[])
    summary = json.loads((tmp_path / "p.json").read_text())
    assert [lp["units"] for lp in summary["layers"]] == [lp.units for lp in expected.layers]
    rebuilt = load_pruned(tmp_path / "p.safetensors", model=zoo.build()).eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), expected.model(x), rtol=0, atol=0)
        assert rebuilt.enc.hidden_size == 4 and rebuilt.dec.hidden_size == 10


def test_the_version_is_the_one_pyproject_declares_and_pruned_files_record_it(tmp_path, capsys):
    """``--version``, ``pruning.__version__`` and the ``written_by`` field of a saved description all give the
    version in pyproject.toml (the installed distribution's metadata comes from it)."""
    import re
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    import pruning

    declared = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["version"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert re.fullmatch(rf"python -m pruning {re.escape(declared)}\s*", capsys.readouterr().out)
    assert pruning.__version__ == declared
    torch.manual_seed(0)
    res = spectral_prune((torch.nn.GRU(2, 6, batch_first=True), torch.nn.Linear(6, 2)), torch.randn(8, 4, 2), k=3)
    record = json.loads(res.save(tmp_path / "p.safetensors").read_text())
    assert record["written_by"] == f"spectral-rnn-pruning {declared}"
