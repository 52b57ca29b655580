"""Run metrics in Prometheus text format, for node_exporter's textfile collector.

Written atomically at the end of each run (the collector may read at any moment).
The last success time is carried over from the previous file, so a failing sensor
shows how long it has been failing.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .directories import Status, scan
from .state import write_atomic
from .stats import RunStats

log = logging.getLogger(__name__)

PREFIX = "tstat_send_"
_LAST_SUCCESS_RE = re.compile(
    rf"^{PREFIX}last_success_timestamp_seconds(?:{{[^}}]*}})? (\S+)$", re.MULTILINE
)
# The file tstat_send writes holds about 3 KB; a bigger one at PATH is not ours.
MAX_PREVIOUS_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Backlog:
    """What the root holds: Tstat directories seen and ignored, and the complete ones
    not yet delivered with the age of the oldest."""

    directories: int
    oldest_age_seconds: float
    seen: int = 0
    ignored: int = 0


def measure_backlog(settings: Settings, now: float | None = None) -> Backlog:
    now = time.time() if now is None else now
    found = scan(settings.directory, settings.settle_seconds, settings.include_newest, now)
    # Due (and unreadable: due, but failing) directories are backlog; those Tstat may
    # still write are not yet.
    behind = found.having(Status.DUE, Status.UNREADABLE)
    times = [d.started for d in behind if d.started is not None]
    age = max(0.0, now - min(times)) if times else 0.0
    return Backlog(len(behind), age, found.seen, len(found.having(Status.IGNORED)))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(
    stats: RunStats,
    exit_code: int,
    backlog: Backlog,
    labels: dict[str, str],
    last_success: float | None,
) -> str:
    label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    lines: list[str] = []
    gauges = [*_run_gauges(stats, exit_code, last_success), *_backlog_gauges(backlog)]
    for name, help_text, value in gauges:
        lines.append(f"# HELP {PREFIX}{name} {help_text}")
        lines.append(f"# TYPE {PREFIX}{name} gauge")
        lines.append(f"{PREFIX}{name}{{{label_text}}} {value:.17g}")
    return "\n".join(lines) + "\n"


_Gauge = tuple[str, str, float]


def _run_gauges(stats: RunStats, exit_code: int, last_success: float | None) -> list[_Gauge]:
    """What the last run did: when it ended, how, and what it read and sent."""
    finished = stats.finished or time.time()
    gauges: list[_Gauge] = [("last_run_timestamp_seconds", "When the last run ended.", finished)]
    if last_success is not None:
        gauges.append(
            (
                "last_success_timestamp_seconds",
                "When the last run that exited 0 ended.",
                last_success,
            )
        )
    return gauges + [
        (
            "exit_status",
            "Exit code of the last run (0 ok, 1 failed, 2 usage, 75 temporary).",
            exit_code,
        ),
        ("run_duration_seconds", "How long the last run took.", finished - stats.started),
        (
            "last_run_directories_done",
            "Directories delivered and marked by the last run.",
            stats.dirs_done,
        ),
        (
            "last_run_directories_failed",
            "Directories the last run could not deliver.",
            stats.dirs_failed,
        ),
        ("last_run_rows", "Log rows read by the last run.", stats.rows),
        ("last_run_bad_rows", "Rows the last run skipped as malformed.", stats.bad_rows),
        ("last_run_objects", "Flow objects the last run sent.", stats.objects),
        ("last_run_messages", "Messages the last run sent.", stats.messages),
        ("last_run_bytes", "Message bytes the last run sent.", stats.bytes),
    ]


def _backlog_gauges(backlog: Backlog) -> list[_Gauge]:
    """What is still to send under the root."""
    return [
        (
            "backlog_directories",
            "Complete Tstat directories not yet delivered.",
            backlog.directories,
        ),
        (
            "backlog_oldest_age_seconds",
            "Age of the oldest complete directory not yet delivered (0 if none).",
            backlog.oldest_age_seconds,
        ),
        (
            "directories_seen",
            "Tstat directories under the root (0: the root holds no Tstat output).",
            backlog.seen,
        ),
        (
            "directories_ignored",
            "Directories named with an impossible or future date, left alone.",
            backlog.ignored,
        ),
    ]


def _read_previous(path: Path) -> str | None:
    """The text of the previous metrics file, or None when there is none to trust.

    Only a regular file of at most MAX_PREVIOUS_BYTES is read, without following a
    symlink or waiting on a FIFO: whatever sits at PATH must neither hang the run nor
    fill its memory (a link to /dev/zero), and a metrics problem never fails a run.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno != errno.ELOOP:  # a symlink: writing the file says so, once
            log.warning("%s: previous metrics not read (%s)", path, exc.strerror or exc)
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                log.warning("%s: previous metrics not read: not a regular file", path)
                return None
            data = f.read(MAX_PREVIOUS_BYTES + 1)
        except OSError as exc:
            log.warning("%s: previous metrics not read (%s)", path, exc.strerror or exc)
            return None
    if len(data) > MAX_PREVIOUS_BYTES:
        log.warning(
            "%s: previous metrics not read: over %d bytes, not a file tstat_send wrote",
            path,
            MAX_PREVIOUS_BYTES,
        )
        return None
    # The line looked for is ASCII; bytes another program left around it do not matter.
    return data.decode("ascii", errors="replace")


def previous_last_success(path: Path) -> float | None:
    """The last success time the previous metrics file holds, or None."""
    text = _read_previous(path)
    match = _LAST_SUCCESS_RE.search(text) if text is not None else None
    try:
        value = float(match.group(1)) if match else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def write_metrics(path: Path, stats: RunStats, exit_code: int, settings: Settings) -> None:
    """Write the metrics file; raises StateError if it cannot be written, TstatError
    if the root cannot be listed."""
    last_success = stats.finished if exit_code == 0 else previous_last_success(path)
    backlog = measure_backlog(settings)
    labels = {"root": str(settings.directory), "sensor": settings.sensor}
    text = render(stats, exit_code, backlog, labels, last_success)
    write_atomic(path, text.encode(), durable=False)
