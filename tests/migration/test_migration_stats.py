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


def test_completed_rates_cover_the_whole_transfer_like_qemu():
    """Completed: transferred bytes over (total time - setup), not the last window."""
    clock = Clock()
    stats = MigrationStats(total_ram=1 << 30, xbzrle=False, clock=clock)
    stats.setup_time_ms = 500
    for _ in range(8):  # 8 s at 8 MiB/s ...
        clock.t += 1.0
        stats.add_batch(BatchCounts(scanned=2048, normal=2048, wire_bytes=8 << 20))
    clock.t += 0.5  # setup is not transfer time
    clock.t += 0.01  # ... then a burst in the last 10 ms (the stopped guest's pages)
    stats.add_batch(BatchCounts(scanned=4096, normal=4096, wire_bytes=16 << 20))
    stats.finish()
    ram = stats.to_qmp("completed")["ram"]
    transfer_s = (8 + 0.5 + 0.01) - 0.5  # total time minus setup
    assert abs(ram["mbps"] - (80 << 20) * 8 / transfer_s / 1e6) < 1e-3
    assert ram["pages-per-second"] == int((8 * 2048 + 4096) / transfer_s)


def test_remaining_falls_during_a_pass():
    clock = Clock()
    stats = MigrationStats(total_ram=100 * 4096, xbzrle=False, clock=clock)
    assert stats.to_qmp("active")["ram"]["remaining"] == 100 * 4096
    stats.add_batch(BatchCounts(scanned=40, zero=30, normal=10, wire_bytes=10 * 4100))
    assert stats.to_qmp("active")["ram"]["remaining"] == 60 * 4096
    assert abs(stats.progress().fraction - 0.4) < 1e-9
    stats.start_pass(20)  # the sync found 20 dirty pages: the next pass
    progress = stats.progress()
    assert progress.pass_bytes == progress.remaining == 20 * 4096 and progress.fraction == 0
    stats.add_batch(BatchCounts(scanned=5, normal=5, wire_bytes=5 * 4100))
    assert stats.to_qmp("active")["ram"]["remaining"] == 15 * 4096


def test_dirty_pages_rate_spans_at_least_one_second():
    clock = Clock()
    stats = MigrationStats(total_ram=1 << 30, xbzrle=False, clock=clock)
    clock.t += 0.02  # a 20 ms pass that found 1000 dirty pages: not a rate yet
    stats.start_pass(1000)
    assert stats.to_qmp("active")["ram"]["dirty-pages-rate"] == 0
    clock.t += 0.98
    stats.start_pass(500)
    assert stats.to_qmp("active")["ram"]["dirty-pages-rate"] == 1500  # 1500 pages in 1 s


def test_progress_rate_is_the_average_until_the_first_period_ends():
    clock = Clock()
    stats = MigrationStats(total_ram=1 << 30, xbzrle=False, clock=clock)
    clock.t += 0.5
    stats.add_batch(BatchCounts(scanned=1024, normal=1024, wire_bytes=4 << 20))
    assert abs(stats.progress().mbps - (4 << 20) * 8 / 0.5 / 1e6) < 1e-6
    assert "round 1:" in stats.progress().describe()
