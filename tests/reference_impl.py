"""The independent references live in ``checks.references`` (shared with ``python -m checks``)."""

from checks.references import (greedy_dense_rank_one, make_rnn, numpy_rnn_states, random_psd, ridge_objective_minimum,
                               rnn_weights)

__all__ = ["make_rnn", "numpy_rnn_states", "random_psd", "ridge_objective_minimum", "rnn_weights", "greedy_dense_rank_one"]


def on_reconstructed_states(model, path, pruned, maps, inputs):
    """``model`` with its recurrent module ``path`` (a single-layer GRU or RNN) returning the pruned module's own
    states mapped back to the original width: the output sequence and the final state of a plain module holding the
    pruned weights (no hook), each direction's k columns times ``maps[d]^T``, for ``inputs`` (what the module
    receives in the model's run on the batch used). What the pruned model computes when every read of the module's
    states, final state included, gets ``A_J h#`` (pruning.final_state)."""
    import copy

    import torch

    D = 2 if pruned.bidirectional else 1
    k = pruned.hidden_size
    plain = type(pruned)(pruned.input_size, k, bidirectional=pruned.bidirectional, batch_first=pruned.batch_first,
                         dtype=next(pruned.parameters()).dtype)
    plain.load_state_dict({name: v for name, v in pruned.state_dict().items() if name != "final_state_map"})
    A = [torch.as_tensor(M, dtype=next(pruned.parameters()).dtype) for M in maps]
    with torch.no_grad():
        y, h = plain(inputs)
        y = torch.cat([y[..., d * k:(d + 1) * k] @ A[d].T for d in range(D)], -1)
        h = torch.stack([h[d] @ A[d].T for d in range(D)])
    other = copy.deepcopy(model)
    other.get_submodule(path).register_forward_hook(lambda module, args, out: (y, h))
    return other
