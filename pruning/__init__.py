"""Spectral pruning of recurrent neural networks (Furuya et al., AISTATS 2022): the method.

Public surface (statements refer to ``../shared/reference/method.md``):

* :func:`time_mean_covariance`, :class:`CovarianceStats`: streaming float64 statistics (section 2), summed
  across processes by :func:`all_reduce_stats` (``torch.distributed``);
* :func:`information_loss` (S1, S2), :func:`reconstruction_matrix` (S1), :func:`residual_covariance`;
* :func:`select_units`: greedy (S4), naive greedy, exhaustive, leverage sampling (S8) and baselines;
* :func:`compress`, :func:`compress_stack`: the physically smaller module and read-out (section 4, S6),
  for ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU``, stacked and bidirectional (:mod:`pruning.stack`);
* :func:`layer_covariances`: per layer and direction statistics of stacked modules; :func:`count_macs`;
* :func:`spectral_prune`: all of the above in one call, returning a :class:`PruneResult`; with ``target=``,
  the smallest k meeting an error tolerance (:func:`prune_to_target`).
"""

from pruning.compress import compress, compress_stack, count_parameters
from pruning.covariance import CovarianceStats, time_mean_covariance
from pruning.distributed import all_reduce_stats, shard
from pruning.losses import information_loss, reconstruction_matrix, residual_covariance, selection_objective
from pruning.prune import DEFAULT_REL_LAM, DEFAULT_THETA, DEFAULT_Z, LayerPrune, PruneResult, spectral_prune
from pruning.stack import RecurrentStack, count_macs, layer_covariances
from pruning.target import prune_to_target, relative_output_error
from pruning.selection import METHODS, LeverageSample, leverage_sample, select_units

__all__ = [
    "CovarianceStats",
    "time_mean_covariance",
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
    "layer_covariances",
    "LayerPrune",
    "spectral_prune",
    "prune_to_target",
    "relative_output_error",
    "PruneResult",
    "DEFAULT_REL_LAM",
    "DEFAULT_THETA",
    "DEFAULT_Z",
]
