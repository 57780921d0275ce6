"""Deployment, measured (issue: prune the models people have, part 5): a digits LSTM and GRU of width 512 pruned to
128, against int8 dynamic quantization (``torch.ao.quantization.quantize_dynamic``) and both together.

For each of {full, pruned, int8, pruned + int8}: the size of the saved weights, the latency of classifying the test
set in PyTorch and (float models) in onnxruntime, and the test accuracy. The networks read the 8x8 digits one row
per step (T = 8, d_x = 8), are trained for 15 epochs, and must reach the floor ``ACCURACY_FLOOR`` for the comparison
to count. Every ratio is of two timings or sizes taken in the same run. Run with ``make bench``.
"""

from __future__ import annotations

import copy
import io
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

from benchmarks.conftest import timed_interleaved
from benchmarks.data import pixel_digits, regroup_steps
from benchmarks.models import RNNClassifier
from benchmarks.training import TrainConfig, train_classifier
from pruning import spectral_prune

ACCURACY_FLOOR = 0.90  # the full network's test accuracy below which the comparison does not count
WIDTH, K = 512, 128


def _weights_bytes(model: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def _quantized(model: torch.nn.Module) -> torch.nn.Module:
    """int8 dynamic quantization of the recurrent and linear modules (weights int8, activations float)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice
        return quantize_dynamic(copy.deepcopy(model), {torch.nn.LSTM, torch.nn.GRU, torch.nn.Linear},
                                dtype=torch.qint8)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_pruning_and_quantization_multiply(benchmark, report_ratio, cell):
    ort = pytest.importorskip("onnxruntime")
    from pruning.export import export_onnx

    data = regroup_steps(pixel_digits(), 8)
    torch.manual_seed(0)
    model = RNNClassifier(data.input_size, WIDTH, data.n_classes, cell=cell, irnn=False)
    train_classifier(model, data.x_train, data.y_train, TrainConfig(epochs=15, lr=2e-3, batch_size=64), seed=0,
                     progress=False)
    pruned = spectral_prune(model, data.x_train, k=K).model.eval()
    variants = {"full": model.eval(), "pruned": pruned, "int8": _quantized(model), "pruned + int8": _quantized(pruned)}
    x = data.x_test

    def run(m):
        return lambda: m(x)

    with torch.no_grad():
        times = dict(zip(variants, timed_interleaved([run(m) for m in variants.values()], repeat=7)))
        # (a quantized module keeps its weights packed, not as parameters: accuracy from the outputs directly)
        rows = {name: dict(bytes=_weights_bytes(m), torch_s=times[name],
                           accuracy=float((m(x).argmax(1) == data.y_test).double().mean()))
                for name, m in variants.items()}
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        sessions = {}
        for name in ("full", "pruned"):
            path = export_onnx(variants[name], x[:2], Path(tmp) / f"{name}.onnx")
            rows[name]["onnx_bytes"] = path.stat().st_size
            sessions[name] = ort.InferenceSession(str(path), options)
        feed = {"input": x.numpy()}
        ort_times = timed_interleaved([lambda s=s: s.run(None, feed) for s in sessions.values()], repeat=7)
        for name, t in zip(sessions, ort_times):
            rows[name]["onnxruntime_s"] = t
    benchmark.pedantic(run(variants["pruned + int8"]), rounds=5, iterations=1)
    full = rows["full"]
    size = {n: full["bytes"] / r["bytes"] for n, r in rows.items()}
    speed = {n: full["torch_s"] / r["torch_s"] for n, r in rows.items()}
    floor_met = full["accuracy"] >= ACCURACY_FLOOR
    details = dict(rows=rows, accuracy_floor=ACCURACY_FLOOR, floor_met=floor_met,
                   size_product=size["pruned"] * size["int8"], speed_product=speed["pruned"] * speed["int8"],
                   onnxruntime_speedup=full["onnxruntime_s"] / rows["pruned"]["onnxruntime_s"])
    report_ratio(f"{cell} {WIDTH} -> {K} + int8: weights size reduction (pruned {size['pruned']:.1f}x, int8 "
                 f"{size['int8']:.1f}x, product {details['size_product']:.1f}x)", size["pruned + int8"],
                 "reported", True, **details)
    report_ratio(f"{cell} {WIDTH} -> {K} + int8: PyTorch speed-up on the test set (pruned {speed['pruned']:.1f}x, "
                 f"int8 {speed['int8']:.1f}x, product {details['speed_product']:.1f}x)", speed["pruned + int8"],
                 "reported", True)
    report_ratio(f"{cell} {WIDTH} -> {K}: onnxruntime speed-up of the pruned model", details["onnxruntime_speedup"],
                 "reported", True)
    accs = ", ".join(f"{n} {r['accuracy']:.3f}" for n, r in rows.items())
    report_ratio(f"{cell} {WIDTH} -> {K}: test accuracy ({accs}; floor {ACCURACY_FLOOR} "
                 f"{'met' if floor_met else 'NOT met'})", rows["pruned + int8"]["accuracy"] / full["accuracy"],
                 "reported", floor_met)
