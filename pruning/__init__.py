"""Spectral pruning of recurrent neural networks (Furuya et al., AISTATS 2022): the method.

Public surface (statements S1-S13 as numbered in ``docs/method.md``):

* :func:`time_mean_covariance`, :class:`CovarianceStats`, :func:`layer_covariances`: streaming float64 statistics
  (section 2), summed across processes by :func:`all_reduce_stats` (``torch.distributed``);
* :func:`information_loss` (S1, S2), :func:`reconstruction_matrix` (S1), :func:`residual_covariance`,
  :func:`selection_objective` (S3): the closed forms, defined in :mod:`theory.information`;
* :func:`select_units`: greedy (S4), naive greedy, exhaustive, leverage sampling (S8) and baselines;
* :func:`compress`, :func:`compress_stack`: the physically smaller module and read-out (section 4, S6),
  for ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU``, stacked and bidirectional; :func:`count_macs`, :func:`count_parameters`;
* :func:`spectral_prune`: the steps of :mod:`pruning.steps` in one call, returning a :class:`PruneResult`; with
  ``target=``, the smallest k meeting an error tolerance (:func:`prune_to_target`);
* :func:`split_linear`: a linear layer over the states and other features rewritten as one layer per part, whose
  part over the states is then a read-out (:class:`SplitLinear`);
* :func:`save_pruned`, :func:`load_pruned`, :func:`load_checkpoint`: safetensors out and in, checkpoints read
  without running their code (:mod:`pruning.serialization`); :func:`save_statistics`, :func:`load_statistics`: a
  covariance pass kept for later prunes.

Layering: this package imports ``theory`` and never ``benchmarks`` or ``checks``.
"""

from pruning._version import library_version
from pruning.compress import compress, compress_stack
from pruning.covariance import CovarianceStats, layer_covariances, time_mean_covariance
from pruning.distributed import all_reduce_stats, shard
from pruning.modules import count_macs, count_parameters
from pruning.prune import spectral_prune
from pruning.recurrent_stack import RecurrentStack
from pruning.result import LayerPrune, PruneResult
from pruning.selection import METHODS, LeverageSample, leverage_sample, select_units
from pruning.split_linear import SplitLinear, split_linear
from pruning.serialization import load_checkpoint, load_pruned, load_statistics, save_pruned, save_statistics
from pruning.steps import DEFAULT_REL_LAM, DEFAULT_THETA, DEFAULT_Z, PruneSettings
from pruning.target import prune_to_target, relative_output_error
from theory.information import information_loss, reconstruction_matrix, residual_covariance, selection_objective

__version__ = library_version()

__all__ = [
    "__version__",
    "CovarianceStats",
    "time_mean_covariance",
    "layer_covariances",
    "all_reduce_stats",
    "shard",
    "information_loss",
    "reconstruction_matrix",
    "residual_covariance",
    "selection_objective",
    "select_units",
    "leverage_sample",
    "LeverageSample",
    "METHODS",
    "compress",
    "compress_stack",
    "count_parameters",
    "count_macs",
    "RecurrentStack",
    "LayerPrune",
    "PruneSettings",
    "spectral_prune",
    "prune_to_target",
    "relative_output_error",
    "PruneResult",
    "DEFAULT_REL_LAM",
    "DEFAULT_THETA",
    "DEFAULT_Z",
    "load_pruned",
    "save_pruned",
    "load_statistics",
    "save_statistics",
    "load_checkpoint",
    "split_linear",
    "SplitLinear",
]
