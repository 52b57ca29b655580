"""The counters of one tstat_send run, for the summary line and the metrics file."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class RunStats:
    """The counters of one run (summary line, metrics file)."""

    dirs_done: int = 0
    dirs_failed: int = 0
    dirs_skipped: int = 0  # already .processed
    dirs_waiting: int = 0  # newest, or not finished by Tstat: left for a later run
    dirs_ignored: int = 0  # named with an impossible or future date: reported, left alone
    rows: int = 0
    bad_rows: int = 0
    objects: int = 0
    messages: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.time)
    finished: float = 0.0

    def summary(self) -> str:
        seconds = (self.finished or time.time()) - self.started
        return (
            f"dirs_done={self.dirs_done} dirs_failed={self.dirs_failed} "
            f"dirs_skipped={self.dirs_skipped} dirs_waiting={self.dirs_waiting} "
            f"dirs_ignored={self.dirs_ignored} "
            f"rows={self.rows} bad_rows={self.bad_rows} objects={self.objects} "
            f"messages={self.messages} bytes={self.bytes} seconds={seconds:.1f}"
        )
