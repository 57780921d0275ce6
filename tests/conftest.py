import os

import torch
from hypothesis import HealthCheck, settings

# Hypothesis profiles: "ci" (default) keeps `make test` short; "full" for a deeper search
# (HYPOTHESIS_PROFILE=full make test-all).
settings.register_profile("ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("full", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(min(2, torch.get_num_threads()))
