"""What Tab offers at each position of an HMP line (pure logic)."""

from xbzrle.monitor.completion import Vocabulary, complete

WORDS = Vocabulary(
    commands=["help", "info", "migrate", "migrate_cancel", "migrate_incoming",
              "migrate_set_capability", "migrate_set_parameter", "quit"],
    info=["migrate", "migrate_capabilities", "migrate_parameters", "status", "version"],
    capabilities=["xbzrle", "events"],
    parameters=["xbzrle-cache-size", "max-bandwidth", "downtime-limit"])


def test_commands_then_their_arguments():
    assert complete("mig", WORDS) == ["migrate", "migrate_cancel", "migrate_incoming",
                                      "migrate_set_capability", "migrate_set_parameter"]
    assert complete("info mig", WORDS) == ["migrate", "migrate_capabilities",
                                           "migrate_parameters"]
    assert complete("info ", WORDS) == WORDS.info
    assert complete("migrate_set_capability x", WORDS) == ["xbzrle"]
    assert complete("migrate_set_capability xbzrle o", WORDS) == ["off", "on"]
    assert complete("migrate_set_parameter m", WORDS) == ["max-bandwidth"]
    assert complete("help migrate_set_c", WORDS) == ["migrate_set_capability"]
    assert complete("migrate -", WORDS) == ["-d"]


def test_nothing_where_nothing_is_known():
    assert complete("quit now", WORDS) == []
    assert complete("migrate_set_capability xbzrle on x", WORDS) == []
    assert complete("frob", WORDS) == []
