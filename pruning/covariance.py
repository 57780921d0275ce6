"""Streaming time-mean covariance of RNN hidden states (docs/method.md, section 2).

``Sigma_hat = 1/(nT) sum_i sum_t h_t(X^i) h_t(X^i)^T`` is a sum of outer products, so one pass over
the data keeps only the float64 sum (m x m) and the number of states: memory is
O(batch x T x m + m^2), independent of the number of sequences. Sums from several shards or
processes add up (``CovarianceStats.merge``).
"""

from __future__ import annotations

import copy
import platform
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from pruning.modules import projection
from pruning.projected import projected_cell_states
from pruning.sequences import (CallStart, SequenceBatch, as_tensor, batch_dim, count_batches, cut_rows,
                               iter_sequence_batches, pack)
from theory._validation import Options

__all__ = ["CovarianceStats", "time_mean_covariance", "layer_covariances", "model_device", "batch_dim",
           "progress_bar", "PRECISIONS"]

#: How each batch's Gram matrix is formed (see :meth:`CovarianceStats.update`).
PRECISIONS = ("float32", "float64")
PRECISION = Options(PRECISIONS)


def _gram_float32(H: torch.Tensor) -> torch.Tensor:
    """``H^T H`` of float32 states (rows x m) in float32.

    On CPU, oneDNN's float32 weight-gradient product when torch has it and it is the faster one here
    (:func:`_onednn_gram`, :func:`_onednn_preferred`): on the AMD CPUs this project was measured on it ran 1.5-2x
    faster than the BLAS product below, because MKL takes its AVX2 path there; on an Intel CPU MKL runs its AVX-512
    kernels and the BLAS upper triangle was 1.5-1.8x faster than oneDNN (docs/performance.md). Otherwise, from the
    upper triangle:
    four block rows ``H[:, I]^T H[:, I:]`` (5/8 of the multiply-adds of a general product), then mirrored. Torch's
    own kernels either way: calling a second BLAS (SciPy's ``ssyrk``) between torch's operations made both slower
    here, because their thread pools compete for the same cores. Every path is a float32 dot product of each pair
    of columns, so the round-off bound of :meth:`CovarianceStats.update` holds for all of them."""
    m = H.shape[1]
    if H.device.type == "cpu" and m >= _ONEDNN_MIN_WIDTH and _onednn_preferred() and _onednn_gram_usable():
        return _onednn_gram(H)
    if m < 128:
        return H.T @ H
    step = -(-m // 4)
    G = torch.empty(m, m, dtype=H.dtype, device=H.device)
    for i in range(0, m, step):
        G[i:i + step, i:] = H[:, i:i + step].T @ H[:, i:]
    return G.triu() + G.triu(1).T  # the lower triangle was never written: take it from the upper


#: Below this width the BLAS product is as fast as oneDNN's (measured on 6,400 states).
_ONEDNN_MIN_WIDTH = 64


def _onednn_gram(H: torch.Tensor) -> torch.Tensor:
    """``H^T H`` through ``torch.mkldnn_linear_backward_weights``, the weight gradient of a linear layer,
    ``grad_output^T input``, with both set to ``H``: a float32 product over the rows that oneDNN computes from
    row-major states, whatever torch's matmul-precision settings (it has no reduced-precision mode)."""
    a = H.contiguous().to_mkldnn()
    shape_only = H.new_zeros(1).expand(H.shape[1], H.shape[1])  # the op reads only the weight's shape and dtype
    return torch.mkldnn_linear_backward_weights(a, a, shape_only, False)[0]


_ONEDNN_STATE: dict = {}


def _cpu_vendor() -> str:
    """The CPU's vendor string as the processor reports it (``"GenuineIntel"``, ``"AuthenticAMD"``), or ``""``
    where it cannot be read (not Linux, not x86)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    text = platform.processor()  # Windows names the vendor here; macOS and others do not
    return next((v for v in ("GenuineIntel", "AuthenticAMD") if v in text), "")


def _onednn_preferred() -> bool:
    """Whether oneDNN's product is the one to use on this CPU. Not where torch's BLAS is MKL on an Intel CPU: MKL
    dispatches its AVX-512 kernels by vendor, and there its upper triangle took 2.1 ms per batch against 3.7 ms for
    oneDNN (6,400 states of width 256; 1.5-1.8x at widths 192-2048). Elsewhere (AMD CPUs, where MKL runs its AVX2
    kernels and oneDNN was twice as fast; builds without MKL) oneDNN's. Decided once per process from the hardware,
    never from timings, so that a machine always forms its statistics the same way."""
    if "preferred" not in _ONEDNN_STATE:
        _ONEDNN_STATE["preferred"] = not (torch.backends.mkl.is_available() and _cpu_vendor() == "GenuineIntel")
    return _ONEDNN_STATE["preferred"]


def _onednn_gram_usable() -> bool:
    """Whether the oneDNN product may be used: torch was built with oneDNN, the user has not switched it off
    (``torch.backends.mkldnn.flags(enabled=False)``), and, once per process, the product of a small random matrix
    agrees with the float64 one within the float32 round-off bound (an op that changed or vanished in a later torch
    release falls back to the BLAS product instead of giving a wrong answer)."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    if "ok" not in _ONEDNN_STATE:
        _ONEDNN_STATE["ok"] = _onednn_self_test()
    return _ONEDNN_STATE["ok"]


def _onednn_self_test() -> bool:
    try:
        gen = torch.Generator().manual_seed(0)
        H = torch.randn(300, _ONEDNN_MIN_WIDTH + 3, generator=gen)
        G = _onednn_gram(H)
    except Exception:  # the op is private to torch: any failure means "not usable", never a crash
        return False
    H64 = H.double()
    n, u = H.shape[0], 2.0 ** -24
    bound = n * u / (1 - n * u) * (H64.abs().T @ H64.abs())
    return (isinstance(G, torch.Tensor) and G.shape == (H.shape[1], H.shape[1]) and G.dtype == torch.float32
            and bool(((G.double() - H64.T @ H64).abs() <= bound).all()))


def _float32_products_are_ieee(device: torch.device) -> bool:
    """Whether a float32 product on ``device`` is an IEEE float32 product, as the round-off bound assumes. A CUDA
    build with TF32 allowed (``torch.backends.cuda.matmul.allow_tf32``, which
    ``torch.set_float32_matmul_precision("high")`` sets) rounds the factors to 10 bits, an error some 2^13 times
    larger; the pass then multiplies in float64 instead. The flag is only read: switching it off and on around the
    product would touch the caller's global settings."""
    return device.type != "cuda" or not torch.backends.cuda.matmul.allow_tf32


def _state_rows(states: torch.Tensor) -> torch.Tensor:
    """The states (..., m) as a matrix with one state per row, in the order they lie in memory.

    A sum of outer products does not depend on the order of its terms, so the rows are not put in (batch, time)
    order: a batch-first recurrent module returns its output as a transposed view of a time-major tensor, and
    ``reshape`` would copy it (about 7% of a forward pass at m = 256, T = 100)."""
    if states.ndim == 3 and not states.is_contiguous() and states.transpose(0, 1).is_contiguous():
        states = states.transpose(0, 1)
    return states.reshape(-1, states.shape[-1])


@dataclass
class CovarianceStats:
    """Sufficient statistics of the time-mean covariance: ``sum_states h h^T`` and the number of states.

    Attributes
    ----------
    outer_sum : torch.Tensor
        float64 tensor (m, m), the sum of ``h_t h_t^T`` over all sequences and time steps.
    count : int
        Number of hidden states summed (sequences x time steps).
    pruned_below : bool
        True for the statistics of a layer measured with the layers below it already pruned (a stack pruned with
        ``covariance_mode="sequential"``): they describe that network, not the original one, and are refused where
        the original network's statistics are expected (``covariance=``).
    """

    outer_sum: torch.Tensor
    count: int
    pruned_below: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.outer_sum, torch.Tensor):
            self.outer_sum = torch.as_tensor(np.asarray(self.outer_sum), dtype=torch.float64)
        if self.outer_sum.ndim != 2 or self.outer_sum.shape[0] != self.outer_sum.shape[1]:
            raise ValueError(f"outer_sum: expected a square (m, m) tensor, got shape {tuple(self.outer_sum.shape)}")
        if self.outer_sum.dtype != torch.float64:
            raise TypeError(f"outer_sum: expected float64, got {self.outer_sum.dtype}")
        if int(self.count) < 0:
            raise ValueError(f"count: expected a non-negative number of states, got {self.count}")
        self.count = int(self.count)

    @property
    def width(self) -> int:
        """Number of hidden units m."""
        return int(self.outer_sum.shape[0])

    def mean(self) -> np.ndarray:
        """``Sigma_hat`` as a float64 NumPy array (m, m)."""
        if self.count == 0:
            raise ValueError("CovarianceStats: no states were accumulated, the mean is undefined")
        s = (self.outer_sum / self.count).cpu().numpy()
        return 0.5 * (s + s.T)

    def merge(self, other: "CovarianceStats") -> "CovarianceStats":
        """Statistics of the union of two disjoint sets of states (sums and counts add)."""
        if not isinstance(other, CovarianceStats):
            raise TypeError(f"other: expected CovarianceStats, got {type(other).__name__}")
        if other.width != self.width:
            raise ValueError(f"other: width {other.width} differs from {self.width}")
        return CovarianceStats(self.outer_sum + other.outer_sum.to(self.outer_sum.device), self.count + other.count,
                               self.pruned_below or other.pruned_below)

    def update(self, states: torch.Tensor, name: str = "states", *, precision: str = "float32") -> "CovarianceStats":
        """Add a batch of states (..., m), in place: ``outer_sum += H^T H``, ``count += rows``.

        ``precision="float32"`` (the default) forms each batch's Gram matrix in float32 when the states are float32 or
        narrower (:func:`_gram_float32`: oneDNN's product on CPU, the upper triangle elsewhere) and adds it to the
        float64 running sum; float64 states always get a float64 product, and so do states on a CUDA device while
        TF32 products are allowed there (their factors are rounded to 10 bits). ``"float64"`` converts the states and
        forms the product in float64. The float32 product of a batch of ``n_b`` states differs from the float64 one
        by at most ``gamma(n_b) (|H|^T |H|)_ij`` entrywise, ``gamma(n) = n u / (1 - n u)``, ``u = 2^-24``
        (docs/numerics.md); across batches the sums are float64.

        A NaN or inf state makes its column's sum of squares non-finite, so the m diagonal entries of the running
        sum are checked instead of every state; the error names ``name``."""
        if not self._add(states, name, precision):
            raise ValueError(not_finite_message(name, precision, states.dtype, states))
        return self

    def _add(self, states: torch.Tensor, name: str, precision: str) -> torch.Tensor:
        """:meth:`update` without its check: returns whether the running sum is still finite as a 0-d tensor on
        the statistics' device, which the caller may read later (reading it on a GPU waits for the device)."""
        H = _state_rows(states)
        if H.shape[1] != self.width:
            raise ValueError(f"{name}: expected states of width {self.width}, got {H.shape[1]}")
        H = H.to(self.outer_sum.device)
        if (PRECISION.check(precision, "precision") == "float32" and H.dtype != torch.float64
                and _float32_products_are_ieee(H.device)):
            self.outer_sum += _gram_float32(H.to(torch.float32))
        else:
            H = H.to(torch.float64)
            self.outer_sum.addmm_(H.T, H)
        self.count += H.shape[0]
        return torch.isfinite(self.outer_sum.diagonal()).all()

    @classmethod
    def zeros(cls, m: int, device=None) -> "CovarianceStats":
        """Empty statistics for m units."""
        return cls(torch.zeros(m, m, dtype=torch.float64, device=device), 0)

    @classmethod
    def from_states(cls, states: Any, name: str = "states", *, precision: str = "float64") -> "CovarianceStats":
        """Statistics of hidden states already computed: any array (..., m), every leading index one
        state (sequences x time steps). The product is float64 by default (these states are not the cost of a pass;
        ``precision="float32"`` as in :meth:`update`)."""
        H = as_tensor(states, name)
        if H.ndim < 1 or H.shape[-1] < 1:
            raise ValueError(f"{name}: expected hidden states of shape (..., m) with m >= 1, got {tuple(H.shape)}")
        if not H.is_floating_point():
            raise TypeError(f"{name}: expected real floating-point states, got {H.dtype}")
        if H.numel() == 0:
            raise ValueError(f"{name}: no states; expected at least one")
        return cls.zeros(H.shape[-1], device=H.device).update(H, name, precision=precision)


