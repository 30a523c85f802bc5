"""Fixtures shared by the codec tests."""

from __future__ import annotations

import pytest

from xbzrle.codec import implementations

_core = implementations().get("c")


@pytest.fixture(params=_core.simd_paths() if _core else [])
def simd_path(request):
    """Each SIMD path the compiled core supports on this CPU, selected for the test."""
    live = _core.simd_path()
    _core.select_simd(request.param)
    yield request.param
    _core.select_simd(live)
