"""Deployable pruned models: ONNX files that onnxruntime runs like PyTorch (float32 tolerance, other batch sizes and
sequence lengths than the example), torch.export and TorchScript of every pruned module type, and the CLI."""

import numpy as np
import pytest
import torch

from pruning import RecurrentStack, spectral_prune
from pruning.__main__ import main
from pruning.export import SequenceReadout, export_onnx

ort = pytest.importorskip("onnxruntime")  # the 'deploy' extra, installed by dev


def _run(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path))
    return session.run(None, {"input": x.numpy()})[0]


def _pruned(cell, layers, bidirectional, batch_first, ks, seed=0):
    torch.manual_seed(seed)
    kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    rnn = torch.nn.RNN(3, 8, nonlinearity="relu", **kw) if cell == "RNN" else getattr(torch.nn, cell)(3, 8, **kw)
    head = torch.nn.Linear((2 if bidirectional else 1) * 8, 2)
    x = torch.randn(30, 6, 3) if batch_first else torch.randn(6, 30, 3)
    res = spectral_prune((rnn, head), x, k=ks)
    return res.rnn.eval(), res.readout


CASES = [("RNN", 1, False, True, 4), ("LSTM", 1, False, True, 5), ("GRU", 1, True, True, 3),
         ("LSTM", 2, True, False, 4), ("GRU", 2, False, True, [5, 3]), ("LSTM", 2, True, True, [6, 2]),
         ("RNN", 3, True, False, [2, 5, 4])]


@pytest.mark.parametrize("cell,layers,bidirectional,batch_first,ks", CASES)
def test_onnxruntime_runs_the_pruned_model_like_pytorch(tmp_path, cell, layers, bidirectional, batch_first, ks):
    rnn, head = _pruned(cell, layers, bidirectional, batch_first, ks)
    assert isinstance(rnn, RecurrentStack) == isinstance(ks, list)
    example = torch.randn(2, 4, 3) if batch_first else torch.randn(4, 2, 3)
    path = export_onnx((rnn, head), example, tmp_path / "m.onnx")
    for shape in ((5, 9, 3), (1, 1, 3), (3, 20, 3)):  # other batch sizes and lengths than the example
        x = torch.randn(*shape) if batch_first else torch.randn(shape[1], shape[0], 3)
        with torch.no_grad():
            ref = head(rnn(x)[0]).numpy()
        np.testing.assert_allclose(_run(path, x), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell,layers,bidirectional,batch_first,ks", CASES)
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_torch_export_and_script_of_the_pruned_module(cell, layers, bidirectional, batch_first, ks):
    rnn, head = _pruned(cell, layers, bidirectional, batch_first, ks)
    x = torch.randn(3, 7, 3) if batch_first else torch.randn(7, 3, 3)
    with torch.no_grad():
        ref = rnn(x)
        exported = torch.export.export(rnn, (x,)).module()(x)
        # TorchScript compiles the module inside a model (a native nn.RNN is scripted only as a submodule)
        scripted = torch.jit.script(SequenceReadout(rnn, head))(x)
    torch.testing.assert_close(exported[0], ref[0], rtol=0, atol=1e-6)
    h_ref, h_got = (ref[1], exported[1]) if isinstance(ref[1], torch.Tensor) else (ref[1][0], exported[1][0])
    torch.testing.assert_close(h_got, h_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(scripted, head(ref[0]), rtol=0, atol=1e-6)


def test_a_whole_user_model_exports(tmp_path):
    from user_model_zoo import LastStepHead

    torch.manual_seed(1)
    model = LastStepHead()
    res = spectral_prune(model, torch.randn(40, 6, 3), k=4)
    res.model.train()
    path = export_onnx(res.model, torch.randn(2, 6, 3), tmp_path / "whole.onnx")
    assert res.model.training  # the export restores the mode it found
    x = torch.randn(7, 11, 3)
    with torch.no_grad():
        np.testing.assert_allclose(_run(path, x), res.model.eval()(x).numpy(), rtol=1e-4, atol=1e-5)


def test_bad_export_arguments_are_refused(tmp_path):
    rnn, head = _pruned("GRU", 1, False, True, 3)
    with pytest.raises(TypeError, match="example: expected a tensor"):
        export_onnx((rnn, head), [1, 2], tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="dynamic_axes: expected axes of the 3-d example"):
        export_onnx((rnn, head), torch.randn(2, 3, 3), tmp_path / "x.onnx", dynamic_axes=(0, 3))
    with pytest.raises(ValueError, match="model: expected a module or a pair"):
        export_onnx((rnn, head, head), torch.randn(2, 3, 3), tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_cli_prune_with_onnx_and_export(tmp_path, capsys):
    from safetensors.torch import save_file

    from user_model_zoo import build_classifier, make_data

    model = build_classifier()
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    tokens = make_data(64, seed=3)[0]
    torch.save(tokens, tmp_path / "tokens.pt")
    out = tmp_path / "pruned.safetensors"
    common = ["--model", "user_model_zoo:build_classifier", "--data", str(tmp_path / "tokens.pt")]
    assert main(["prune", "--checkpoint", str(weights), *common, "--rnn", "encoder", "--readout", "head", "--k", "6",
                 "--out", str(out), "--onnx", str(tmp_path / "a.onnx"), "--no-progress"]) == 0, \
        capsys.readouterr().err
    assert main(["export", "--pruned", str(out), *common, "--out", str(tmp_path / "b.onnx")]) == 0, \
        capsys.readouterr().err
    from pruning import load_pruned

    pruned = load_pruned(out, model=build_classifier()).eval()
    x = make_data(9, seed=4)[0]
    with torch.no_grad():
        ref = pruned(x).numpy()
    for name in ("a.onnx", "b.onnx"):
        np.testing.assert_allclose(_run(tmp_path / name, x), ref, rtol=1e-4, atol=1e-5)


def test_export_takes_numpy_example_inputs_in_the_models_dtype(tmp_path, capsys):
    """The export command reads its example inputs as prune reads --data: a float64 .npy array (NumPy's default)
    is given to the float32 model in its dtype, and the ONNX file computes what the pruned model does."""
    torch.manual_seed(25)
    rnn, head = torch.nn.LSTM(3, 10, batch_first=True), torch.nn.Linear(10, 2)
    torch.save((rnn, head), tmp_path / "m.pt")
    x = np.random.default_rng(25).standard_normal((20, 6, 3))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "p.safetensors"
    assert main(["prune", "--checkpoint", str(tmp_path / "m.pt"), "--trust-checkpoint", "--data",
                 str(tmp_path / "x.npy"), "--k", "4", "--out", str(out), "--no-progress"]) == 0, \
        capsys.readouterr().err
    assert main(["export", "--pruned", str(out), "--data", str(tmp_path / "x.npy"), "--out",
                 str(tmp_path / "p.onnx")]) == 0, capsys.readouterr().err
    from pruning import load_pruned

    small, small_head = load_pruned(out)
    xt = torch.as_tensor(x, dtype=torch.float32)
    with torch.no_grad():
        ref = small_head(small(xt)[0]).numpy()
    np.testing.assert_allclose(_run(tmp_path / "p.onnx", xt), ref, rtol=1e-4, atol=1e-5)
