"""The mathematics of spectral pruning for RNNs (``../shared/reference/method.md``).

``theory.spectrum``: eigenvalues, degrees of freedom N(lambda) (S7), leverage scores and the S8
sample-size condition. ``theory.approximation``: the approximation bounds S9 (per sequence and step)
and S10 (time mean, many-to-one), with the measured errors they bound. Proofs: ``docs/theory.md``.
The generalization bounds (S11, S12) are still to come.
"""

from theory.approximation import (
    ApproximationTrace,
    measured_time_mean_error,
    s9_trace,
    s10_bound,
    s10_last_step_bound,
    s_rho,
)
from theory.spectrum import (
    degrees_of_freedom,
    dof_sample_size,
    eigenvalues,
    lambda_for_dof,
    leverage_scores,
)

__all__ = [
    "eigenvalues",
    "degrees_of_freedom",
    "lambda_for_dof",
    "leverage_scores",
    "dof_sample_size",
    "ApproximationTrace",
    "s_rho",
    "s9_trace",
    "s10_bound",
    "s10_last_step_bound",
    "measured_time_mean_error",
]
