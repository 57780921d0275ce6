"""Measurements: tasks, training, resumable benchmark runs, their reports and figures, and the speed benchmarks
(``bench_*.py``, run by ``make bench``). ``python -m benchmarks --help`` lists the commands. This layer imports
``theory`` and ``pruning``, never ``checks``."""