def not_finite_message(name: str, precision: str, dtype: torch.dtype, states: Optional[torch.Tensor] = None) -> str:
    """Why a running sum of states became NaN or inf: a non-finite state, or, where the batch's Gram was a float32
    product, states finite but so large that their products overflow float32 (a diverging ReLU network). With the
    ``states`` at hand the message says which; a pass that checks its sums later has only the sums."""
    float32_product = precision == "float32" and dtype != torch.float64
    overflow = ("so large (beyond about 1e19) that their float32 products overflow; precision='float64' forms the "
                "products in float64, which holds squares up to 1e308")
    if torch.is_tensor(states) and bool(torch.isfinite(states).all()):
        return f"{name}: are finite but " + (overflow if float32_product else
                                             "so large (beyond about 1e154) that their float64 products overflow")
    if float32_product and states is None:
        return f"{name}: contain NaN or inf, or states {overflow}"
    return f"{name}: contain NaN or inf"


def check_device(device: Any, name: str = "device") -> torch.device:
    """``device`` as a torch.device, refused by name when it cannot run here: no such device type, a CUDA or MPS
    device this machine lacks, or the meta device (which holds no values)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{name}: expected a torch device such as 'cpu' or 'cuda:0', got {device!r} ({err})") from None
    if device.type == "meta":
        raise ValueError(f"{name}: the meta device holds no values; expected 'cpu' or an accelerator")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}: {str(device)!r} requested, but torch finds no CUDA device here "
                         f"(torch.cuda.is_available() is False); use 'cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{name}: {str(device)!r} requested, but torch finds {torch.cuda.device_count()} CUDA "
                         f"device(s)")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{name}: 'mps' requested, but torch finds no MPS device here; use 'cpu'")
    return device


def resolve_device(device: Any, module: nn.Module, name: str = "device") -> torch.device:
    """``device`` checked (:func:`check_device`), or the device of ``module``'s parameters when it is None; a module
    whose parameters are on the meta device is refused."""
    here = model_device(module)
    if here.type == "meta":
        raise ValueError("rnn: its parameters are on the meta device and hold no values; load the trained weights "
                         "first (e.g. module.to_empty(device='cpu') and load_state_dict)")
    return here if device is None else check_device(device, name)


def model_device(module: nn.Module) -> torch.device:
    """Device of a module's first parameter (CPU for a module without parameters)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def progress_bar(iterable, enabled: bool, **kwargs):
    """``iterable`` in a tqdm bar, drawn only when ``enabled`` and standard error is a terminal: the logs of runs
    whose output is redirected stay free of bar redraws. The bar's methods (``set_postfix``) work either way."""
    from tqdm.auto import tqdm

    return tqdm(iterable, leave=False, disable=not (enabled and sys.stderr.isatty()), **kwargs)


