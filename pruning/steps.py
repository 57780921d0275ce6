"""The steps of spectral pruning, each usable on its own (docs/method.md, sections 2-5).

:func:`pruning.spectral_prune` is these steps in order, layer by layer:

1. statistics: the time-mean covariance of every layer-direction (:class:`LayerStatistics`, section 2);
2. lambda: absolute, relative to the mean eigenvalue, or solving ``N(lambda) = target`` (:func:`choose_lambda`, S7);
3. selection: the kept units J (:func:`select_layer_units`, S3/S4/S8 and the baselines);
4. reconstruction and losses: ``A_J`` and the information losses (:func:`describe_layer`, S1-S3);
5. compression: the physically smaller layer (:func:`pruning.compress.compress_layer`, section 4), bottom up
   through a stack by :func:`compress_layers`, which runs steps 3 and 4 through the caller's ``pick``.

The error-target search (:mod:`pruning.target`) composes the same steps with another selection rule.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from pruning.compress import compress_layer, passed_on, state_map
from pruning.covariance import CovarianceStats, layer_covariances, module_output_covariances
from pruning.model_parts import RecurrentInputs
from pruning.modules import directions, projection
from pruning.result import LayerPrune
from pruning.selection import METHOD, GreedyOrder, kept_width, leverage_sample, select_checked
from pruning.sequences import OnePass
from theory._validation import (POSITIVE, Boolean, Options, OrNone, Real, as_covariance_matrix, check_params)
from theory.information import THETA, DownstreamWeight, information_losses, reconstruction_matrix
from theory.spectrum import degrees_of_freedom, lambda_for_dof

__all__ = ["DEFAULT_REL_LAM", "DEFAULT_THETA", "DEFAULT_Z", "Z_CHOICES", "COVARIANCE_MODES", "PruneSettings",
           "Timings", "LayerStatistics", "choose_lambda", "resolve_lambda", "plan_widths",
           "consumer_weights", "downstream_weight", "downstream_weights", "select_layer_units", "describe_layer"]

#: Default regularisation relative to the mean eigenvalue: ``lambda = DEFAULT_REL_LAM * Tr(Sigma) / m``.
#: Chosen by measurement on the pixel-digits IRNN (docs/results.md, "Choice of defaults").
DEFAULT_REL_LAM = 1e-4
#: Default weight of the output information loss in the selection objective (S3).
DEFAULT_THETA = 1.0
#: Default downstream weight Z of the output information loss (S2): the recurrent weight W.
DEFAULT_Z = "recurrent"
Z_CHOICES = ("recurrent", "readout", "both")
COVARIANCE_MODES = ("sequential", "original")

#: The declared constraints of the selection settings (checked once, by :meth:`PruneSettings.checked`).
SETTINGS_CONSTRAINTS = dict(theta=THETA, Z=Options(Z_CHOICES), method=METHOD, reconstruct=Boolean(),
                            lam=OrNone(POSITIVE), rel_lam=OrNone(POSITIVE))


@dataclass(frozen=True)
class PruneSettings:
    """How units are chosen and the layer rebuilt: everything but the data and the widths.

    ``lam`` (absolute) and ``rel_lam`` (relative to ``Tr(Sigma)/m``) are exclusive; with neither,
    ``rel_lam = DEFAULT_REL_LAM``. ``seed`` drives the random methods (leverage, random).
    """

    theta: float = DEFAULT_THETA
    Z: str = DEFAULT_Z
    method: str = "greedy"
    reconstruct: bool = True
    lam: Optional[float] = None
    rel_lam: Optional[float] = None
    seed: Any = None

    @classmethod
    def checked(cls, **values) -> "PruneSettings":
        """Settings from user values, each checked against its declared constraint."""
        seed = values.pop("seed", None)
        v = check_params(SETTINGS_CONSTRAINTS, **values)
        if v.get("lam") is not None and v.get("rel_lam") is not None:
            raise ValueError("lam, rel_lam: give at most one of them (absolute or relative regularisation)")
        return cls(seed=seed, **v)


class Timings(dict):
    """Seconds spent per step; ``with timings("selection"): ...`` adds the block's wall time."""

    STEPS = ("covariance", "selection", "reconstruction", "losses", "compress")

    def __init__(self):
        super().__init__({step: 0.0 for step in self.STEPS})

    @contextmanager
    def __call__(self, step: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self[step] += time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# 1. statistics


class LayerStatistics:
    """The covariance of every layer-direction, given or measured on ``data``.

    ``mode="original"`` measures all layers of the uncompressed network in one pass; ``"sequential"`` measures
    layer l when it is asked for, on the network whose layers below are already compressed (so layer l is pruned
    for the inputs it will receive). Given statistics (``covariance=``) are of the original network.
    """

    def __init__(self, layers: Sequence[nn.Module], data: Any = None, *, covariance: Any = None,
                 mode: str = "sequential", batch_size: int = 256, device=None, input_transform=None,
                 progress: bool = False, timings: Optional[Timings] = None, precision: str = "float32",
                 lengths: Any = None):
        self.layers = list(layers)
        self.D = directions(self.layers[0])
        self.widths = [layer.hidden_size for layer in self.layers]
        self.data, self.batch_size, self.device = data, batch_size, device
        self.input_transform, self.progress, self.precision = input_transform, progress, precision
        self.lengths = lengths
        self.timings = timings if timings is not None else Timings()
        self.release_kept = True  # the last layer's pass frees the kept inputs (copies for a search keep them)
        L = len(self.layers)
        self.grid: List[Optional[List[Tuple[np.ndarray, Optional[CovarianceStats]]]]] = [None] * L
        if covariance is not None:
            self.grid = _as_stats_grid(covariance, L, self.D, self.widths)
            self.mode = "original"
        else:
            self.mode = mode
            if mode == "original" or L == 1:
                self.grid = self._measure(self.layers, None)
            elif isinstance(data, (RecurrentInputs, OnePass)):
                # one pass per layer: a whole model's recurrent inputs are replayed instead of running it L times,
                # and a generator's batches instead of failing at the second pass
                data.keep()

    def _measure(self, run_layers: Sequence[nn.Module], collect, kept_below=None):
        if self.data is None:
            raise ValueError("data: calibration data is required unless covariance= is given")
        # a whole model's bar counts the model's batches (RecurrentInputs), not the calls of its recurrent module
        whole_model = isinstance(self.data, RecurrentInputs)
        if whole_model:
            self.data.progress = self.progress
        progress = self.progress and not whole_model
        with self.timings("covariance"):
            if whole_model and self.input_transform is None and self.lengths is None:
                # a whole model's calls, each run from where it started (a carried or learned state); where the
                # layers run are the module's own, its run already computed the top layer's states: not run again
                original = run_layers is self.layers
                out = module_output_covariances(run_layers, self.data.calls(outputs_used=original, starts=True),
                                                collect=collect, use_outputs=original, kept=kept_below,
                                                device=self.device, progress=progress, precision=self.precision)
            else:
                out = layer_covariances(run_layers, self.data, collect=collect, device=self.device,
                                        batch_size=self.batch_size, input_transform=self.input_transform,
                                        progress=progress, precision=self.precision, lengths=self.lengths)
        return [[(c.mean(), c) for c in row] for row in out]

    def layer(self, l: int, compressed_below: Sequence[nn.Module] = (), maps_below=None, kept_below=None):
        """``[(Sigma, stats or None)]`` per direction of layer l. In sequential mode layer l is measured here, on
        ``compressed_below`` (the pruned layers 0..l-1, keeping the units ``kept_below[l'][d]``) followed by layer l
        reading their states through ``maps_below``."""
        if self.grid[l] is None:
            layer = self.layers[l]
            m = self.widths[l]
            current = layer if maps_below is None else compress_layer(
                layer, [np.arange(m)] * self.D, [np.eye(m)] * self.D, maps_below)
            self.grid[l] = self._measure(list(compressed_below) + [current], [l], kept_below)[0]
            for _, stats in self.grid[l]:
                stats.pruned_below = bool(compressed_below)
            if self.release_kept and all(row is not None for row in self.grid):
                self.release()  # the last pass: the kept inputs are not needed any more
        return self.grid[l]

    def release(self) -> None:
        """Free the recurrent inputs kept for the passes of sequential mode."""
        if isinstance(self.data, (RecurrentInputs, OnePass)):
            self.data.keep(0)

    def with_first_layer_only(self) -> "LayerStatistics":
        """For the error-target search in sequential mode: a copy that shares layer 0's statistics (those of the
        original network in either mode) and measures the layers above again when asked, on the layers below as
        that copy's caller prunes them. It keeps the recurrent inputs after its last pass, for the next copy;
        :meth:`release` frees them."""
        other = copy.copy(self)
        other.grid = [self.layer(0)] + [None] * (len(self.layers) - 1)
        other.release_kept = False
        return other

    def stats(self):
        """What :attr:`PruneResult.covariance` holds: one CovarianceStats, or a [layer][direction] grid of them;
        None when plain matrices were given."""
        cells = [[c for _, c in row] for row in self.grid]
        if any(c is None for row in cells for c in row):
            return None
        return cells[0][0] if len(cells) * self.D == 1 else cells


def _as_stats_grid(covariance, L: int, D: int, widths: List[int]):
    """The ``covariance=`` argument as a [layer][direction] grid of (matrix, stats or None)."""
    leaf = (CovarianceStats, np.ndarray, torch.Tensor)
    if L * D == 1:  # one matrix (also as a plain nested list), or the [[stats]] grid of a result
        nested = isinstance(covariance, (list, tuple)) and len(covariance) == 1 and \
            isinstance(covariance[0], (list, tuple)) and len(covariance[0]) == 1 and isinstance(covariance[0][0], leaf)
        grid = covariance if nested else [[covariance]]
    elif D == 1 and isinstance(covariance, (list, tuple)) and all(isinstance(c, leaf) for c in covariance):
        grid = [[c] for c in covariance]
    else:
        grid = covariance
    if not isinstance(grid, (list, tuple)) or len(grid) != L or any(
            not isinstance(g, (list, tuple)) or len(g) != D for g in grid):
        raise ValueError(f"covariance: expected one covariance per layer ({L}) and direction ({D}), as a nested "
                         f"list (what PruneResult.covariance holds)")
    out = []
    for l, row in enumerate(grid):
        cells = []
        for d, c in enumerate(row):
            sigma = as_covariance_matrix(c, f"covariance[{l}][{d}]")
            if sigma.shape[0] != widths[l]:
                raise ValueError(f"covariance: expected shape ({widths[l]}, {widths[l]}) for layer {l} of width "
                                 f"{widths[l]}, got {sigma.shape}")
            if isinstance(c, CovarianceStats) and c.pruned_below:
                raise ValueError(f"covariance: the statistics of layer {l} were measured with the layers below it "
                                 f"pruned (covariance_mode='sequential'), so they describe that network, not the "
                                 f"original one that covariance= stands for; prune with covariance_mode='original' "
                                 f"to get statistics that can be given back")
            cells.append((sigma, c if isinstance(c, CovarianceStats) else None))
        out.append(cells)
    return out


# ----------------------------------------------------------------------------------------------
# 2. lambda and the widths


def resolve_lambda(sigma: np.ndarray, lam: Optional[float], rel_lam: Optional[float], where: str = "") -> float:
    """Absolute lambda from either ``lam`` or ``rel_lam * Tr(Sigma) / m`` (default ``DEFAULT_REL_LAM``)."""
    if lam is not None and rel_lam is not None:
        raise ValueError("lam, rel_lam: give at most one of them (absolute or relative regularisation)")
    if lam is not None:
        return POSITIVE.check(lam, "lam")
    rel = DEFAULT_REL_LAM if rel_lam is None else POSITIVE.check(rel_lam, "rel_lam")
    scale = float(np.trace(sigma)) / sigma.shape[0]
    if not scale > 0:
        raise ValueError(f"data: every hidden state{where} is zero, so the covariance carries no information to "
                         f"prune with (pass an absolute lam to prune it anyway)")
    return rel * scale


def choose_lambda(sigma: np.ndarray, settings: PruneSettings, target_dof: Optional[float] = None, *,
                  where: str = "", name: str = "target_dof", spectrum: Optional[np.ndarray] = None) -> float:
    """Step 2: lambda solving ``N(lambda) = target_dof`` (S7) when a target is given, else from ``settings``.
    ``spectrum``: Sigma's eigenvalues where already computed (:func:`theory.spectrum.eigenvalues`)."""
    if target_dof is not None:
        return lambda_for_dof(sigma if spectrum is None else spectrum, target_dof, name=name)
    return resolve_lambda(sigma, settings.lam, settings.rel_lam, where)


def _per_layer(value, L: int, name: str) -> list:
    if value is None or np.isscalar(value) or getattr(value, "ndim", None) == 0:  # 0-d arrays and tensors too
        return [value] * L
    try:
        values = list(value)
    except TypeError:
        raise TypeError(f"{name}: expected a number or one per layer, got {type(value).__name__}") from None
    if len(values) != L:
        raise ValueError(f"{name}: expected one value or one per layer ({L}), got {len(values)}")
    return values


_RATIO = Real(0.0, 1.0, closed="right", what="a fraction of units to keep in (0, 1]")


def plan_widths(widths: Sequence[int], *, k=None, ratio=None, target_dof=None) -> Tuple[List[Optional[int]], list]:
    """Exactly one of ``k``, ``ratio``, ``target_dof`` (each one value or one per layer) as per-layer kept widths
    and per-layer degrees-of-freedom targets. A width set by ``target_dof`` is ``ceil(N)`` and is None here."""
    given = [name for name, v in (("k", k), ("ratio", ratio), ("target_dof", target_dof)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"k, ratio, target_dof: give exactly one way to set the width, got {given or 'none'}")
    L = len(widths)
    ks = []
    for l, (kk, rr) in enumerate(zip(_per_layer(k, L, "k"), _per_layer(ratio, L, "ratio"))):
        m = widths[l]
        if kk is not None:
            ks.append(kept_width(m).check(kk, "k" if L == 1 else f"k[{l}]"))
        elif rr is not None:
            ks.append(max(1, min(m, int(round(_RATIO.check(rr, "ratio") * m)))))
        else:
            ks.append(None)
    return ks, _per_layer(target_dof, L, "target_dof")


# ----------------------------------------------------------------------------------------------
# 3. selection


def consumer_weights(layers: Sequence[nn.Module], readout: nn.Linear) -> List[np.ndarray]:
    """For each layer, the float64 weight that reads its states: the next layer's input weight (both directions
    stacked by rows) or, after the last layer, the read-out; None for a projected LSTM's layer, whose cells only its
    own projection reads (``readout`` may then be None)."""
    D = directions(layers[0])
    out = []
    for l in range(len(layers)):
        if projection(layers[l]):
            out.append(None)  # a projected LSTM's cells are read through its own W_hr (downstream_weight)
            continue
        if l + 1 < len(layers):
            nxt = layers[l + 1]
            w = torch.cat([nxt.weight_ih_l0] + ([nxt.weight_ih_l0_reverse] if D == 2 else []))
        else:
            w = readout.weight
        out.append(w.detach().to("cpu", torch.float64).numpy())
    return out


def downstream_weight(layer: nn.Module, d: int, consumer: np.ndarray, Z: str) -> np.ndarray:
    """Z of layer-direction (l, d) for the output loss (S2): its recurrent weight, the consumer's columns of this
    direction (next layer's input weight or the read-out), or both stacked.

    A projected LSTM's cells reach everything through its projection ``W_hr``: the recurrent weight is then
    ``W_hh W_hr`` (what the gates read of the cells) and the read-out is ``W_hr`` itself (the layer's output, which
    the next layer or head reads unchanged); ``consumer`` is not used."""
    m = layer.hidden_size
    weight = lambda name: getattr(layer, f"{name}_l0{'_reverse' if d else ''}").detach().to(  # noqa: E731
        "cpu", torch.float64).numpy()
    W = weight("weight_hh")
    if projection(layer):
        V = weight("weight_hr")
        W = W @ V
    else:
        V = consumer[:, d * m:(d + 1) * m]
    if Z == "recurrent":
        return W
    if Z == "readout":
        return V
    return np.vstack([W, V])


def downstream_weights(layer: nn.Module, d: int, consumer: np.ndarray, Z: str) -> Dict[str, DownstreamWeight]:
    """The downstream weights of layer-direction (l, d) that steps 3 and 4 share: ``"recurrent"`` and
    ``"readout"`` (the S2 losses reported) and ``"selection"``, the ``Z`` of the S3 objective (the same object as
    one of the two, or both stacked). A greedy selection that forms ``Z^T Z`` leaves it in the shared object, and
    the loss through the same weight then reads it instead of a product with ``R(J)`` (:mod:`theory.information`)."""
    m = layer.hidden_size
    out = {name: DownstreamWeight(downstream_weight(layer, d, consumer, name), m) for name in ("recurrent", "readout")}
    out["selection"] = out[Z] if Z in out else DownstreamWeight(downstream_weight(layer, d, consumer, Z), m)
    return out


def select_layer_units(sigma: np.ndarray, k: int, lam: float, settings: PruneSettings, layer: nn.Module, d: int,
                       consumer: np.ndarray, progress: str = "",
                       downstream: Optional[Dict[str, DownstreamWeight]] = None) -> Tuple[List[int], np.ndarray]:
    """Step 3: the kept units J of one layer-direction and their regularisation tau (lambda for every unit, or
    S8's per-unit values for leverage sampling). ``progress``: the label of a bar over the greedy steps;
    ``downstream``: :func:`downstream_weights`, shared with step 4."""
    if settings.method == "leverage":
        sample = leverage_sample(sigma, k, lam, seed=settings.seed, distinct=True)
        return sample.units, sample.tau
    outgoing = downstream_weight(layer, d, consumer, "both") if settings.method == "magnitude" else None
    downstream = downstream or downstream_weights(layer, d, consumer, settings.Z)
    # sigma, k, lam and the settings were validated at the public boundary (spectral_prune, prune_to_target)
    units = select_checked(sigma, k, lam, theta=settings.theta, Z=downstream["selection"], method=settings.method,
                           seed=settings.seed, outgoing=outgoing, progress=progress)
    return units, np.full(len(units), lam)


def greedy_order(sigma: np.ndarray, lam: float, settings: PruneSettings, layer: nn.Module, d: int,
                 consumer: np.ndarray, downstream: Optional[Dict[str, DownstreamWeight]] = None) -> GreedyOrder:
    """Step 3 for a search over k: the greedy order (S4) of one layer-direction with the settings of
    :func:`select_layer_units`, computed as far as it is asked for (its first k units are the greedy selection of
    k units)."""
    downstream = downstream or downstream_weights(layer, d, consumer, settings.Z)
    return GreedyOrder(sigma, lam, float(settings.theta), downstream["selection"])


# ----------------------------------------------------------------------------------------------
# 4. reconstruction and losses


def describe_layer(sigma: np.ndarray, units: Sequence[int], tau: np.ndarray, lam: float, settings: PruneSettings,
                   layer: nn.Module, l: int, d: int, consumer: np.ndarray, timings: Optional[Timings] = None,
                   downstream: Optional[Dict[str, DownstreamWeight]] = None,
                   spectrum: Optional[np.ndarray] = None) -> Tuple[LayerPrune, np.ndarray]:
    """Step 4: ``A_J`` (with reconstruction) and the information losses of keeping ``units``; returns the
    :class:`LayerPrune` and the state map ``M`` (``A_J`` or ``I_{F,J}``) that step 5 builds the layer with.
    ``downstream``: the :func:`downstream_weights` step 3 selected with, whose Gram the losses reuse; ``spectrum``:
    Sigma's eigenvalues where step 2 computed them (a target degrees of freedom), which N(lambda) then reads."""
    timings = timings if timings is not None else Timings()
    m = layer.hidden_size
    with timings("reconstruction"):
        A = reconstruction_matrix(sigma, units, tau) if settings.reconstruct else None
    with timings("losses"):  # the S1/S2 losses and N(lambda) (S7) reported beside the pruned network
        downstream = downstream or downstream_weights(layer, d, consumer, settings.Z)
        losses = information_losses(sigma, units, tau, {name: downstream[name] for name in ("recurrent", "readout")})
        dof = degrees_of_freedom(sigma if spectrum is None else spectrum, lam)
    z_loss = losses["recurrent"] + losses["readout"] if settings.Z == "both" else losses[settings.Z]
    losses["objective"] = losses["input"] + float(settings.theta) * z_loss
    lp = LayerPrune(layer=l, direction=d, units=list(units), A=A, m=m, k=len(units), lam=lam,
                    tau=np.asarray(tau, dtype=np.float64), losses=losses, dof=dof)
    return lp, state_map(m, np.asarray(units), A)


# ----------------------------------------------------------------------------------------------
# 5. compression, layer by layer


def compress_layers(layers: Sequence[nn.Module], statistics: LayerStatistics,
                    pick: Callable[[int, int, np.ndarray], Tuple[Sequence[int], np.ndarray]],
                    timings: Timings) -> Tuple[List[nn.Module], List[np.ndarray]]:
    """Steps 3-5 over a stack, bottom up: ``pick(l, d, sigma)`` gives the kept units of layer-direction (l, d) and
    their state map ``M`` from its covariance, and each layer is compressed reading the layer below through that
    layer's maps. In sequential mode ``statistics`` measures layer l on the compressed layers below it. Returns the
    compressed layers and the top layer's maps (what the read-outs absorb; None after a projected LSTM, whose output
    keeps its width and basis)."""
    new_layers: List[nn.Module] = []
    kept_below: List[List[Sequence[int]]] = []
    below = None
    for l, layer in enumerate(layers):
        kept, maps = [], []
        for d, (sigma, _) in enumerate(statistics.layer(l, new_layers, below, kept_below)):
            units, M = pick(l, d, sigma)
            kept.append(units)
            maps.append(M)
        with timings("compress"):
            new_layers.append(compress_layer(layer, kept, maps, below))
        kept_below.append(kept)
        below = passed_on(layer, maps)
    return new_layers, below
