"""The independent references live in ``checks.references`` (shared with ``python -m checks``)."""

from checks.references import (greedy_dense_rank_one, make_rnn, numpy_rnn_states, random_psd, ridge_objective_minimum,
                               rnn_weights)

__all__ = ["make_rnn", "numpy_rnn_states", "random_psd", "ridge_objective_minimum", "rnn_weights", "greedy_dense_rank_one"]