def time_mean_covariance(
    rnn: nn.Module,
    data: Any,
    *,
    device=None,
    batch_size: int = 256,
    input_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    progress: bool = False,
    precision: str = "float32",
    lengths: Any = None,
) -> CovarianceStats:
    """Accumulate the time-mean covariance of an RNN's hidden states in one streaming pass (section 2).

    Parameters
    ----------
    rnn : torch.nn.RNN (single layer, unidirectional; also nn.LSTM/nn.GRU, whose output is h_t)
        For an LSTM with ``proj_size``, the states are its cells' ``h_t`` (width ``hidden_size``), recomputed from
        its projected output (:mod:`pruning.projected`).
        The trained, uncompressed network. Any floating dtype; statistics are float64.
    data : tensor, array, PackedSequence, list of sequences or iterable of batches
        Input sequences, shaped ``(batch, T, d_x)`` if ``rnn.batch_first`` else ``(T, batch, d_x)``;
        a single unbatched sequence ``(T, d_x)``, PackedSequences and lists of sequences of different lengths are
        also accepted (:func:`pruning.sequences.iter_sequence_batches`). Only real steps enter the statistics.
    lengths : array-like, optional
        The length of every sequence of a padded ``data`` (or, for an iterable of padded batches, one array per
        batch): the steps past it are padding and are left out.
    device : torch.device or str, optional
        Where to run the pass; defaults to the device of ``rnn``. The module is copied, not moved.
    batch_size : int
        Chunk size when ``data`` is a single tensor.
    input_transform : callable, optional
        Applied to each input batch before the RNN (e.g. an embedding lookup for token ids).
    progress : bool
        Show a progress bar.
    precision : {"float32", "float64"}
        How each batch's Gram matrix is formed before it joins the float64 sum (:meth:`CovarianceStats.update`).

    Returns
    -------
    CovarianceStats
        ``outer_sum`` (float64, on ``device``) and ``count`` = number of hidden states.

    Raises
    ------
    ValueError
        On empty data, a batch with the wrong feature size, non-finite inputs, or non-finite hidden
        states (the message names the batch).
    """
    if not isinstance(rnn, nn.RNNBase):
        raise TypeError(f"rnn: expected a torch.nn.RNN/LSTM/GRU, got {type(rnn).__name__}")
    if rnn.num_layers != 1 or rnn.bidirectional:
        raise ValueError("rnn: expected a single-layer unidirectional module (num_layers=1, bidirectional=False); "
                         "use pruning.layer_covariances for stacked or bidirectional modules")
    return layer_covariances([rnn], data, device=device, batch_size=batch_size, input_transform=input_transform,
                             progress=progress, precision=precision, lengths=lengths)[0][0]


