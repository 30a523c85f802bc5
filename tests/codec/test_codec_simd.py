"""The compiled core's SIMD paths, their selection, and GIL release."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import xbzrle
from xbzrle.codec import implementations, reference

core = implementations().get("c")
pytestmark = pytest.mark.skipif(core is None, reason="no compiled core")
SRC = str(Path(xbzrle.__file__).resolve().parent.parent)


def corpus():
    """Page pairs that hit block edges, tails and run-length boundaries."""
    rng = random.Random(7)
    for size in (1, 3, 63, 64, 65, 127, 128, 129, 255, 256, 257, 300, 4096, 4100, 16384):
        old = rng.randbytes(size)
        yield old, old
        for positions in (
            [0],
            [size - 1],
            list(range(0, size, 2)),
            list(range(size)),
            list(range(1, size)),
            list(range(63, min(size, 200))),
            [p for p in range(size) if p % 64 in (62, 63, 0, 1)],
            rng.sample(range(size), max(1, size // 100)),
            list(range(min(size, 128), min(size, 128 + 200))),
        ):
            new = bytearray(old)
            for pos in positions:
                new[pos] ^= rng.randrange(1, 256)
            yield old, bytes(new)


def test_every_path_gives_the_reference_bytes(simd_path):
    for old, new in corpus():
        for limit in (None, 0, 10, len(old) // 2, 10**6):
            assert core.encode(old, new, limit) == reference.encode(old, new, limit), (
                simd_path, len(old), limit)
        delta = core.encode(old, new, 10**6)
        if delta is not None:
            assert core.decode(delta, old) == new, (simd_path, len(old))


def test_every_path_encodes_batches_like_single_pages(simd_path):
    pairs = [(old, new) for old, new in corpus() if len(old) == 4096]
    old = b"".join(o for o, _ in pairs)
    new = b"".join(n for _, n in pairs)
    deltas, lengths = core.encode_pages(old, new)
    assert (deltas, lengths) == reference.encode_pages(old, new)
    pages = bytearray(old)
    core.decode_pages(deltas, lengths, pages)
    for index, n in enumerate(lengths):
        page = slice(index * 4096, (index + 1) * 4096)
        assert pages[page] == (old[page] if n == -1 else new[page])


def test_every_path_finds_zero_pages(simd_path):
    for size in (0, 1, 7, 8, 255, 256, 257, 4096, 4100):
        assert core.is_zero(bytes(size))
        for pos in range(size):
            page = bytearray(size)
            page[pos] = 0x80
            assert not core.is_zero(page), (simd_path, size, pos)


def test_select_simd_refuses_unknown_paths():
    live = core.simd_path()
    with pytest.raises(ValueError, match="unknown SIMD path"):
        core.select_simd("sse9")
    assert core.simd_path() == live
    assert core.simd_paths()[-1] == "portable"


def test_backend_names_the_live_path(simd_path):
    if xbzrle.codec.current_backend() != "python":
        assert xbzrle.backend == f"c/{simd_path}"


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": SRC, "XBZRLE_BACKEND": "c", **env}
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True,
                          text=True, timeout=60)


def test_environment_variable_forces_a_path():
    for path in core.simd_paths():
        done = run_python("import xbzrle; print(xbzrle.backend)", XBZRLE_SIMD=path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"c/{path}"


def test_environment_variable_with_an_unknown_path_fails_loudly():
    done = run_python("import xbzrle; xbzrle.encode", XBZRLE_SIMD="neon")
    assert done.returncode != 0
    assert "XBZRLE_SIMD=neon: unknown SIMD path" in done.stderr


def test_encode_pages_releases_the_gil():
    """While a batch is encoded in a thread, the main thread keeps running.

    With a very long switch interval the interpreter never takes the GIL
    away from the worker, so the counter can only move during the call if
    the call itself released the GIL.
    """
    old = bytes(32 << 20)
    new = bytearray(old)
    new[::4096] = b"\x01" * (len(new) // 4096)
    counter, seen = [0], {}
    started, finished = threading.Event(), threading.Event()

    def worker():
        started.set()
        seen["during call"] = 0
        for _ in range(20):  # a busy machine may not run the main thread at once
            before = counter[0]
            core.encode_pages(old, new)
            seen["during call"] = counter[0] - before
            if seen["during call"]:
                break
        finished.set()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    try:
        thread = threading.Thread(target=worker)
        thread.start()
        started.wait()
        while not finished.wait(0.0002):
            counter[0] += 1
        thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert seen["during call"] > 0
