"""Choose and delete expired processed Tstat directories (the library under tstat_cull).

A candidate is a real directory directly under the Tstat root, named as Tstat names
its rotated directories, holding a regular `.processed` file whose mtime is at least
the TTL in the past (a marker dated in the future never is). Nothing else is ever
removed: not the root, not a directory reached through a symlink, not a name Tstat
would not write. The rules and the output are described in doc/cull.md.

A doomed directory is first renamed to `.culling-<name>` inside the root, then
removed: a half-deleted directory never looks like unprocessed data to tstat_send,
and the next run finishes any `.culling-*` an earlier run left behind.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import directories
from .directories import CULLING_PREFIX, Status
from .errors import ConfigError
from .state import PROCESSED_NAME, run_lock

log = logging.getLogger(__name__)

DEFAULT_TTL_HOURS = 48.0


@dataclass(frozen=True)
class Candidate:
    """A directory a run plans to remove.

    `age` is the marker's age in seconds when the run decided; None for a
    `.culling-*` leftover, whose marker may already be gone.
    """

    path: Path
    size: int
    age: float | None = None

    @property
    def leftover(self) -> bool:
        return self.age is None


@dataclass
class CullReport:
    """What a run planned and what came of it."""

    dry_run: bool
    planned: list[Candidate] = field(default_factory=list)
    removed: int = 0
    bytes_freed: int = 0
    kept_on_recheck: list[Path] = field(default_factory=list)
    failed: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when everything planned is gone (or was rightly kept on recheck)."""
        return not self.failed


def is_expired(marker_mtime: float, now: float, ttl_seconds: float) -> bool:
    """True if a marker written at `marker_mtime` is at least `ttl_seconds` old at `now`."""
    age = now - marker_mtime
    # A marker from the future (clock stepped back, copied files) is never expired.
    return age >= 0 and age >= ttl_seconds


def marker_mtime(directory: Path) -> float | None:
    """The mtime of `directory`'s `.processed`, or None unless it is a regular file."""
    marker = directory / PROCESSED_NAME
    try:
        st = os.lstat(marker)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        log.warning("%s: cannot read marker (%s); directory kept", marker, exc.strerror)
        return None
    if not stat.S_ISREG(st.st_mode):
        log.warning("%s: not a regular file; directory kept", marker)
        return None
    return st.st_mtime


def tree_size(path: Path) -> int:
    """Apparent size in bytes of `path` and everything below it, never following a symlink."""
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total = 0
    pending = [os.fspath(path)]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def scan(
    root: Path, ttl_seconds: float, now: float, keep_min: int = 0
) -> tuple[list[Candidate], list[Candidate]]:
    """Find `.culling-*` leftovers and expired processed directories under `root`.

    Which directories exist is directories.scan's answer, the one tstat_send walks.
    Returns (leftovers, expired); expired is oldest marker first, and leaves at
    least `keep_min` processed directories (expired or not) in place.
    Raises NoTstatDirectories if there is no Tstat directory under `root`, TstatError
    if `root` cannot be listed.
    """
    found = directories.scan(root, now=now)
    directories.require_tstat_output(found)
    for link in found.symlinks:
        # Its target may be anywhere, even outside the root: only real directories go.
        log.info("%s: a symlink, not culled", link)
    leftovers = [Candidate(path, tree_size(path)) for path in found.leftovers]
    processed: list[tuple[float, Path]] = []
    # An unreadable directory or a strange marker is looked at too, to say why it stays.
    for record in found.having(Status.PROCESSED, Status.UNREADABLE):
        mtime = marker_mtime(record.path)
        if mtime is not None:
            processed.append((mtime, record.path))
    processed.sort()
    removable = max(0, len(processed) - keep_min)
    expired: list[Candidate] = []
    for mtime, path in processed:
        if not is_expired(mtime, now, ttl_seconds):
            continue
        if len(expired) == removable:
            log.info("%s: expired, kept by --keep-min %d", path, keep_min)
            continue
        expired.append(Candidate(path, tree_size(path), now - mtime))
    return leftovers, expired


