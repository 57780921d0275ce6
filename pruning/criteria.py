"""Selection criteria practitioners use instead of spectral pruning, as small pluggable objects.

Every criterion scores the units of each layer and direction of a recurrent module; :func:`prune_by_criterion` keeps
the k highest-scoring units of each and compresses the module, with the reconstruction matrix A_J of S1 (from the
covariance of the original network) or by plain slicing. A criterion is any object with a ``name`` and a method
``scores(pair, data, **context) -> [layer][direction] arrays of m_l scores`` (higher = keep); register your own with
:func:`register_criterion`.

* ``"taylor"`` (:class:`TaylorImportance`): first-order Taylor importance of a unit (Molchanov et al., CVPR 2019),
  ``|sum_{sequences, t} dL/dh_{t,j} h_{t,j}|`` over the calibration data for the task loss, where ``dL/dh_{t,j}`` is
  the total derivative through the recurrence: the first-order change of the loss when unit j's state is scaled by
  ``1 + eps`` at every step.
* ``"mean_activation"`` (:class:`MeanActivation`): the mean of ``|h_j|`` over every real step.
* ``"apoz"`` (:class:`APoZ`, Hu et al. 2016): the average percentage of zeros of ReLU units; the score is
  ``1 - APoZ`` (a unit that is mostly zero is pruned first). Refused for non-ReLU modules, where zeros do not occur.
* ``"geometric_median"`` (:class:`GeometricMedian`, after Gkalelis and Mezaris 2020): each unit is the vector of its
  weights in every gate block (its rows of ``W_ih`` and ``W_hh``); units nearest the geometric median of a
  layer-direction's units are the most replaceable and are pruned first (score = distance to the median).
  :func:`eigen_widths` gives per-layer widths from each layer's covariance spectrum, the eigenvalue-based rates the
  paper uses for stacked networks.

Output reconstruction in the style of ThiNet (Luo et al., ICCV 2017), greedy selection of the units that best
reproduce, by least squares, what the kept units must feed downstream (the next step's recurrent pre-activation and
the read-out), is not a separate criterion: it is the limit theta -> infinity of the S3 objective with
``Z = "both"`` (docs/method.md, section 3; tests/test_criteria.py checks it against a brute-force least-squares
greedy), available as ``spectral_prune(..., theta=1e8, Z="both")``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from pruning.cells import layer_as_cell
from pruning.compress import compress_stack
from pruning.covariance import layer_covariances
from pruning.model_parts import ModelParts, replace_modules
from pruning.modules import as_layers, directions, gate_blocks, projection, split_model
from pruning.result import LayerPrune, PruneResult
from pruning.sequences import iter_sequence_batches, pack
from theory.information import reconstruction_matrix
from theory.spectrum import eigenvalues

__all__ = ["gated_forward", "Criterion", "TaylorImportance", "MeanActivation", "APoZ", "GeometricMedian", "CRITERIA",
           "register_criterion", "prune_by_criterion", "geometric_median", "eigen_widths", "layer_states"]

Scores = List[List[np.ndarray]]


class Criterion:
    """A unit-importance criterion: ``scores(pair, data, **context)`` returns ``[layer][direction]`` arrays (higher =
    keep). ``pair`` is ``(rnn, readout)``; ``data`` are the calibration inputs (and, for criteria that need them,
    ``targets`` come through the context)."""

    name = "criterion"

    def scores(self, pair, data, **context) -> Scores:  # pragma: no cover - interface
        raise NotImplementedError


def layer_states(rnn: nn.Module, data: Any, *, batch_size: int = 256, lengths: Any = None):
    """Yield, batch by batch, the states of every layer-direction on the real steps: ``[layer][direction]`` tensors
    (steps, m_l), float64."""
    layers = as_layers(rnn)
    D = directions(rnn)
    param = next(rnn.parameters())
    with torch.no_grad():
        for batch in iter_sequence_batches(data, batch_size, batch_first=rnn.batch_first, lengths=lengths):
            x = pack(batch, None, batch_first=rnn.batch_first, device=param.device, dtype=param.dtype)
            out = []
            for layer in layers:
                x, _ = layer(x)
                states = (x.data if isinstance(x, nn.utils.rnn.PackedSequence) else x).reshape(
                    -1, D * layer.hidden_size).to(torch.float64)
                m = layer.hidden_size
                out.append([states[:, d * m:(d + 1) * m] for d in range(D)])
            yield out


def _state_means(rnn: nn.Module, data: Any, statistic: Callable[[torch.Tensor], torch.Tensor], *,
                 batch_size: int, lengths: Any) -> Scores:
    """The mean of ``statistic(h)`` (elementwise, float64) over every real step, per layer-direction and unit."""
    sums: Optional[List[List[torch.Tensor]]] = None
    count = 0
    for states in layer_states(rnn, data, batch_size=batch_size, lengths=lengths):
        part = [[statistic(h).sum(0) for h in row] for row in states]
        sums = part if sums is None else [[a + b for a, b in zip(r, p)] for r, p in zip(sums, part)]
        count += states[0][0].shape[0]
    if sums is None:
        raise ValueError("data: no batch of calibration data")
    return [[(s / count).cpu().numpy() for s in row] for row in sums]


class MeanActivation(Criterion):
    """Mean ``|h_j|`` over every real step of the calibration data."""

    name = "mean_activation"

    def scores(self, pair, data, *, batch_size: int = 256, lengths: Any = None, **context) -> Scores:
        return _state_means(pair[0], data, torch.abs, batch_size=batch_size, lengths=lengths)


class APoZ(Criterion):
    """``1 - `` the average percentage of zeros of each ReLU unit over every real step."""

    name = "apoz"

    def scores(self, pair, data, *, batch_size: int = 256, lengths: Any = None, **context) -> Scores:
        rnn = pair[0]
        if not (isinstance(rnn, nn.RNN) and rnn.nonlinearity == "relu"):
            raise ValueError(f"method: 'apoz' counts the zeros of ReLU units; {type(rnn).__name__} units are not "
                             f"ReLU")
        zeros = _state_means(rnn, data, lambda h: (h == 0).to(torch.float64), batch_size=batch_size,
                             lengths=lengths)
        return [[1.0 - z for z in row] for row in zeros]


class TaylorImportance(Criterion):
    """First-order Taylor importance ``|sum_{n,t} dL/dh_{t,j} h_{t,j}|`` for the task loss (module docstring).

    The derivative is the total one, through the recurrence: the layers are stepped with every state multiplied by a
    gate vector ``g = 1`` (:func:`gated_forward`), and the score is ``|dL/dg_j|``, which is exactly the sum above
    (the first-order change of the loss when unit j's state is scaled at every step). ``targets`` (context) are the
    labels: ``(n,)`` for a read-out of the last step (``steps="last"``) or ``(n, T)`` for a read-out at every step
    (``steps="all"``); ``loss`` is ``"cross_entropy"`` (default) or a callable ``loss(outputs, targets)`` summed over
    the batch. The data must be one tensor of equal-length sequences.
    """

    name = "taylor"

    def scores(self, pair, data, *, targets=None, loss: Any = "cross_entropy", steps: str = "last",
               batch_size: int = 256, **context) -> Scores:
        rnn, readout = pair
        if targets is None:
            raise ValueError("targets: the Taylor criterion needs the labels of the calibration data")
        if not isinstance(data, torch.Tensor) or data.ndim != 3:
            raise TypeError("data: the Taylor criterion needs one tensor of equal-length sequences (batch, T, d_x)")
        if steps not in ("last", "all"):
            raise ValueError(f"steps: expected 'last' or 'all', got {steps!r}")
        loss_fn = _loss(loss)
        layers = as_layers(rnn)
        D = directions(rnn)
        param = next(rnn.parameters())
        dtype, device = param.dtype, param.device
        x_all = data if rnn.batch_first else data.transpose(0, 1)  # (batch, T, d_x)
        targets = torch.as_tensor(targets)
        if targets.shape[0] != x_all.shape[0]:
            raise ValueError(f"targets: expected one label (row) per sequence ({x_all.shape[0]}), got "
                             f"{tuple(targets.shape)}")
        totals = [[torch.zeros(layer.hidden_size, dtype=torch.float64) for _ in range(D)] for layer in layers]
        for start in range(0, x_all.shape[0], batch_size):
            x = x_all[start:start + batch_size].to(device, dtype)
            y = targets[start:start + x.shape[0]].to(device)
            gates = [[torch.ones(layer.hidden_size, dtype=dtype, device=device, requires_grad=True) for _ in range(D)]
                     for layer in layers]
            out = gated_forward(layers, x, gates)
            f = readout(out[:, -1]) if steps == "last" else readout(out)
            grads = torch.autograd.grad(loss_fn(f, y), [g for row in gates for g in row])
            for i, g in enumerate(grads):
                totals[i // D][i % D] += g.detach().to("cpu", torch.float64)
        return [[t.abs().numpy() for t in row] for row in totals]


def gated_forward(layers: Sequence[nn.Module], x: torch.Tensor, gates) -> torch.Tensor:
    """The stack of single-layer modules run step by step on batch-first ``x`` (batch, T, d_x) with each state of
    layer l, direction d multiplied by ``gates[l][d]`` (m_l,) before it is used (next step, next layer, read-out);
    returns the last layer's outputs (batch, T, D m). With gates of ones it computes what the modules compute."""
    h_in = x
    for l, layer in enumerate(layers):
        outs = []
        for d in range(directions(layer)):
            cell = layer_as_cell(layer, d)
            order = range(x.shape[1] - 1, -1, -1) if d else range(x.shape[1])
            state = None
            steps: List[Optional[torch.Tensor]] = [None] * x.shape[1]
            for t in order:
                state = cell(h_in[:, t], state)
                if isinstance(state, tuple):
                    state = (state[0] * gates[l][d], state[1])
                    steps[t] = state[0]
                else:
                    state = state * gates[l][d]
                    steps[t] = state
            outs.append(torch.stack(steps, dim=1))
        h_in = torch.cat(outs, dim=-1)
    return h_in


def _loss(loss) -> Callable:
    if callable(loss):
        return loss
    if loss == "cross_entropy":
        def ce(f, y):
            return nn.functional.cross_entropy(f.reshape(-1, f.shape[-1]), y.reshape(-1).long(), reduction="sum")
        return ce
    raise ValueError(f"loss: expected 'cross_entropy' or a callable loss(outputs, targets), got {loss!r}")


def geometric_median(points: np.ndarray, *, tol: float = 1e-12, max_iter: int = 10_000) -> np.ndarray:
    """The point minimising the sum of Euclidean distances to the rows of ``points`` (Weiszfeld's iteration, with
    the Vardi-Zhang step when an iterate lands on a data point)."""
    X = np.asarray(points, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"points: expected a non-empty (n, d) array, got shape {X.shape}")
    y = X.mean(axis=0)
    for _ in range(max_iter):
        dist = np.linalg.norm(X - y, axis=1)
        at = dist < 1e-15
        if at.all():  # every point coincides with y (one point, or all equal)
            return y
        w = 1.0 / np.where(at, 1.0, dist)
        w[at] = 0.0
        T = (w[:, None] * X).sum(0) / w.sum()
        if at.any():  # Vardi and Zhang (2000): move off a data point only if the pull of the others exceeds 1
            R = ((w[:, None] * (X - y)).sum(0))
            r = np.linalg.norm(R)
            eta = float(at.sum())
            step = 0.0 if r == 0 else max(0.0, 1.0 - eta / r)
            new = (1.0 - step) * y + step * T
        else:
            new = T
        if np.linalg.norm(new - y) <= tol * (1.0 + np.linalg.norm(y)):
            return new
        y = new
    return y


class GeometricMedian(Criterion):
    """Distance of each unit's weight vector (its rows of every gate block of ``W_ih`` and ``W_hh``) to the
    geometric median of its layer-direction's units."""

    name = "geometric_median"

    def scores(self, pair, data=None, **context) -> Scores:
        rnn = pair[0]
        G = gate_blocks(rnn)
        out = []
        for layer in as_layers(rnn):
            m = layer.hidden_size
            row = []
            for d in range(directions(rnn)):
                sfx = "_reverse" if d else ""
                w_ih = getattr(layer, f"weight_ih_l0{sfx}").detach().to("cpu", torch.float64).numpy()
                w_hh = getattr(layer, f"weight_hh_l0{sfx}").detach().to("cpu", torch.float64).numpy()
                # unit j's vector: its row in each of the G gate blocks, input and recurrent weights side by side
                vec = np.concatenate([np.concatenate([w_ih[g * m:(g + 1) * m], w_hh[g * m:(g + 1) * m]], axis=1)
                                      for g in range(G)], axis=1)
                median = geometric_median(vec)
                row.append(np.linalg.norm(vec - median, axis=1))
            out.append(row)
        return out


CRITERIA: Dict[str, Criterion] = {c.name: c for c in (TaylorImportance(), MeanActivation(), APoZ(), GeometricMedian())}


def register_criterion(criterion: Criterion) -> None:
    """Make ``criterion`` available to :func:`prune_by_criterion` under ``criterion.name``."""
    if not callable(getattr(criterion, "scores", None)) or not isinstance(getattr(criterion, "name", None), str):
        raise TypeError("criterion: expected an object with a str name and a scores(pair, data, **context) method")
    CRITERIA[criterion.name] = criterion


def eigen_widths(covariances: Sequence[Sequence[np.ndarray]], energy: float = 0.9) -> List[int]:
    """Per-layer widths from the spectra: for each layer, the number of leading eigenvalues of its covariance (the
    largest over its directions) that hold ``energy`` of the trace."""
    if not 0.0 < float(energy) <= 1.0:
        raise ValueError(f"energy: expected a fraction in (0, 1], got {energy!r}")
    widths = []
    for row in covariances:
        need = 1
        for sigma in row:
            mu = np.clip(np.sort(eigenvalues(sigma))[::-1], 0.0, None)
            total = mu.sum()
            k = mu.size if total <= 0 else int(np.searchsorted(np.cumsum(mu) / total, energy - 1e-12) + 1)
            need = max(need, min(k, mu.size))
        widths.append(need)
    return widths


def prune_by_criterion(model_or_rnn: Any, data: Any, k, *, method: str, reconstruct: bool = True,
                       rel_lam: float = 1e-4, batch_size: int = 256, lengths: Any = None,
                       scores: Optional[Scores] = None, covariance: Any = None, **context) -> PruneResult:
    """Keep the k highest-scoring units of every layer and direction by ``method`` (a name of :data:`CRITERIA`) and
    compress, with A_J from the original network's covariances (``reconstruct=True``, lambda = ``rel_lam``
    Tr(Sigma)/m) or by slicing. ``k`` is one width or one per layer; ``context`` goes to the criterion (e.g.
    ``targets=`` for ``"taylor"``).

    ``scores``: the criterion's scores computed before (``CRITERIA[method].scores(...)``), and ``covariance``: the
    original network's statistics (one ``CovarianceStats`` for a single-layer, one-direction module, else the
    ``[layer][direction]`` grid of :func:`pruning.covariance.layer_covariances`), so that pruning one network to
    many k computes neither twice."""
    if method not in CRITERIA:
        raise ValueError(f"method: expected one of {tuple(CRITERIA)}, got {method!r}")
    rnn, readout, model = split_model(model_or_rnn)
    if projection(rnn):
        # the baselines score what the module returns, which for a projected LSTM is not its units (the cells)
        raise ValueError(f"model_or_rnn: the baseline criteria score a module's returned states, and an LSTM with "
                         f"proj_size={projection(rnn)} returns projections of its cells, not the cells; prune it with "
                         f"spectral_prune (method='greedy', 'leverage', 'magnitude' or 'random')")
    layers = as_layers(rnn)
    ks = list(k) if isinstance(k, (list, tuple)) else [k] * len(layers)
    if len(ks) != len(layers) or any(not isinstance(v, (int, np.integer)) or not 1 <= v <= l.hidden_size
                                     for v, l in zip(ks, layers)):
        raise ValueError(f"k: expected one width in 1..m per layer ({[l.hidden_size for l in layers]}), got {k!r}")
    D = directions(rnn)
    if scores is None:
        scores = CRITERIA[method].scores((rnn, readout), data, batch_size=batch_size, lengths=lengths, **context)
    elif (len(scores) != len(layers) or any(len(row) != D for row in scores)
          or any(np.shape(s) != (layer.hidden_size,) for layer, row in zip(layers, scores) for s in row)):
        raise ValueError(f"scores: expected [layer][direction] arrays of {[l.hidden_size for l in layers]} scores")
    units = [[[int(u) for u in np.argsort(-np.asarray(s), kind="stable")[:ks[l]]] for s in row]
             for l, row in enumerate(scores)]
    if covariance is None:
        stats = layer_covariances(layers, data, batch_size=batch_size, lengths=lengths)
    else:
        stats = [[covariance]] if hasattr(covariance, "mean") and hasattr(covariance, "count") else covariance
        if len(stats) != len(layers) or any(len(row) != D or any(c.mean().shape != (layer.hidden_size,) * 2
                                                                  for c in row) for layer, row in zip(layers, stats)):
            raise ValueError("covariance: expected the [layer][direction] statistics of this module "
                             "(pruning.covariance.layer_covariances)")
    A = [[None] * len(row) for row in stats] if reconstruct else None
    results = []
    for l, row in enumerate(stats):
        for d, c in enumerate(row):
            sigma = c.mean()
            lam = rel_lam * max(float(np.trace(sigma)) / sigma.shape[0], np.finfo(float).tiny)
            if reconstruct:
                A[l][d] = reconstruction_matrix(sigma, units[l][d], lam)
            results.append(LayerPrune(layer=l, direction=d, units=units[l][d], A=None if A is None else A[l][d],
                                      m=layers[l].hidden_size, k=ks[l], lam=lam, tau=np.full(ks[l], lam),
                                      losses={}, dof=float("nan")))
    small, head = compress_stack(rnn, readout, units, A)
    new_model = None if model is None else replace_modules(ModelParts(model, "rnn", ("readout",)), small, [head])
    return PruneResult(rnn=small, readout=head, model=new_model, layers=results, theta=math.nan, Z="", method=method,
                       reconstruct=reconstruct, covariance_mode="original", covariance=stats, heads=[head],
                       paths=None if model is None else ("rnn", ("readout",)))
