"""Sweeps on executors: a local process pool and a Dask cluster, with workers that die mid-task."""

import os
from pathlib import Path

import pytest

from benchmarks.executor import TaskFailed, run_tasks


def square_or_die(x: int, marker: str) -> int:
    """Kills its worker process the first time it runs for x == 2 (the marker file remembers)."""
    if x == 2 and not os.path.exists(marker):
        Path(marker).write_text("died once")
        os._exit(1)
    return x * x


def always_fails(x: int) -> int:
    raise ArithmeticError(f"no result for {x}")


def test_process_pool_survives_a_dead_worker(tmp_path):
    got = {}
    tasks = {x: (square_or_die, (x, str(tmp_path / "marker"))) for x in range(5)}
    attempts = run_tasks(tasks, lambda k, v: got.setdefault(k, []).append(v), workers=2, log=lambda s: None)
    assert got == {x: [x * x] for x in range(5)}  # every task once
    assert attempts[2] >= 2 and (tmp_path / "marker").exists()


def test_a_task_that_keeps_failing_is_reported_after_the_others_finish(tmp_path):
    got = {}
    tasks = {0: (square_or_die, (0, str(tmp_path / "m"))), 1: (always_fails, (1,))}
    with pytest.raises(TaskFailed, match="task 1: failed 3 times"):
        run_tasks(tasks, lambda k, v: got.setdefault(k, v), workers=1, retries=2, log=lambda s: None)
    assert got == {0: 0}
    with pytest.raises(ValueError, match="workers"):
        run_tasks(tasks, lambda k, v: None, workers=0)


def test_dask_local_cluster_survives_a_dead_worker(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        got = {}
        tasks = {x: (square_or_die, (x, str(tmp_path / "marker"))) for x in range(5)}
        run_tasks(tasks, lambda k, v: got.setdefault(k, []).append(v), executor=client.get_executor(),
                  log=lambda s: None)
    assert got == {x: [x * x] for x in range(5)}
    assert (tmp_path / "marker").exists()  # a worker really died on the way


def test_reproduce_on_a_process_pool_matches_the_sequential_run(tmp_path):
    import torch

    from benchmarks.reproduce import Preset, run_reproduce
    from benchmarks.training import TrainConfig

    preset = Preset("pool", hidden_sizes=(10,), ks=(3,), seeds=(0, 1), seq_lens=(16,),
                    train=TrainConfig(epochs=1, batch_size=256))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers, so that training is bitwise the same
    try:
        seq = run_reproduce(preset, tmp_path / "seq", progress=False, log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    messages = []
    par = run_reproduce(preset, tmp_path / "par", workers=2, progress=False, log=messages.append)
    assert len(messages) == 2 * 2 + 1 * 2  # two networks per seed (T = 64 and T = 16), a dense one per seed
    key = lambda rows: {r["row_key"]: r["test_accuracy"] for r in rows}
    assert key(par) == key(seq) and len(par) == len(key(par))
    again = run_reproduce(preset, tmp_path / "par", workers=2, progress=False, log=messages.append)
    assert len(messages) == 6 and key(again) == key(par)  # nothing left to run