def remove_entry(path: Path) -> list[str]:
    """Delete `path`: a symlink as a link, a directory without following any link in it.

    Returns one line per thing that could not be deleted (empty when all went).
    """
    errors: list[str] = []
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return errors
    except OSError as exc:
        return [f"{path}: {exc.strerror}"]
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(path)
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror}")
        return errors

    def record(failed_path: str, exc: BaseException) -> None:
        errors.append(f"{failed_path}: {getattr(exc, 'strerror', None) or exc}")

    # rmtree keeps going after an error and, on Linux, works through directory
    # file descriptors, so a symlink inside is unlinked, never followed.
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=lambda _func, p, exc: record(p, exc))
    else:
        shutil.rmtree(path, onerror=lambda _func, p, info: record(p, info[1]))
    return errors


def describe(candidate: Candidate) -> str:
    """Why and how much: `marker 50.0 h old, 189624 bytes`."""
    if candidate.age is None:  # a leftover of an earlier run
        return f"left by an earlier run, {candidate.size} bytes"
    return f"marker {candidate.age / 3600:.1f} h old, {candidate.size} bytes"


def _finish(candidate: Candidate, hidden: Path, report: CullReport) -> None:
    """Delete `hidden` (the candidate, already renamed) and account for it in `report`."""
    errors = remove_entry(hidden)
    if not errors:
        report.removed += 1
        report.bytes_freed += candidate.size
        done = "finished removing" if candidate.leftover else "removed"
        log.info("%s %s (%s)", done, candidate.path, describe(candidate))
        return
    left = tree_size(hidden)
    report.bytes_freed += max(0, candidate.size - left)
    report.failed.append(hidden)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    log.error(
        "cannot remove %s completely: %s%s; %d bytes are left there, the next run retries",
        hidden,
        errors[0],
        more,
        left,
    )


def remove_expired(
    root: Path, candidate: Candidate, ttl_seconds: float, now: float, report: CullReport
) -> None:
    """Recheck one expired directory, hide it as `.culling-<name>`, then delete it.

    The recheck makes sure a marker rewritten, removed or replaced by a symlink
    since the scan, or a directory swapped for a symlink, keeps its directory.
    """
    path = candidate.path
    try:
        st = os.lstat(path)
    except OSError:
        st = None
    mtime = marker_mtime(path) if st is not None and stat.S_ISDIR(st.st_mode) else None
    if mtime is None or not is_expired(mtime, now, ttl_seconds):
        log.info("%s: changed since the scan, kept", path)
        report.kept_on_recheck.append(path)
        return
    hidden = path.parent / (CULLING_PREFIX + path.name)
    try:
        os.rename(path, hidden)
    except OSError as exc:
        log.error("cannot remove %s: renaming it to %s failed: %s", path, hidden, exc.strerror)
        report.failed.append(path)
        return
    _finish(candidate, hidden, report)


def cull(
    root: Path,
    ttl_hours: float = DEFAULT_TTL_HOURS,
    dry_run: bool = False,
    keep_min: int = 0,
    now: float | None = None,
) -> CullReport:
    """Remove the expired processed Tstat directories under `root` (or, dry, list them).

    A real run holds the lock tstat_send takes; a dry run reads only, without it.
    Raises ConfigError for a bad root or TTL, AlreadyRunning if tstat_send or
    another cull holds the lock, NoTstatDirectories if there is nothing Tstat-like
    under the root, TstatError if the root cannot be listed.
    """
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        what = "not a directory" if root.exists() else "no such directory"
        raise ConfigError(f"{root}: {what} (give the Tstat output root with -d)")
    if not (math.isfinite(ttl_hours) and ttl_hours >= 0):
        raise ConfigError(f"TTL must be a number of hours >= 0, got {ttl_hours!r}")
    if keep_min < 0:
        raise ConfigError(f"--keep-min must be >= 0, got {keep_min}")
    ttl_seconds = ttl_hours * 3600
    report = CullReport(dry_run=dry_run)
    if dry_run:
        leftovers, expired = scan(root, ttl_seconds, time.time() if now is None else now, keep_min)
        report.planned = leftovers + expired
        return report
    # Before the lock: a root with no Tstat output (a typo, `-d /`) gets no lock file.
    directories.require_tstat_output(directories.scan(root))
    with run_lock(root):
        now = time.time() if now is None else now
        leftovers, expired = scan(root, ttl_seconds, now, keep_min)
        report.planned = leftovers + expired
        # Leftovers first: they hold the `.culling-<name>` a new removal may need.
        for leftover in leftovers:
            _finish(leftover, leftover.path, report)
        for candidate in expired:
            remove_expired(root, candidate, ttl_seconds, now, report)
    return report
