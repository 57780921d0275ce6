"""The mathematics of spectral pruning for RNNs (statements S1-S13 of ``docs/method.md``, proved in
``docs/theory.md``). This layer imports nothing from ``pruning``, ``benchmarks`` or ``checks``.

``theory.information``: the information losses S1/S2, the selection objective S3 and the reconstruction
matrix A_J, as closed forms of the covariance. ``theory.spectrum``: eigenvalues, degrees of freedom
N(lambda) (S7), leverage scores and the S8 sample-size condition. ``theory.elman``: the model of the bounds
(a single-layer Elman RNN with a linear read-out), its float64 weights and states. ``theory.approximation``: the approximation bounds S9 (per sequence and step)
and S10 (time mean, many-to-one), with the measured errors they bound. ``theory.estimation``: the
generalization bounds S11 (the class F_k(R)) and S12 (a pruned network). ``theory.losses`` and
``theory.empirical``: the losses of section 7 and the empirical risks, gaps and Hoeffding intervals
of section 8. Proofs: ``docs/theory.md``.
"""

from theory.approximation import (
    ApproximationTrace,
    measured_time_mean_error,
    s9_trace,
    s10_bias_bound,
    s10_bound,
    s10_last_step_bound,
    s_rho,
)
from theory.elman import ElmanWeights, check_readout, check_rnn, elman_weights
from theory.empirical import GapEstimate, RiskEstimate, generalization_gap, hoeffding_halfwidth, risk_estimate
from theory.estimation import (
    ClassRadii,
    CompressionBound,
    EstimationBound,
    EstimationTerm,
    estimation_term,
    network_outputs,
    network_radii,
    s11_bound,
    s12_bound,
)
from theory.information import (
    information_loss,
    reconstruction_matrix,
    residual_covariance,
    selection_objective,
)
from theory.losses import cross_entropy_loss, margin_ramp_loss, squared_loss, zero_one_loss
from theory.spectrum import (
    degrees_of_freedom,
    dof_sample_size,
    eigenvalues,
    lambda_for_dof,
    leverage_scores,
)

__all__ = [
    "information_loss",
    "reconstruction_matrix",
    "residual_covariance",
    "selection_objective",
    "ElmanWeights",
    "elman_weights",
    "check_rnn",
    "check_readout",
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
    "s10_bias_bound",
    "measured_time_mean_error",
    "ClassRadii",
    "EstimationTerm",
    "EstimationBound",
    "CompressionBound",
    "estimation_term",
    "network_outputs",
    "network_radii",
    "s11_bound",
    "s12_bound",
    "margin_ramp_loss",
    "cross_entropy_loss",
    "squared_loss",
    "zero_one_loss",
    "RiskEstimate",
    "GapEstimate",
    "hoeffding_halfwidth",
    "risk_estimate",
    "generalization_gap",
]
