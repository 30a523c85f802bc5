"""query-migrate's shape and definitions, with a fake clock."""

from xbzrle.migration.stats import BatchCounts, MigrationStats


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_qmp_shape_and_xbzrle_definitions():
    clock = Clock()
    stats = MigrationStats(total_ram=1 << 30, xbzrle=True, cache_size=64 << 20, clock=clock)
    clock.t += 2.0
    stats.add_batch(BatchCounts(scanned=10, zero=2, normal=4, xbzrle=3, unchanged=1,
                                overflow=1, cache_miss=2, xbzrle_bytes=3 * 30 + 4096,
                                wire_bytes=50_000))
    info = stats.to_qmp("active")
    assert info["status"] == "active"
    ram = info["ram"]
    assert ram["duplicate"] == 2 and ram["normal"] == 4 and ram["normal-bytes"] == 4 * 4096
    assert ram["transferred"] == 50_000 and ram["total"] == 1 << 30
    x = info["xbzrle-cache"]
    assert x["pages"] == 5  # encoded + unchanged + overflowed: every cache hit
    assert x["cache-miss"] == 2 and x["overflow"] == 1
    assert x["bytes"] == 3 * 30 + 4096
    # rates over the last period: 2 misses over 9 pages sent; 3 pages' bytes over xbzrle bytes
    assert abs(x["cache-miss-rate"] - 2 / 9) < 1e-6
    assert abs(x["encoding-rate"] - 3 * 4096 / (3 * 30 + 4096)) < 1e-6
    assert abs(ram["mbps"] - 50_000 * 8 / 2.0 / 1e6) < 1e-3
    assert info["total-time"] == 2000


def test_no_xbzrle_group_without_the_capability():
    stats = MigrationStats(total_ram=4096, xbzrle=False)
    assert "xbzrle-cache" not in stats.to_qmp("completed")


def test_rates_wait_for_a_full_period():
    clock = Clock()
    stats = MigrationStats(total_ram=4096, xbzrle=True, clock=clock)
    clock.t += 0.5
    stats.add_batch(BatchCounts(normal=1, cache_miss=1, wire_bytes=4096))
    assert stats.to_qmp("active")["xbzrle-cache"]["cache-miss-rate"] == 0
    clock.t += 0.6
    stats.add_batch(BatchCounts(xbzrle=1, xbzrle_bytes=13, wire_bytes=30))
    assert stats.to_qmp("active")["xbzrle-cache"]["cache-miss-rate"] == 0.5
