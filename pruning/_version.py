"""The installed version of this project: ``python -m pruning --version`` prints it, and the description that
:func:`pruning.save_pruned` writes beside a pruned model records which version wrote it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

#: The project's distribution name (pyproject.toml).
DISTRIBUTION = "spectral-rnn-pruning"


def library_version() -> str:
    """The version pip installed, or ``"unknown"`` for a source tree run without being installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"
