"""The mathematics of spectral pruning for RNNs (``../shared/reference/method.md``).

``theory.spectrum``: eigenvalues, degrees of freedom N(lambda) (S7), leverage scores and the S8
sample-size condition. Later modules add the approximation (S9, S10) and generalization (S11, S12)
bounds.
"""

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
]
