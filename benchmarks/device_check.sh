#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run of a few minutes on a machine that has one and this project's
# dependencies installed (no network is needed; nothing is installed):
#
#   bash benchmarks/device_check.sh            # results in $OUT if set, else .device-check/
#
# 1. the device tests (tests/test_devices.py: statistics, selection, pruned outputs, the criteria and a tiny sweep on
#    CUDA against the CPU) and the compiled-model tests, whose CUDA cases skip everywhere else;
# 2. the covariance pass's overhead over a forward pass on the GPU (target +10%, issue 20) and, on the same machine
#    in the same run, on its CPU (target +40%), from benchmarks/bench_core.py.
#
# It writes log.txt (everything printed) and bench.json (pytest-benchmark's record, with each ratio in extra_info).
# PYTHON names the interpreter (default python3). Each step has its own time limit, so one that hangs leaves the
# other's results. The exit status is that of the tests, or else of the benchmarks.
set -uo pipefail
PY=${PYTHON:-python3}
DEST=${OUT:-.device-check}
mkdir -p "$DEST"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
    "$PY" -c 'import platform, torch
cuda = torch.cuda.is_available()
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name(0) if cuda else "none", "cpu", platform.processor() or platform.machine())
if not cuda:
    print("no CUDA device: the CUDA cases below skip and the GPU benchmark does not run")'
    timeout "${TEST_SECONDS:-300}" "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_devices.py \
        tests/test_compiled_models.py
    tests=$?
    echo "tests: exit status $tests"
    timeout "${BENCH_SECONDS:-240}" "$PY" -m pytest -q -p no:cacheprovider benchmarks/bench_core.py \
        -o python_files="bench_*.py" --benchmark-only -k "covariance_pass_overhead" \
        --benchmark-columns=min,median,max,rounds --benchmark-json="$DEST/bench.json"
    bench=$?
    echo "benchmarks: exit status $bench"
    if [ "$tests" -ne 0 ]; then exit "$tests"; fi
    exit "$bench"
} 2>&1 | tee "$DEST/log.txt"
exit "${PIPESTATUS[0]}"
