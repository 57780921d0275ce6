"""Running independent sweep tasks on any ``concurrent.futures.Executor``, with retries.

The parent process submits tasks and is the only writer of the results table: a task returns its rows, and
``on_result`` merges them (keyed by configuration hash, so a configuration lands once even when a task ran
twice). Workers write only their own checkpoints, atomically.

* ``executor=None``: a local process pool of ``workers`` processes (spawned, one torch thread each). When a
  worker process dies, the pool breaks and every unfinished task fails; a fresh pool takes the unfinished
  tasks again.
* any other executor, e.g. a Dask cluster's ``Client(address).get_executor()`` (see :func:`dask_executor`):
  Dask reschedules the tasks of a dead worker itself; a task that still fails is resubmitted here.

A task that fails more than ``retries`` times raises, after the results of every other task were handed to
``on_result``.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Dict, Hashable, Mapping, Optional, Tuple

from theory._validation import Integer

__all__ = ["run_tasks", "run_here_or_in_workers", "dask_executor", "TaskFailed"]


class TaskFailed(RuntimeError):
    """A task failed more often than the retries allow."""


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # workers share the machine's cores; one thread each avoids oversubscription


def dask_executor(address: str):
    """A ``concurrent.futures`` executor on the Dask cluster at ``address`` (``tcp://host:port``) and its
    client; close the client when done."""
    try:
        from dask.distributed import Client
    except ImportError as err:  # pragma: no cover - dask is a declared dependency
        raise ImportError("dask_executor: needs dask.distributed (pip install 'dask[distributed]')") from err
    client = Client(address)
    return client.get_executor(), client


def run_here_or_in_workers(tasks: Mapping[Hashable, Tuple[Callable, tuple]], on_result: Callable[[Hashable, Any], None],
                           *, executor: Optional[Executor] = None, workers: int = 1,
                           log: Callable[[str], None] = print) -> None:
    """Without ``executor`` and with one worker: every task in this process, in order (no spawned process, so the
    caller's device, threads and progress bars apply; an error propagates at once). Otherwise :func:`run_tasks`."""
    if executor is None and workers <= 1:
        for key, (fn, args) in tasks.items():
            on_result(key, fn(*args))
    else:
        run_tasks(tasks, on_result, executor=executor, workers=workers, log=log)


def run_tasks(tasks: Mapping[Hashable, Tuple[Callable, tuple]], on_result: Callable[[Hashable, Any], None], *,
              executor: Optional[Executor] = None, workers: int = 2, retries: int = 3,
              log: Callable[[str], None] = print) -> Dict[Hashable, int]:
    """Run ``tasks`` ({key: (function, args)}) and call ``on_result(key, value)`` in this process as each
    finishes. Returns the number of attempts per key."""
    workers = Integer(1, None, what="a positive number of processes").check(workers, "workers")
    pending = dict(tasks)
    attempts: Counter = Counter()
    failure: Optional[BaseException] = None
    while pending:
        own = executor is None
        ex = executor if not own else ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
        try:
            futures = {ex.submit(fn, *args): key for key, (fn, args) in pending.items()}
            for fut in as_completed(futures):
                key = futures[fut]
                attempts[key] += 1
                try:
                    value = fut.result()
                except BrokenProcessPool:
                    log(f"task {key}: the worker pool broke (a worker died); it will run again")
                    if attempts[key] > retries:
                        failure = TaskFailed(f"task {key}: failed {attempts[key]} times (worker died)")
                        pending.pop(key)
                    continue
                except Exception as err:  # noqa: BLE001 - any task error is retried, then reported
                    log(f"task {key}: attempt {attempts[key]} failed: {type(err).__name__}: {err}")
                    if attempts[key] > retries:
                        failure = TaskFailed(f"task {key}: failed {attempts[key]} times; last error: {err!r}")
                        failure.__cause__ = err
                        pending.pop(key)
                    continue
                on_result(key, value)
                pending.pop(key)
        finally:
            if own:
                ex.shutdown(wait=True, cancel_futures=True)
    if failure is not None:
        raise failure
    return dict(attempts)