class _FiniteChecks:
    """The pass's NaN/inf checks, each a 0-d boolean tensor with the error it raises when false.

    On CPU a check is read at once. On a GPU reading it waits for the device, so the checks are kept and read
    together every ``every`` checks and at the end of the pass: the device then runs ahead of the Python loop
    instead of idling at two synchronisations per batch. The error is the same, naming the first failing batch; it
    only comes later."""

    def __init__(self, device: torch.device, every: int = 256):
        self.deferred = device.type != "cpu"
        self.every = every
        self.pending: list = []

    def add(self, ok: torch.Tensor, message: str) -> None:
        if not self.deferred:
            if not ok:
                raise ValueError(message)
            return
        self.pending.append((ok, message))
        if len(self.pending) >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        flags = torch.stack([ok for ok, _ in self.pending]).cpu()  # one synchronisation for all of them
        pending, self.pending = self.pending, []
        if not bool(flags.all()):
            raise ValueError(pending[int((~flags).nonzero()[0])][1])


def _add_batch(layers: Sequence[nn.Module], x, stats: dict, last: int, directions: int, batch: str,
               precision: str, checks: _FiniteChecks, top: Any = None, starts: Optional[List[Any]] = None
               ) -> List[Any]:
    """Run one batch through ``layers[:last + 1]`` and add the states of the layers in ``stats``. ``top``, when
    given, is the output the last layer already returned on this batch (the model's own run of its recurrent module,
    :func:`module_output_covariances`): it is used instead of running that layer again. ``starts``: each layer's
    initial state (None: zero). Returns each layer's final state (None for a layer not run), which a next call that
    continues this one starts from. A function of its own so that the batch's states are freed when it returns: held
    past the next batch's forward pass, they kept the allocator from reusing their memory, which cost 10-20% of a
    forward pass (m = 256, T = 100)."""
    packed = isinstance(x, PackedSequence)
    finals: List[Any] = [None] * (last + 1)
    for l in range(last + 1):
        inputs = x
        if top is not None and l == last:
            x = top
        else:
            start = None if starts is None else starts[l]
            x, finals[l] = layers[l](x) if start is None else layers[l](x, start)
        if l not in stats:
            continue
        m = layers[l].hidden_size
        if projection(layers[l]):
            # the units of a projected LSTM are its cells, which it does not return
            per_direction = projected_cell_states(layers[l], inputs, x)
        else:
            # a packed output holds exactly the real steps' states, in both directions
            states = _state_rows(x.data if packed else x)
            per_direction = [states[:, d * m:(d + 1) * m] for d in range(directions)]
        del inputs
        for d in range(directions):
            name = f"data: the hidden states of {batch} (layer {l}; the network diverges on it)"
            checks.add(stats[l][d]._add(per_direction[d], name, precision),
                       not_finite_message(name, precision, per_direction[d].dtype))
    return finals


