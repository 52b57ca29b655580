"""A progress line on a terminal, for a backfill run by hand (never under cron)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TextIO

from .sender import find_directories
from .stats import RunStats
from .state import PROCESSED_NAME


def _due_bytes(root: Path) -> tuple[int, int]:
    """Directories not yet processed and the size of their logs (for the ETA)."""
    count = size = 0
    for directory in find_directories(root):
        if (directory / PROCESSED_NAME).exists():
            continue
        count += 1
        for name in ("log_tcp_complete", "log_udp_complete"):
            try:
                size += (directory / name).stat().st_size
            except OSError:
                pass
    return count, size


class ProgressLine:
    """Redraws one line on `stream` at most twice a second: directories, rows/s, ETA."""

    interval = 0.5

    def __init__(self, root: Path, stream: TextIO):
        self.stream = stream
        self.started = time.monotonic()
        self.last = 0.0
        self.dirs_total, self.bytes_total = _due_bytes(root)
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
        line = (f"{directory} ({done}/{self.dirs_total}) rows={rows} "
                f"{rate:,.0f} rows/s messages={stats.messages}{eta}")  # fmt: skip
        self.stream.write("\r" + line[:150].ljust(80))
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
