"""What a run directory records about itself, so that its report can be rebuilt from the directory alone.

* ``DIR/run.json``: the run's title, protocol paragraph, task, seeds, the full preset and the keys of its rows
  in ``results.csv`` (the table may hold rows of other configurations too);
* ``DIR/run_log.jsonl``: one line per invocation that added to the run: the exact command line, the commit
  (and whether the checkout had uncommitted changes), the machine, the start time and the wall time.

Both are written atomically.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from pruning.fileio import atomic_write_text

__all__ = ["write_run_record", "read_run_record", "append_invocation", "read_invocations", "machine_info",
           "git_commit", "utc_now", "command_line"]

RUN_FILE = "run.json"
LOG_FILE = "run_log.jsonl"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def command_line(argv: Sequence[str], module: str = "benchmarks") -> str:
    """``python -m MODULE ARGS`` with the arguments quoted as a shell would need them."""
    import shlex

    return shlex.join(["python", "-m", module, *argv])


def git_commit() -> Dict[str, Any]:
    """The commit of the project's checkout and whether it has uncommitted changes (``unknown`` outside git)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    return dict(commit=commit or "unknown", dirty=dirty)


def machine_info() -> Dict[str, Any]:
    """CPU model and cores, GPU if any, Python and torch versions, torch threads."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return dict(cpu=cpu, cores=os.cpu_count(), gpu=gpu, system=f"{platform.system()} {platform.machine()}",
                python=platform.python_version(), torch=torch.__version__, torch_threads=torch.get_num_threads())


def write_run_record(out, *, title: str, protocol: str, task: str, seeds: Sequence[int], row_keys: Sequence[str],
                     preset: Dict[str, Any], extra: Optional[Dict[str, Any]] = None) -> None:
    """Write ``DIR/run.json``."""
    record = dict(title=title, protocol=protocol, task=task, seeds=list(seeds), preset=preset,
                  row_keys=sorted(set(row_keys)), **(extra or {}))
    atomic_write_text(Path(out) / RUN_FILE, json.dumps(record, indent=1, default=str) + "\n")


def read_run_record(out) -> Dict[str, Any]:
    """``DIR/run.json``, or a ValueError that says how such a directory is made."""
    path = Path(out) / RUN_FILE
    if not path.is_file():
        raise ValueError(f"DIR: {path} is missing; a report is rebuilt from a directory written by "
                         f"`python -m benchmarks reproduce --out DIR` (run it again on DIR to resume and record it)")
    return json.loads(path.read_text())


def read_invocations(out) -> List[Dict[str, Any]]:
    """Every recorded invocation of the run, oldest first (empty when none was recorded)."""
    path = Path(out) / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_invocation(out, *, command: str, started: str, wall_s: float, **extra: Any) -> Dict[str, Any]:
    """Add this invocation to ``DIR/run_log.jsonl`` (rewritten atomically); returns the entry."""
    entry = dict(command=command, started=started, wall_s=round(float(wall_s), 3), **git_commit(),
                 machine=machine_info(), **extra)
    lines = [json.dumps(e, sort_keys=True) for e in read_invocations(out)] + [json.dumps(entry, sort_keys=True)]
    atomic_write_text(Path(out) / LOG_FILE, "\n".join(lines) + "\n")
    return entry
