"""The peer library side by side: what Torch-Pruning does with the hidden units of ``nn.RNN``, ``nn.LSTM`` and
``nn.GRU``.

Torch-Pruning (the ``peers`` extra) prunes structured channels through a dependency graph; its users have asked
for RNN/LSTM/GRU hidden-size pruning since 2021. :func:`torch_pruning_case` asks it to prune the hidden units of
one recurrent model to width k with its magnitude or Taylor importance, exactly as its README shows for a CNN
(``MetaPruner`` with the read-out's outputs ignored, since they are the classes), and records what happened:

* ``pruned``: the recurrent module's hidden size became k and the model still runs with outputs of the same shape;
  then the accuracy, parameters and latency are measured when data are given;
* ``size unchanged``: it returned without error, but the hidden size (and the parameter count) stayed the same;
* ``error in pruning`` / ``error in forward``: it raised, while pruning or when the pruned model was run, with the
  exception named;
* ``not installed``: the extra is missing.

The outcome is a result about the installed version (recorded in every row), not a failure of this suite.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

__all__ = ["torch_pruning_version", "torch_pruning_case", "peer_cases", "peer_table", "peer_section", "PEER_SHAPES",
           "PEERS_FILE"]

#: The table of a run directory that holds the peer's cases (written by ``reproduce``, read by the report).
PEERS_FILE = "peers.csv"

#: (cell, num_layers, bidirectional) of the synthetic cases: every module type at depth 1 and 2 and bidirectional.
PEER_SHAPES = tuple((cell, layers, bi) for cell in ("RNN", "LSTM", "GRU") for layers, bi in ((1, False), (2, False),
                                                                                            (1, True)))


def torch_pruning_version() -> Optional[str]:
    """The installed Torch-Pruning's version (its distribution's, which 1.6.1's own ``__version__`` string lags
    behind), or None."""
    try:
        import torch_pruning
    except ImportError:
        return None
    from importlib import metadata

    try:
        return metadata.version("torch-pruning")
    except metadata.PackageNotFoundError:  # imported from a source tree
        return str(getattr(torch_pruning, "__version__", "unknown"))


def _error(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _hidden(model: nn.Module) -> int:
    return int(getattr(model, "rnn").hidden_size)


def torch_pruning_case(model: nn.Module, example: torch.Tensor, k: int, *, importance: str = "magnitude",
                       data: Optional[tuple] = None, targets: Optional[torch.Tensor] = None) -> Dict[str, Any]:
    """Ask Torch-Pruning to prune ``model.rnn``'s hidden units to ``k`` (a copy; ``model`` is untouched).

    ``model`` has ``.rnn`` (an ``nn.RNN``/``nn.LSTM``/``nn.GRU``) and ``.readout`` (the ``nn.Linear`` of the classes,
    kept whole). ``example``: inputs to trace the graph with. ``importance``: ``"magnitude"`` (L2 of the grouped
    weights) or ``"taylor"`` (needs ``targets`` for ``example``: the gradient of the cross-entropy is computed first).
    ``data = (x_test, y_test)``: where it prunes, the test accuracy and the best-of-5 latency of one pass over
    ``x_test`` are measured. Returns one row (see the module docstring for ``outcome``).
    """
    if importance not in ("magnitude", "taylor"):
        raise ValueError(f"importance: expected 'magnitude' or 'taylor', got {importance!r}")
    rnn = model.rnn
    row: Dict[str, Any] = dict(peer="Torch-Pruning", version=torch_pruning_version(), cell=type(rnn).__name__,
                               num_layers=int(rnn.num_layers), bidirectional=bool(rnn.bidirectional),
                               importance=importance, m=_hidden(model), k=int(k), params_before=_params(model),
                               hidden_after="", params_after="", outcome="", error="")
    if row["version"] is None:
        return dict(row, outcome="not installed")
    if importance == "taylor" and targets is None:
        raise ValueError("targets: the Taylor importance needs the labels of the example")
    import torch_pruning as tp

    pruned = copy.deepcopy(model)
    with torch.no_grad():
        shape = tuple(model(example).shape)
    try:
        if importance == "taylor":
            imp = tp.importance.TaylorImportance()
            nn.functional.cross_entropy(pruned(example), targets).backward()
        else:
            imp = tp.importance.MagnitudeImportance(p=2)
        pruner = tp.pruner.MetaPruner(pruned, example, importance=imp, pruning_ratio=1.0 - k / row["m"],
                                      ignored_layers=[pruned.readout])
        pruner.step()
    except Exception as exc:  # the peer's own failure is the result being recorded
        return dict(row, outcome="error in pruning", error=_error(exc))
    row.update(hidden_after=_hidden(pruned), params_after=_params(pruned))
    try:
        with torch.no_grad():
            out = pruned(example)
    except Exception as exc:
        return dict(row, outcome="error in forward", error=_error(exc))
    if tuple(out.shape) != shape:
        return dict(row, outcome="wrong output shape", error=f"{tuple(out.shape)} instead of {shape}")
    if row["hidden_after"] == row["m"]:
        return dict(row, outcome="size unchanged")
    row["outcome"] = "pruned" if row["hidden_after"] == k else f"pruned to {row['hidden_after']} (asked {k})"
    if data is not None:
        from benchmarks.training import accuracy

        x, y = data
        row["test_accuracy"] = accuracy(pruned, x, y)
        times = []
        with torch.no_grad():
            for _ in range(5):
                t0 = time.perf_counter()
                pruned(x)
                times.append(time.perf_counter() - t0)
        row["latency_s"] = min(times)
    return row


def peer_cases(*, m: int = 16, k: int = 8, shapes: Sequence[tuple] = PEER_SHAPES, seed: int = 0) -> List[Dict]:
    """:func:`torch_pruning_case` on small untrained models of every shape in ``shapes``, with both importances:
    what the peer does with each module type and depth."""
    from benchmarks.models import RNNClassifier

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 5, 3, generator=g)
    y = torch.randint(0, 4, (6,), generator=g)
    rows = []
    for cell, layers, bi in shapes:
        torch.manual_seed(seed)
        model = RNNClassifier(3, m, 4, cell=cell, irnn=False, num_layers=layers, bidirectional=bi)
        for importance in ("magnitude", "taylor"):
            rows.append(torch_pruning_case(model, x, k, importance=importance, targets=y))
    return rows


def peer_table(rows: Sequence[Dict]) -> str:
    """Markdown: one line per case."""
    if not rows:
        return ""
    lines = ["| model | module | layers | bidirectional | importance | m -> k | outcome | hidden size after | "
             "parameters before -> after | test accuracy | latency | error |", "|" + "---|" * 12]
    for r in rows:
        after = r.get("params_after", "")
        acc, lat = r.get("test_accuracy", ""), r.get("latency_s", "")
        lines.append(f"| {r.get('model') or 'untrained'} | {r['cell']} | {r['num_layers']} | "
                     f"{'yes' if r['bidirectional'] in (True, 'True') else 'no'} | {r['importance']} | "
                     f"{r['m']} -> {r['k']} | {r['outcome']} | {r.get('hidden_after', '')} | "
                     f"{r['params_before']} -> {after if after != '' else '-'} | "
                     f"{f'{float(acc):.3f}' if acc != '' else '-'} | {f'{1e3 * float(lat):.1f} ms' if lat != '' else '-'} | "
                     f"{r.get('error', '')} |")
    return "\n".join(lines)


def peer_section(out) -> List[str]:
    """The report's section on the peer library, from ``DIR/peers.csv`` (empty when the run has none)."""
    from pathlib import Path

    from benchmarks.runio import read_csv

    rows = read_csv(Path(out) / PEERS_FILE)
    if not rows:
        return []
    versions = sorted({r["version"] for r in rows if r.get("version")})
    outcomes = sorted({r["outcome"] for r in rows})
    return ["## The peer library: Torch-Pruning", "",
            f"Torch-Pruning {', '.join(versions) or '(not installed)'} asked to prune the hidden units of each module "
            f"to k with its magnitude and Taylor importances, as its README prunes a CNN (`MetaPruner`, the read-out's "
            f"class outputs ignored): the trained networks of this run and small untrained models of every module "
            f"type and depth. Outcomes seen: {', '.join(outcomes)}. Where it raises or leaves the size unchanged, "
            f"it has no accuracy to compare; that is the result for this version (benchmarks/peers.py).", "",
            peer_table(rows), ""]
