"""Shared test configuration."""

import os

from hypothesis import HealthCheck, settings

# Hypothesis: a fixed, modest budget so the suite stays fast on 2 cores; CI derandomizes
# so a red run can be replayed exactly.
settings.register_profile(
    "pigeon",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
)
settings.load_profile("pigeon")
