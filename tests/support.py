"""Waiting on conditions instead of sleeping and hoping (shared by all tests)."""

from __future__ import annotations

import time


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.02,
               message: str = "condition not met in time"):
    """Poll ``predicate`` until it returns something true; return that value.

    The timeout only bounds a hang: a loaded machine makes the wait longer,
    never the test wrong.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(message)
        time.sleep(interval)


def progresses(guest, timeout: float = 30.0) -> bool:
    """True once the running guest's workload writes another page (False if it stops)."""
    before = guest.pages_written
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not guest.running:
            return False
        if guest.pages_written > before:
            return True
        time.sleep(0.01)
    return False
