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

from .sender import find_directories
from .state import PROCESSED_NAME, write_atomic
from .stats import RunStats

log = logging.getLogger(__name__)

PREFIX = "tstat_send_"
_LAST_SUCCESS_RE = re.compile(
    rf"^{PREFIX}last_success_timestamp_seconds(?:{{[^}}]*}})? (\S+)$", re.MULTILINE
)


@dataclass(frozen=True)
class Backlog:
    """Complete directories not yet delivered, and how old the oldest is."""

    directories: int
    oldest_age_seconds: float


def directory_time(name: str) -> float | None:
    """Unix time of a Tstat directory name (Tstat names it in local time)."""
    try:
        return time.mktime(time.strptime(name[:16], "%Y_%m_%d_%H_%M"))
    except ValueError:
        return None


def measure_backlog(root: Path, include_newest: bool, now: float | None = None) -> Backlog:
    now = time.time() if now is None else now
    directories = find_directories(root)
    if directories and not include_newest:
        directories = directories[:-1]  # still being written: not backlog yet
    waiting = [d for d in directories if not (d / PROCESSED_NAME).exists()]
    oldest = directory_time(waiting[0].name) if waiting else None
    age = max(0.0, now - oldest) if oldest is not None else 0.0
    return Backlog(len(waiting), age)


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


def write_metrics(path: Path, stats: RunStats, exit_code: int, root: Path,
                  include_newest: bool, sensor: str) -> None:  # fmt: skip
    """Write the metrics file; raises StateError if it cannot be written."""
    last_success = stats.finished if exit_code == 0 else previous_last_success(path)
    backlog = measure_backlog(root, include_newest)
    text = render(stats, exit_code, backlog, {"root": str(root), "sensor": sensor}, last_success)
    write_atomic(path, text.encode(), durable=False)