def _layer_starts(start: CallStart, finals: List[Any], count: int, directions: int,
                  kept: Optional[Sequence[Sequence[Sequence[int]]]], device, dtype) -> List[Any]:
    """The initial state of each of the first ``count`` layers for a call that starts at ``start``.

    A carried call continues each layer from the final state this pass reached on the previous call (``finals``),
    so pruned layers below carry their own states; where this pass did not run a layer on that call (the model's own
    output stood in for the top layer's states), from the state the model passed, that layer's rows of ``hx``. A
    learned initial state gives each layer its rows, and a pruned layer below (``kept[l]``: its kept units per
    direction) the entries of its kept units, as the pruned model's sliced state does."""
    out = []
    for l in range(count):
        if start.carried and l < len(finals) and finals[l] is not None:
            out.append(finals[l])
            continue
        if start.hx is None:  # a replayed carried call keeps no state: the pass must have run the call before it
            raise RuntimeError(f"a carried call reached layer {l} without the state the previous call ended at")
        parts = start.hx if isinstance(start.hx, tuple) else (start.hx,)
        rows = []
        for part in parts:
            block = part[l * directions:(l + 1) * directions]
            if kept is not None and l < len(kept) and kept[l] is not None:
                block = cut_rows(block, kept[l])
            rows.append(block.to(device=device, dtype=dtype).contiguous())
        out.append(tuple(rows) if isinstance(start.hx, tuple) else rows[0])
    return out


