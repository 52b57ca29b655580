"""A progress line on a terminal, for a backfill run by hand (never under cron)."""

from __future__ import annotations

import time
from typing import TextIO

from .config import Settings
from .directories import Scan, Status, scan
from .reader import locate_log
from .records import LogFormatError
from .sender import LOGS
from .stats import RunStats


def _due_bytes(found: Scan) -> tuple[int, int]:
    """Directories this run will send and the size of their logs (for the ETA)."""
    due = found.having(Status.DUE)
    size = 0
    for directory in due:
        for name, _ in LOGS:
            try:
                located = locate_log(directory.path, name)
            except (OSError, LogFormatError):
                continue
            if located is not None:
                size += located[1] or 0  # a .gz counts uncompressed bytes: not known up front
    return len(due), size


class ProgressLine:
    """Redraws one line on `stream` at most twice a second: directories, rows/s, ETA."""

    interval = 0.5

    def __init__(self, settings: Settings, stream: TextIO):
        self.stream = stream
        self.started = time.monotonic()
        self.last = 0.0
        found = scan(settings.directory, settings.settle_seconds, settings.include_newest)
        self.dirs_total, self.bytes_total = _due_bytes(found)
        self.drawn = False

    def __call__(self, stats: RunStats, directory: str, rows: int, log_bytes: int) -> None:
        """Called after each message: `rows` and `log_bytes` read so far in this run."""
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        rate = rows / elapsed
        eta = ""
        if log_bytes and self.bytes_total > log_bytes:
            left = (self.bytes_total - log_bytes) * elapsed / log_bytes
            eta = f" ETA {int(left // 60):d}:{int(left % 60):02d}"
        done = stats.dirs_done + stats.dirs_failed + 1
        line = (
            f"{directory} ({done}/{self.dirs_total}) rows={rows} "
            f"{rate:,.0f} rows/s messages={stats.messages}{eta}"
        )
        self.stream.write("\r" + line[:150].ljust(80))
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
