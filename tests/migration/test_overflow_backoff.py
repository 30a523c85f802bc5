"""Overflow back-off on real migrations: dense pages skip the encoder, RAM still arrives whole."""

from __future__ import annotations

import pytest

from xbzrle import Guest
from xbzrle.migration.manager import MigrationManager
from xbzrle.migration.status import MigrationStatus

RAM = 16 << 20


def _migrate(workload: str, xbzrle: bool, bandwidth: int, max_rounds: int, **params):
    """A real migration of a 16 MiB guest running ``workload`` over loopback TCP,
    waited to completion on both sides; returns (migration, digests equal)."""
    src, dst = Guest(ram=RAM), Guest(ram=RAM)
    try:
        dst.stop()
        src.stop()
        work = src.start_workload(workload, rate=20_000)
        work.step(2 * work.spec.pages)
        src.cont()
        src_m, dst_m = MigrationManager(src), MigrationManager(dst)
        for m in (src_m, dst_m):
            m.set_capability("xbzrle", xbzrle)
        src_m.set_parameters(max_bandwidth=bandwidth, downtime_limit=0, xbzrle_cache_size=RAM,
                             **params)
        incoming = dst_m.incoming("tcp:127.0.0.1:0", resume=False)
        mig = src_m.migrate(f"tcp:127.0.0.1:{incoming.port}", max_rounds=max_rounds)
        assert mig.wait(120) == MigrationStatus.COMPLETED, mig.error
        assert dst_m.wait(30) == MigrationStatus.COMPLETED, dst_m.current.error
        return mig, src.digest() == dst.digest()
    finally:
        src.close()
        dst.close()


@pytest.mark.parametrize("backoff", [True, False], ids=["backoff", "no-backoff"])
def test_dense_pages_skip_the_encoder_after_they_overflow(backoff):
    mig, same_ram = _migrate("dense", True, 64 << 20, 8, x_overflow_backoff=backoff)
    assert same_ram
    cache = mig.query()["xbzrle-cache"]
    assert cache["overflow"] > 0  # dense pages are rewritten wholesale
    assert cache["x-encode-time"] > 0  # every overflow is an encoder run
    if backoff:
        assert cache["skipped-overflow"] > 0
    else:
        assert cache["skipped-overflow"] == 0


@pytest.mark.parametrize("xbzrle", [True, False], ids=["xbzrle", "plain"])
def test_encoder_time_is_reported_when_xbzrle_encodes_and_only_then(xbzrle):
    """``x-encode-time`` (microseconds inside the encoder) grows with XBZRLE rounds;
    a migration without XBZRLE never runs the encoder and has no ``xbzrle-cache``."""
    mig, _ = _migrate("loadgen", xbzrle, 16 << 20, 4)
    info = mig.query()
    rounds = [r.counts for r in mig.stats.history]
    assert rounds[0].encode_ns == rounds[0].encode_timed == 0  # the first round is plain
    totals = mig.stats.totals
    if xbzrle:
        cache = info["xbzrle-cache"]
        assert cache["pages"] > 0 and 0 < totals.encode_timed <= cache["pages"]
        # the timed runs' sum, scaled to every encoder run (every cache hit)
        assert totals.encode_time_ns == \
            totals.encode_ns * cache["pages"] // totals.encode_timed
        assert cache["x-encode-time"] == -(-totals.encode_time_ns // 1000) > 0
    else:
        assert "xbzrle-cache" not in info
        assert sum(r.encode_ns + r.encode_timed for r in rounds) == 0