def layer_covariances(layers: Sequence[nn.Module], data: Any, *, collect: Optional[Sequence[int]] = None,
                      device=None, batch_size: int = 256,
                      input_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                      progress: bool = False, precision: str = "float32",
                      lengths: Any = None) -> List[List[CovarianceStats]]:
    """Time-mean covariances of every layer-direction's output states in one streaming pass (section 2).

    ``layers`` are single-layer modules run one after the other (:func:`pruning.modules.as_layers`). Returns, for
    each layer index in ``collect`` (default: all), one :class:`CovarianceStats` per direction. The statistics are
    float64 whatever the modules' dtype; memory is O(batch x T x width + width^2).
    """
    layers = list(layers)
    batches = iter_sequence_batches(data, batch_size, batch_first=layers[0].batch_first, lengths=lengths)
    total = count_batches(data, batch_size, batch_first=layers[0].batch_first, lengths=lengths) if progress else None
    return _covariances(layers, ((b, None) for b in batches), collect, device, input_transform, progress, precision,
                        total)


def module_output_covariances(layers: Sequence[nn.Module], calls: Iterable[tuple], *, collect=None,
                              use_outputs: bool = True, kept=None, device=None, progress: bool = False,
                              precision: str = "float32") -> List[List[CovarianceStats]]:
    """:func:`layer_covariances` over the calls a model made of its recurrent module, given as ``(input, output)`` or
    ``(input, output, start)`` items: the input a tensor in the module's layout or a PackedSequence, the output what
    the module returned on it in the model's run, or None, and ``start`` the :class:`~pruning.sequences.CallStart`
    of a call that did not start from the zero state (None where it did).

    With ``use_outputs`` (``layers`` are the module's own layers) the last layer's states are the module's output,
    so they are taken from it instead of running the network again; only the layers below it (of a stacked module)
    are run. Where the output is None, or was computed in another dtype than the module's parameters (autocast), the
    batch is run as :func:`layer_covariances` runs it. Without it (``layers`` are pruned copies of the module's lower
    layers followed by one of its layers, ``kept`` the kept units of each pruned one per direction) every layer runs.
    Each layer starts where the call started: a carried call continues from the final states of the layers' own run
    on the previous call, a learned initial state gives each layer its rows (:func:`_layer_starts`). The statistics
    are those :func:`layer_covariances` computes from the inputs alone (the same states, in the same precision), on
    ``device`` (default: the module's)."""
    layers = list(layers)
    dtype = next(layers[0].parameters()).dtype

    def batches():
        for item in calls:
            x, y = item[0], item[1]
            start = item[2] if len(item) > 2 else None
            out = y[0] if isinstance(y, tuple) and not isinstance(y, PackedSequence) else y
            raw = out.data if isinstance(out, PackedSequence) else out
            top = out if use_outputs and isinstance(raw, torch.Tensor) and raw.dtype == dtype else None
            yield (SequenceBatch(packed=x) if isinstance(x, PackedSequence) else SequenceBatch(x)), top, start
            del item, x, y, out, raw, top  # not held while the model runs on the next batch

    return _covariances(layers, batches(), collect, device, None, progress, precision, kept=kept)


