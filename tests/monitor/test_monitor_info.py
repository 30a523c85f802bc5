"""``info migrate`` text in QEMU 7.2's layout (pure formatting)."""

from xbzrle.monitor.info import format_info_migrate

GLOBALS = """globals:
store-global-state: off
only-migratable: off
send-configuration: on
send-section-footer: on
decompress-error-check: on
clear-bitmap-shift: 18"""

RAM = {"transferred": 34023 << 10, "remaining": 0, "total": 512 << 20, "duplicate": 127001,
       "skipped": 0, "normal": 8168, "normal-bytes": 8168 * 4096, "dirty-sync-count": 4,
       "dirty-pages-rate": 2048, "mbps": 65.83, "page-size": 4096, "pages-per-second": 2008}


def test_before_any_migration_the_globals_are_printed():
    assert format_info_migrate({}) == GLOBALS


def test_a_failure_is_one_status_line_and_no_ram_block():
    text = format_info_migrate({"status": "failed", "total-time": 12, "ram": RAM,
                                "error-desc": "Connection refused"})
    assert text == GLOBALS + "\nMigration status: failed (Connection refused)\ntotal time: 12 ms"


def test_a_completed_source_migration():
    x = {"cache-size": 1 << 28, "bytes": 116 << 10, "pages": 7705, "cache-miss": 4071,
         "cache-miss-rate": 0.04, "encoding-rate": 227.56, "overflow": 0}
    text = format_info_migrate({"status": "completed", "total-time": 4264, "downtime": 15,
                                "setup-time": 3, "ram": RAM, "xbzrle-cache": x})
    lines = text.splitlines()
    assert lines[:7] == GLOBALS.splitlines()
    assert lines[7:12] == ["Migration status: completed", "total time: 4264 ms",
                           "downtime: 15 ms", "setup: 3 ms", "transferred ram: 34023 kbytes"]
    assert "throughput: 65.83 mbps" in lines and "pages-per-second: 2008" in lines
    assert "dirty pages rate: 2048 pages" in lines
    assert lines[-7:] == ["cache size: 268435456 bytes", "xbzrle transferred: 116 kbytes",
                          "xbzrle pages: 7705 pages", "xbzrle cache miss: 4071 pages",
                          "xbzrle cache miss rate: 0.04", "xbzrle encoding rate: 227.56",
                          "xbzrle overflow: 0"]


def test_a_destination_shows_its_own_fields():
    waiting = {"status": "setup", "total-time": 0,
               "socket-address": [{"type": "inet", "host": "127.0.0.1", "port": "4444"}]}
    assert format_info_migrate(waiting, incoming=True).splitlines()[7:] == [
        "Migration status: setup", "total time: 0 ms", "socket address: [",
        "\ttcp:127.0.0.1:4444", "]"]
    done = {"status": "completed", "total-time": 900, "downtime": 0, "setup-time": 0,
            "ram": RAM}
    lines = format_info_migrate(done, incoming=True).splitlines()[7:]
    assert lines == ["Migration status: completed", "total time: 900 ms",
                     "received ram: 34023 kbytes", "total ram: 524288 kbytes",
                     "duplicate: 127001 pages", "normal: 8168 pages"]
    assert not any("remaining" in ln or "throughput" in ln or "downtime" in ln for ln in lines)


def test_the_demo_adds_the_capabilities_line():
    caps = [{"capability": "xbzrle", "state": True}, {"capability": "events", "state": False}]
    text = format_info_migrate({"status": "cancelled", "total-time": 5, "ram": RAM}, caps)
    assert text.splitlines()[7:9] == ["capabilities: xbzrle: on events: off",
                                      "Migration status: cancelled"]


def test_our_xbzrle_counters_follow_qemus_lines_when_present():
    x = {"cache-size": 1 << 26, "bytes": 3 << 10, "pages": 12, "cache-miss": 1,
         "cache-miss-rate": 0.5, "encoding-rate": 3.5, "overflow": 2, "skipped-overflow": 5,
         "x-encode-time": 41}
    lines = format_info_migrate({"status": "completed", "total-time": 10, "downtime": 1,
                                 "setup-time": 0, "ram": RAM, "xbzrle-cache": x}).splitlines()
    assert lines[-3:] == ["xbzrle overflow: 2", "xbzrle skipped overflow: 5",
                          "xbzrle encode time: 41 us"]
