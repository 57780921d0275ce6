"""Covariance statistics under torch.distributed (gloo, 2 processes) equal the single-process result."""

import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from pruning import layer_covariances, spectral_prune, time_mean_covariance
from pruning.distributed import all_reduce_stats, shard
from pruning.modules import as_layers

WORKER = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from pruning import layer_covariances, time_mean_covariance
    from pruning.distributed import all_reduce_stats, shard
    from pruning.modules import as_layers

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    rnn = torch.nn.RNN(3, 12, nonlinearity="relu", batch_first=True, dtype=torch.float64)
    lstm = torch.nn.LSTM(3, 6, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    x = torch.randn(37, 9, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mine = shard(x, rank, world, batch_first=True)
    single = all_reduce_stats(time_mean_covariance(rnn, mine, batch_size=5))
    grid = all_reduce_stats(layer_covariances(as_layers(lstm), mine, batch_size=4))
    if rank == 0:
        torch.save(dict(single=(single.outer_sum, single.count),
                        grid=[[(s.outer_sum, s.count) for s in row] for row in grid]), sys.argv[1])
    dist.destroy_process_group()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_give_the_single_process_statistics(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "reduced.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_free_port()}", str(script), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(out, weights_only=True)
    torch.manual_seed(0)
    rnn = torch.nn.RNN(3, 12, nonlinearity="relu", batch_first=True, dtype=torch.float64)
    lstm = torch.nn.LSTM(3, 6, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    x = torch.randn(37, 9, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # one process, all sequences, other batch boundaries; float64 models, so the states themselves agree to
    # round-off and what remains is the order of summation
    ref = time_mean_covariance(rnn, x)
    assert got["single"][1] == ref.count == 37 * 9
    torch.testing.assert_close(got["single"][0], ref.outer_sum, rtol=1e-12, atol=1e-12)
    ref_grid = layer_covariances(as_layers(lstm), x)
    for row, ref_row in zip(got["grid"], ref_grid):
        for (outer, count), r in zip(row, ref_row):
            assert count == r.count
            torch.testing.assert_close(outer, r.outer_sum, rtol=1e-12, atol=1e-12)


def test_shard_covers_every_sequence_once():
    x = torch.arange(10.0).reshape(10, 1, 1)
    parts = [shard(x, r, 3, batch_first=True) for r in range(3)]
    assert sorted(torch.cat(parts).flatten().tolist()) == list(range(10))
    xt = x.transpose(0, 1)  # (T, batch, d_x)
    assert shard(xt, 1, 3, batch_first=False).flatten().tolist() == [1.0, 4.0, 7.0]
    assert shard(xt.numpy(), 1, 3, batch_first=False).flatten().tolist() == [1.0, 4.0, 7.0]
    assert shard(torch.arange(10).reshape(5, 2), 1, 2).tolist() == [[2, 3], [6, 7]]  # token ids (batch, T)
    # torch's modules are time-major by default: a 3-D tensor needs its layout said, or a rank gets every third step
    with pytest.raises(ValueError, match=r"batch_first: required to shard a 3-D tensor"):
        shard(xt, 1, 3)
    with pytest.raises(TypeError, match=r"batch_first: expected True or False"):
        shard(xt, 1, 3, batch_first=1)
    assert [b.item() for b in shard(iter(torch.arange(5.0)), 0, 2)] == [0.0, 2.0, 4.0]
    # a list's or a DataLoader's shard can be read again (a stack measured layer by layer reads it once per layer)
    batches = list(torch.arange(5.0).reshape(5, 1))
    assert [b.item() for b in shard(batches, 1, 2)] == [1.0, 3.0] and isinstance(shard(batches, 1, 2), list)
    loader = torch.utils.data.DataLoader(torch.arange(6.0), batch_size=2)
    part = shard(loader, 0, 2)
    assert [b.tolist() for b in part] == [b.tolist() for b in part] == [[0.0, 1.0], [4.0, 5.0]]
    with pytest.raises(ValueError, match="rank, world_size"):
        shard(x, 3, 3, batch_first=True)


def test_all_reduce_needs_an_initialised_group():
    stats = time_mean_covariance(torch.nn.RNN(2, 4, batch_first=True), torch.randn(3, 5, 2))
    with pytest.raises(RuntimeError, match="not initialised"):
        all_reduce_stats(stats)
    # without distribution the statistics go straight into pruning
    assert spectral_prune((torch.nn.RNN(2, 4, batch_first=True), torch.nn.Linear(4, 2)), covariance=stats,
                          k=2).k == 2
