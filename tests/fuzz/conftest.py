"""Fuzz targets share one budget: XBZRLE_FUZZ_EXAMPLES inputs per target (default 150).

The normal suite runs them briefly; a campaign raises the budget, usually
under scripts/asan-test (see docs/security.md).  Each target asserts only
what must hold for any input: the documented exception or a correct result.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("XBZRLE_FUZZ_EXAMPLES", "150"))

settings.register_profile(
    "fuzz", max_examples=EXAMPLES, deadline=None, derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much, HealthCheck.large_base_example])
FUZZ = settings.get_profile("fuzz")
