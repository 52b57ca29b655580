"""Run metrics in Prometheus text format, for node_exporter's textfile collector.

Written atomically at the end of each run (the collector may read at any moment).
The last success time is carried over from the previous file, so a failing sensor
shows how long it has been failing.
"""

from __future__ import annotations

import logging
import re
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


def render(stats: RunStats, exit_code: int, backlog: Backlog, labels: dict[str, str],
           last_success: float | None) -> str:  # fmt: skip
    label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, value: float) -> None:
        lines.append(f"# HELP {PREFIX}{name} {help_text}")
        lines.append(f"# TYPE {PREFIX}{name} {kind}")
        lines.append(f"{PREFIX}{name}{{{label_text}}} {value:.17g}")

    finished = stats.finished or time.time()
    metric("last_run_timestamp_seconds", "gauge", "When the last run ended.", finished)
    if last_success is not None:
        metric("last_success_timestamp_seconds", "gauge",
               "When the last run that exited 0 ended.", last_success)  # fmt: skip
    metric("exit_status", "gauge", "Exit code of the last run (0 ok, 1 failed, 2 usage, "
           "75 temporary).", exit_code)  # fmt: skip
    metric("run_duration_seconds", "gauge", "How long the last run took.",
           finished - stats.started)  # fmt: skip
    counters = (
        ("directories_done", stats.dirs_done, "Directories delivered and marked by the last run."),
        ("directories_failed", stats.dirs_failed, "Directories the last run could not deliver."),
        ("rows", stats.rows, "Log rows read by the last run."),
        ("bad_rows", stats.bad_rows, "Rows the last run skipped as malformed."),
        ("objects", stats.objects, "Flow objects the last run sent."),
        ("messages", stats.messages, "Messages the last run sent."),
        ("bytes", stats.bytes, "Message bytes the last run sent."),
    )
    for name, value, help_text in counters:
        metric(f"last_run_{name}", "gauge", help_text, value)
    metric("backlog_directories", "gauge",
           "Complete Tstat directories not yet delivered.", backlog.directories)  # fmt: skip
    metric("backlog_oldest_age_seconds", "gauge",
           "Age of the oldest complete directory not yet delivered (0 if none).",
           backlog.oldest_age_seconds)  # fmt: skip
    metric(
        "directories_seen",
        "gauge",
        "Tstat directories under the root (0: the root holds no Tstat output).",
        backlog.seen,
    )
    metric(
        "directories_ignored",
        "gauge",
        "Directories named with an impossible or future date, left alone.",
        backlog.ignored,
    )
    return "\n".join(lines) + "\n"


def previous_last_success(path: Path) -> float | None:
    try:
        match = _LAST_SUCCESS_RE.search(path.read_text())
    except OSError:
        return None
    try:
        return float(match.group(1)) if match else None
    except ValueError:
        return None


def write_metrics(path: Path, stats: RunStats, exit_code: int, settings: Settings) -> None:
    """Write the metrics file; raises StateError if it cannot be written, TstatError
    if the root cannot be listed."""
    last_success = stats.finished if exit_code == 0 else previous_last_success(path)
    backlog = measure_backlog(settings)
    labels = {"root": str(settings.directory), "sensor": settings.sensor}
    text = render(stats, exit_code, backlog, labels, last_success)
    write_atomic(path, text.encode(), durable=False)
