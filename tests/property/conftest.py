"""Hypothesis profiles: `ci` (default, a few hundred examples in all) and `bench` (2,500 per test: 12,500 in all).

`HYPOTHESIS_PROFILE=bench .venv/bin/python -m pytest tests/property -q` is the long run recorded in
docs/reliability.md.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("ci", max_examples=60, **_common)
settings.register_profile("bench", max_examples=2500, **_common)
settings.register_profile("medium", max_examples=400, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
