"""What spectral pruning returns: one :class:`LayerPrune` per layer and direction inside a :class:`PruneResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from torch import nn

__all__ = ["LayerPrune", "PruneResult"]

#: How many kept units a repr lists before "...".
_UNITS_SHOWN = 8

#: The columns of :meth:`PruneResult.summary` that report a loss: (header, key of ``LayerPrune.losses``).
_LOSS_COLUMNS = (("L_A (S1)", "input"), ("L_B rec (S2)", "recurrent"), ("L_B next (S2)", "readout"),
                 ("objective (S3)", "objective"))


def _shown(value: Optional[float], spec: str) -> str:
    """``value`` formatted by ``spec``, or ``-`` for a quantity a method does not compute (None or NaN: the criteria
    have no S3 objective, no losses and no N(lambda))."""
    return "-" if value is None or not np.isfinite(value) else format(value, spec)


@dataclass
class LayerPrune:
    """What was kept in one layer and direction.

    Attributes
    ----------
    layer, direction : int
        Position in the stack (direction 1 is the reverse direction of a bidirectional layer).
    units : list[int]
        Kept units J, in selection order.
    A : numpy.ndarray (m, k) or None
        Reconstruction matrix A_J (S1; None without reconstruction).
    m, k : int
        Width before and after.
    lam : float
        The lambda used (absolute); ``tau`` the per-unit regularisation (equal to lam except for
        leverage sampling, S8).
    losses : dict
        ``input`` = L_A(J) (S1), ``recurrent`` = L_B(J; W_hh) and ``readout`` = L_B(J; next) (S2), where
        ``next`` is the next layer's input weight (its columns of this direction) or the read-out, and
        ``objective`` = L_A + theta L_B(J; Z) (S3), all on the calibration data.
    dof : float
        Degrees of freedom N(lambda) of this layer-direction's covariance (S7).
    """

    layer: int
    direction: int
    units: List[int]
    A: Optional[np.ndarray]
    m: int
    k: int
    lam: float
    tau: np.ndarray
    losses: Dict[str, float]
    dof: float

    def __repr__(self) -> str:
        # the dataclass repr prints A and tau in full: pages for one layer of a wide network
        shown = ", ".join(map(str, self.units[:_UNITS_SHOWN])) + (", ..." if len(self.units) > _UNITS_SHOWN else "")
        losses = ", ".join(f"{name}={value:.3g}" for name, value in self.losses.items())
        return (f"LayerPrune(layer={self.layer}, direction={self.direction}, m={self.m} -> k={self.k}, "
                f"units=[{shown}], lam={self.lam:.3g}, losses={{{losses}}}, dof={self.dof:.4g}, "
                f"A={'None' if self.A is None else 'array' + str(tuple(self.A.shape))})")


@dataclass
class PruneResult:
    """What :func:`pruning.spectral_prune` returns.

    Attributes
    ----------
    rnn, readout : module, torch.nn.Linear or None
        The compressed modules: the original type (nn.RNN, nn.LSTM, nn.GRU) when every layer keeps the
        same width, else a :class:`pruning.RecurrentStack`. An LSTM with ``proj_size`` keeps its outputs' width and
        meaning, so its read-out is a copy of the original (and, in a whole model, where none is located, None with
        ``heads`` empty).
    model : torch.nn.Module or None
        A copy of the input model with its recurrent module and read-out(s) replaced (None when a pair was given).
    layers : list[LayerPrune]
        One entry per layer and direction, in order. For a single-layer unidirectional module the properties
        ``units, A, m, k, lam, tau, losses, dof`` read its one entry.
    theta, Z, method, reconstruct, covariance_mode
        The selection settings.
    timings : dict
        Seconds spent in ``covariance``, ``selection``, ``reconstruction``, ``losses`` (the S1/S2 losses and N(lambda)
        reported in ``layers``) and ``compress``.
    covariance : CovarianceStats, list or None
        The statistics of the pass: one CovarianceStats for a single layer-direction, else a list per
        layer of one per direction (None when plain matrices were given). Pass them back through
        ``covariance=`` to prune again without another pass. A stack pruned with ``covariance_mode="sequential"``
        measured its layers above the first on the network with the layers below pruned; those statistics are
        marked ``pruned_below`` and refused there, so prune with ``covariance_mode="original"`` to reuse them.
    search : dict or None
        With ``target=``: the tolerance, criterion, the k found, its error, every evaluated
        ``{k: error}`` and the seconds the search took.
    heads : list[torch.nn.Module]
        Every compressed read-out, in the order of the ``readout`` paths (``[readout]`` for one linear head; with
        several heads ``readout`` is their rows stacked, the weight that reads the states, and for a head over c
        concatenated states its c column blocks stacked as rows). A recurrent module named
        as the read-out (the next layer of a stack built from separate modules) is here with its input weights
        compressed, and ``readout`` is then those weights as a linear layer without bias.
    paths : (str, tuple of str) or None
        Where the recurrent module and the read-outs sit in ``model`` (None for a pair): what :meth:`save` records
        so that :func:`pruning.load_pruned` puts the pruned modules back in the same places.
    initial_state : tuple of str
        The model's parameters or buffers that held a learned initial state of the module, now sliced to the kept
        units in ``model``, each layer-direction's row to its own (:meth:`save` records them, so that
        :func:`pruning.load_pruned` gives them that shape).
    """

    rnn: nn.Module
    readout: Optional[nn.Linear]
    model: Optional[nn.Module]
    layers: List[LayerPrune]
    theta: float
    Z: str
    method: str
    reconstruct: bool
    covariance_mode: str = "sequential"
    timings: Dict[str, float] = field(default_factory=dict)
    covariance: Any = None
    search: Optional[dict] = None
    heads: List[nn.Linear] = field(default_factory=list)
    paths: Optional[Tuple[str, Tuple[str, ...]]] = None
    initial_state: Tuple[str, ...] = ()

    def save(self, path, *, summary: Optional[Dict[str, Any]] = None, json_path=None):
        """Write the pruned pair or model with :func:`pruning.save_pruned` (safetensors and a JSON description,
        atomically), recording where its modules sit; returns the JSON path. :func:`pruning.load_pruned` reads it
        back (with ``model=`` a fresh instance of the original architecture for a whole model)."""
        from pruning.serialization import save_pruned

        return save_pruned(path, self, summary=summary, json_path=json_path)

    def __repr__(self) -> str:
        # the dataclass repr prints every A_J, tau and the statistics: tens of kilobytes for a small stack
        widths = ", ".join(f"{lp.m}->{lp.k}" for lp in self.layers if lp.direction == 0)
        directions = len({lp.direction for lp in self.layers})
        model = "None" if self.model is None else type(self.model).__name__
        head = self.readout
        readout = ("None" if head is None else f"{type(head).__name__}({head.in_features} -> {head.out_features})"
                   if isinstance(head, nn.Linear) else type(head).__name__)
        search = ("" if self.search is None else
                  f", search=(k={self.search.get('k')}, error={self.search.get('error', float('nan')):.3g})")
        return (f"PruneResult(method={self.method!r}, widths=[{widths}]"
                f"{f' x {directions} directions' if directions > 1 else ''}, rnn={type(self.rnn).__name__}, "
                f"readout={readout}, model={model}, theta={_shown(self.theta, 'g')}, Z={self.Z!r}, "
                f"reconstruct={self.reconstruct}{search})")

    def summary(self) -> str:
        """A table of what was kept, one row per layer and direction: the widths, the lambda used, the information
        losses on the calibration data (L_A of S1, L_B of S2 through the recurrent weight and through what reads the
        states next, the S3 objective), N(lambda) (S7); then the settings and the seconds of each stage. A loss a
        method does not compute (the practitioners' criteria compute none) is shown as ``-``."""
        header = ["layer", "dir", "m", "k", "lambda"] + [h for h, _ in _LOSS_COLUMNS] + ["N(lambda) (S7)"]
        rows = []
        for lp in self.layers:
            losses = [lp.losses.get(key) for _, key in _LOSS_COLUMNS]
            rows.append([str(lp.layer), str(lp.direction), str(lp.m), str(lp.k), f"{lp.lam:.3g}"]
                        + [_shown(v, ".3g") for v in losses] + [_shown(lp.dof, ".4g")])
        sizes = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(line, sizes)) for line in [header] + rows]
        settings = (f"method={self.method}, reconstruct={self.reconstruct}, theta={_shown(self.theta, 'g')}, "
                    f"Z={self.Z or '-'}, covariance_mode={self.covariance_mode}")
        if self.search is not None:
            settings += (f"; error target {self.search.get('target')} ({self.search.get('criterion')}): "
                         f"k={self.search.get('k')}, error {self.search.get('error', float('nan')):.3g}")
        timings = ", ".join(f"{name} {seconds:.3g} s" for name, seconds in self.timings.items()) or "-"
        return "\n".join(lines + [settings, f"seconds: {timings}"])

    def _only(self) -> LayerPrune:
        if len(self.layers) != 1:
            raise AttributeError(f"this result prunes {len(self.layers)} layer-directions; read the attribute "
                                 f"of one of them, result.layers[i]")
        return self.layers[0]

    @property
    def units(self) -> List[int]:
        """Kept units J of a single layer-direction (``layers[i].units`` otherwise)."""
        return self._only().units

    @property
    def A(self) -> Optional[np.ndarray]:
        """Reconstruction matrix A_J of a single layer-direction."""
        return self._only().A

    @property
    def m(self) -> int:
        """Width before pruning, single layer-direction."""
        return self._only().m

    @property
    def k(self) -> int:
        """Kept width, single layer-direction (``ks`` for every layer)."""
        return self._only().k

    @property
    def lam(self) -> float:
        """The absolute lambda used, single layer-direction."""
        return self._only().lam

    @property
    def tau(self) -> np.ndarray:
        """Per-unit regularisation, single layer-direction."""
        return self._only().tau

    @property
    def losses(self) -> Dict[str, float]:
        """Information losses (S1-S3), single layer-direction."""
        return self._only().losses

    @property
    def dof(self) -> float:
        """Degrees of freedom N(lambda) (S7), single layer-direction."""
        return self._only().dof

    @property
    def ks(self) -> List[int]:
        """Kept width of each layer."""
        return [lp.k for lp in self.layers if lp.direction == 0]
