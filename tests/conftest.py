import importlib
import os
import sys
import textwrap

import pytest
import torch
from hypothesis import HealthCheck, settings

# Hypothesis profiles: "ci" (default) keeps `make test` short; "full" for a deeper search
# (HYPOTHESIS_PROFILE=full make test-all).
settings.register_profile("ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("full", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def importable(tmp_path, monkeypatch):
    """``make(name, source)`` writes ``source`` as the module ``name`` in ``tmp_path`` and imports it: what the CLI's
    ``--model package.module:factory`` reads. The modules are forgotten after the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []

    def make(name: str, source: str):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return importlib.import_module(name)

    yield make
    for name in names:
        sys.modules.pop(name, None)
