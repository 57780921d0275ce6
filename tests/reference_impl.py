"""The independent references live in ``checks.references`` (shared with ``python -m checks``)."""

from checks.references import (greedy_dense_rank_one, make_rnn, numpy_rnn_states, random_psd, ridge_objective_minimum,
                               rnn_weights)

__all__ = ["make_rnn", "numpy_rnn_states", "random_psd", "ridge_objective_minimum", "rnn_weights", "greedy_dense_rank_one"]


def on_reconstructed_states(model, path, pruned, maps, inputs, cell_maps=None):
    """``model`` with its recurrent module ``path`` (an RNN, GRU or LSTM) returning the pruned module's own states
    mapped back to the original width: the output sequence and the final state of a plain module holding the pruned
    weights (no hook), each row r of the final state (layer and direction) cut to its layer's k_r units (a stack's
    rows are padded) times ``maps[r]^T`` (m x k_r; an LSTM's final cells times ``cell_maps[r]^T``), and each
    direction's k columns of the output times its top-layer map, for ``inputs`` (what the module receives in the
    model's run on the batch used). What the pruned model computes when every read of the module's states, final
    state included, gets ``A_J h#`` (pruning.final_state)."""
    import copy

    import torch

    D = 2 if pruned.bidirectional else 1
    plain = copy.deepcopy(pruned)  # the pruned weights without the hook: its own states, rows padded in a stack
    plain._forward_hooks.clear()
    dtype = next(pruned.parameters()).dtype
    A = [torch.as_tensor(M, dtype=dtype) for M in maps]
    B = None if cell_maps is None else [torch.as_tensor(M, dtype=dtype) for M in cell_maps]
    widths = [M.shape[1] for M in A]  # row r's layer keeps widths[r] units: the first entries of its row
    with torch.no_grad():
        y, h = plain(inputs)
        top = widths[-1]
        y = torch.cat([y[..., d * top:(d + 1) * top] @ A[len(A) - D + d].T for d in range(D)], -1)  # the top layer's
        rows = range(len(A))
        if isinstance(h, tuple):
            h = (torch.stack([h[0][r][..., :widths[r]] @ A[r].T for r in rows]),
                 torch.stack([h[1][r][..., :widths[r]] @ B[r].T for r in rows]))
        else:
            h = torch.stack([h[r][..., :widths[r]] @ A[r].T for r in rows])
    other = copy.deepcopy(model)
    other.get_submodule(path).register_forward_hook(lambda module, args, out: (y, h))
    return other


def final_cell_ridge_maps(cells, units, rel_lam):
    """The ridge maps of an LSTM's final cell states ``cells`` (directions, sequences, m), in float64:
    ``S_{F,J} (S_{J,J} + lambda I)^{-1}`` per direction, ``S`` their second moment over the sequences and
    ``lambda = rel_lam Tr S / m`` (pruning.final_state), for the kept units ``units[d]``."""
    import torch

    c = cells.double()
    maps = []
    for d, J in enumerate(units):
        S = c[d].T @ c[d] / c.shape[1]
        lam = rel_lam * float(torch.trace(S)) / S.shape[0]
        J = torch.as_tensor(list(J))
        maps.append(torch.linalg.solve(S[J][:, J] + lam * torch.eye(len(J), dtype=S.dtype), S[J]).T.numpy())
    return maps
