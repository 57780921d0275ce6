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
