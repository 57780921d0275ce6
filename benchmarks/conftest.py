"""pytest-benchmark helpers: ratios measured in the same run, printed in a closing summary."""

import time

import pytest

RATIOS = []


def timed(fn, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls (the least noisy estimate on a shared machine)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def timed_interleaved(fns, repeat: int = 5):
    """Best wall time of each function, the calls interleaved (f, g, h, f, g, h, ...) so that a slow phase of a shared
    machine hits every function alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def inference_times(benchmark, full, pruned, x, repeat: int = 5):
    """Best many-to-one forward times of the ``(rnn, readout)`` pairs ``full`` and ``pruned`` on ``x``; the
    pruned pair also goes through pytest-benchmark. Returns ``(t_full, t_pruned)``."""
    import torch

    def run(pair):
        rnn, head = pair
        with torch.no_grad():
            head(rnn(x)[0][:, -1])

    t_full = timed(lambda: run(full), repeat=repeat)
    t_pruned = timed(lambda: run(pruned), repeat=repeat)
    benchmark.pedantic(lambda: run(pruned), rounds=5, iterations=1)
    return t_full, t_pruned


@pytest.fixture
def report_ratio(benchmark):
    def report(name: str, value: float, target: str, met: bool, **details):
        benchmark.extra_info.update({"ratio": value, "target": target, "target_met": met, **details})
        RATIOS.append((name, value, target, met, details))

    return report


def pytest_terminal_summary(terminalreporter):
    if not RATIOS:
        return
    terminalreporter.section("ratios measured in this run")
    for name, value, target, met, details in RATIOS:
        extra = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in details.items())
        terminalreporter.write_line(f"{name}: {value:.3g} (target {target}: {'met' if met else 'MISSED'}) [{extra}]")
