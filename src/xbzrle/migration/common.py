"""What a running migration of either direction offers its callers."""

from __future__ import annotations

import threading

from .stats import MigrationStats
from .status import MigrationStatus


class MigrationThread:
    """A migration run by one thread: wait for it, query it (``query-migrate``)."""

    thread: threading.Thread
    status: MigrationStatus
    error: str | None
    stats: MigrationStats
    _lock: threading.Lock

    def wait(self, timeout: float | None = None) -> MigrationStatus:
        self.thread.join(timeout)
        return self.status

    def query(self) -> dict[str, object]:
        with self._lock:
            info = self.stats.to_qmp(str(self.status))
        if self.error is not None:
            info["error-desc"] = self.error
        return info
