"""Spectral pruning of recurrent neural networks (Furuya et al., AISTATS 2022): the method.

Public surface (statements refer to ``../shared/reference/method.md``):

* :func:`time_mean_covariance`, :class:`CovarianceStats`: streaming float64 statistics (section 2);
* :func:`information_loss` (S1, S2), :func:`reconstruction_matrix` (S1), :func:`residual_covariance`;
* :func:`select_units`: greedy (S4), naive greedy, exhaustive, leverage sampling (S8) and baselines;
* :func:`compress`: the physically smaller ``nn.RNN`` and read-out (section 4, S6);
* :func:`spectral_prune`: all of the above in one call, returning a :class:`PruneResult`.
"""

from pruning.compress import compress, count_parameters
from pruning.covariance import CovarianceStats, time_mean_covariance
from pruning.losses import information_loss, reconstruction_matrix, residual_covariance, selection_objective
from pruning.prune import DEFAULT_REL_LAM, DEFAULT_THETA, DEFAULT_Z, PruneResult, spectral_prune
from pruning.selection import METHODS, LeverageSample, leverage_sample, select_units

__all__ = [
    "CovarianceStats",
    "time_mean_covariance",
    "information_loss",
    "reconstruction_matrix",
    "residual_covariance",
    "selection_objective",
    "select_units",
    "leverage_sample",
    "LeverageSample",
    "METHODS",
    "compress",
    "count_parameters",
    "spectral_prune",
    "PruneResult",
    "DEFAULT_REL_LAM",
    "DEFAULT_THETA",
    "DEFAULT_Z",
]
