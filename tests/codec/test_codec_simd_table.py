"""Every SIMD path is an entry of the path table, named by ``xbzrle.backend``.

The AVX512-VBMI2 gather used to hide inside the AVX-512BW path, so the
backend name could not say whether it ran.  It is now its own entry, chosen
first on CPUs that have it and refused by name on CPUs that do not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import xbzrle
from xbzrle.codec import implementations

core = implementations().get("c")
pytestmark = pytest.mark.skipif(core is None, reason="no compiled core")
SRC = str(Path(xbzrle.__file__).resolve().parent.parent)


def cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def import_backend(**env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "XBZRLE_SIMD"}
    environment.update(PYTHONPATH=SRC, XBZRLE_BACKEND="c", **env)
    return subprocess.run([sys.executable, "-c", "import xbzrle; print(xbzrle.backend)"],
                          env=environment, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs /proc/cpuinfo")
def test_vbmi2_is_its_own_path_exactly_when_the_cpu_has_it():
    flags = cpu_flags()
    has_vbmi2 = {"avx512f", "avx512bw", "avx512_vbmi2", "bmi2"} <= flags
    if has_vbmi2:
        assert core.simd_paths()[0] == "avx512vbmi2"
        done = import_backend()
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "c/avx512vbmi2"
        forced = import_backend(XBZRLE_SIMD="avx512bw")
        assert forced.stdout.strip() == "c/avx512bw"
    else:
        assert "avx512vbmi2" not in core.simd_paths()
        done = import_backend(XBZRLE_SIMD="avx512vbmi2")
        assert done.returncode != 0
        assert "XBZRLE_SIMD=avx512vbmi2: this CPU does not support it" in done.stderr


def test_paths_are_listed_best_first_and_end_with_portable():
    order = ["avx512vbmi2", "avx512bw", "avx2", "portable"]
    paths = core.simd_paths()
    assert paths == [p for p in order if p in paths]
    assert paths[-1] == "portable"


def test_selecting_each_path_renames_the_backend():
    """With XBZRLE_BACKEND=python the codec is the reference whatever the core's path."""
    live = core.simd_path()
    compiled = xbzrle.codec.current_backend() != "python"
    try:
        for path in core.simd_paths():
            core.select_simd(path)
            assert xbzrle.backend == (f"c/{path}" if compiled else "python")
    finally:
        core.select_simd(live)
