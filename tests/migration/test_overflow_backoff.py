"""Overflow back-off on real migrations: dense pages skip the encoder, RAM still arrives whole."""

from __future__ import annotations

import pytest

from xbzrle import Guest
from xbzrle.migration.manager import MigrationManager
from xbzrle.migration.status import MigrationStatus

RAM = 16 << 20


@pytest.mark.parametrize("backoff", [True, False], ids=["backoff", "no-backoff"])
def test_dense_pages_skip_the_encoder_after_they_overflow(backoff):
    src, dst = Guest(ram=RAM), Guest(ram=RAM)
    try:
        dst.stop()
        src.stop()
        work = src.start_workload("dense", rate=20_000)
        work.step(2 * work.spec.pages)
        src.cont()
        src_m, dst_m = MigrationManager(src), MigrationManager(dst)
        for m in (src_m, dst_m):
            m.set_capability("xbzrle", True)
        src_m.set_parameters(max_bandwidth=64 << 20, downtime_limit=0,
                             xbzrle_cache_size=RAM, x_overflow_backoff=backoff)
        incoming = dst_m.incoming("tcp:127.0.0.1:0", resume=False)
        mig = src_m.migrate(f"tcp:127.0.0.1:{incoming.port}", max_rounds=8)
        assert mig.wait(120) == MigrationStatus.COMPLETED, mig.error
        assert dst_m.wait(30) == MigrationStatus.COMPLETED, dst_m.current.error
        assert src.digest() == dst.digest()
        cache = mig.query()["xbzrle-cache"]
        assert cache["overflow"] > 0  # dense pages are rewritten wholesale
        if backoff:
            assert cache["skipped-overflow"] > 0
        else:
            assert cache["skipped-overflow"] == 0
    finally:
        src.close()
        dst.close()