def _covariances(layers: List[nn.Module], batches: Iterable[tuple], collect, device,
                 input_transform, progress: bool, precision: str,
                 total: Optional[int] = None, kept=None) -> List[List[CovarianceStats]]:
    """The pass over ``(batch, top)`` or ``(batch, top, start)`` items (``top``: the last layer's output on the
    batch, or None; ``start``: where the call started, :func:`module_output_covariances`); ``total``: the number of
    batches where it is known (the progress bar's)."""
    precision = PRECISION.check(precision, "precision")
    collect = list(range(len(layers))) if collect is None else list(collect)
    here = model_device(layers[0])
    device = resolve_device(device, layers[0])
    if device != here:
        layers = [copy.deepcopy(layer).to(device) for layer in layers]
    first = layers[0]
    dtype = next(first.parameters()).dtype
    D = 2 if first.bidirectional else 1
    stats = {l: [CovarianceStats.zeros(layers[l].hidden_size, device=device) for _ in range(D)] for l in collect}
    it = progress_bar(batches, progress, desc="covariance", unit="batch", total=total)
    last = max(collect)
    top_usable = last == len(layers) - 1
    layout = "(batch, T, d_x)" if first.batch_first else "(T, batch, d_x)"
    checks = _FiniteChecks(device)
    finals: List[Any] = []  # each layer's final state on the previous call, where a next call continues it
    with torch.no_grad():
        for i, item in enumerate(it):
            batch, top = item[0], item[1]
            start = item[2] if len(item) > 2 else None
            del item
            x = pack(batch, input_transform, batch_first=first.batch_first, device=device, dtype=dtype)
            packed = isinstance(x, PackedSequence)
            raw = x.data if packed else x
            if raw.ndim not in ((2,) if packed else (2, 3)):
                raise ValueError(f"data: batch {i} has shape {tuple(raw.shape)}; expected {layout} or (T, d_x)")
            if raw.shape[-1] != first.input_size:
                raise ValueError(f"data: batch {i} has {raw.shape[-1]} input features, the RNN expects "
                                 f"input_size={first.input_size}")
            if raw.numel() == 0:
                continue
            checks.add(torch.isfinite(raw).all(), f"data: batch {i} contains NaN or inf inputs")
            starts = None if start is None else _layer_starts(start, finals, last + 1, D, kept, device, dtype)
            finals = _add_batch(layers, x, stats, last, D, f"batch {i}", precision, checks,
                                top.to(device) if top is not None and top_usable else None, starts)
            del batch, top, x, raw, start, starts  # not held while the next batch is made (the model's run)
    checks.flush()
    if not stats[collect[0]][0].count:
        raise ValueError("data: no data; expected at least one non-empty batch of sequences")
    return [stats[l] for l in collect]
