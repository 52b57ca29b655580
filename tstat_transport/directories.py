"""Which Tstat directories exist under a root, which are due, which wait, and why.

The one place that decides it: tstat_send walks what `scan` returns, and the progress
line, the metrics and tstat_cull count from the same records.

The rules (doc/delivery.md states them for operators):

- The tree under ROOT is walked as 0.6.5 did with os.walk, but never through a symlink
  and at most MAX_DEPTH folders down. A folder is any directory holding Tstat's rotated
  directories (`YYYY_MM_DD_HH_MM.out`); each is one Tstat instance with its own newest
  directory. Hidden entries and the inside of the `.out` directories are not walked.
- Only real dates count. A name shaped like Tstat's that is not a date
  (`2026_13_45_99_99.out`), or that lies more than FUTURE_TOLERANCE in the future, is
  IGNORED: reported, never sent, never marked, and it does not make another directory
  look complete.
- A directory is complete only when a newer valid directory exists in the same folder
  (Tstat has rotated away from it) *and* none of its `log_*` files changed for the
  settle period. Otherwise it WAITS (with --include-newest it is sent, but a log that
  ends in a cut row keeps it unmarked).
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .config import DEFAULT_SETTLE_SECONDS
from .errors import ConfigError, TstatError
from .state import PROCESSED_NAME

log = logging.getLogger(__name__)

# Tstat names each rotated directory after the packet time that opened it (local time).
TSTAT_NAME_RE = re.compile(r"^(\d{4})_(\d{2})_(\d{2})_(\d{2})_(\d{2})\.out$")
CULLING_PREFIX = ".culling-"  # tstat_cull's name for a directory it is deleting
LOG_PREFIX = "log_"

# Tstat names a directory after the time of a packet it has just seen, so on a live
# sensor no name lies ahead of the clock; the tolerance only absorbs a small step.
FUTURE_TOLERANCE_SECONDS = 600.0
# Folders this deep below ROOT are still looked into (ROOT/<host>/<instance>/*.out is
# 2); the bound keeps a root given one level too high from walking a whole disk.
MAX_DEPTH = 3


class Status(enum.Enum):
    PROCESSED = "processed"  # delivered: .processed is there
    DUE = "due"  # to be sent by this run
    WAITING = "waiting"  # Tstat may still write it: left for a later run
    IGNORED = "ignored"  # not a real date, or in the future: reported, left alone
    UNREADABLE = "unreadable"  # cannot be looked into, or a strange marker: fails, reported


@dataclass(frozen=True)
class TstatDirectory:
    """One directory shaped like Tstat's, and what a run should do with it.

    `name` is its path relative to ROOT (`2026_11_24_19_18.out` or
    `eth1/2026_11_24_19_18.out`): what message ids and log lines carry. `complete` is
    True when Tstat is done with it; a DUE directory that is not complete is sent
    because of --include-newest, and a log of it that ends in a cut row keeps it unmarked.
    `reason` says why it is not simply due; for UNREADABLE it is the whole error line.
    """

    path: Path
    name: str
    status: Status
    reason: str = ""
    complete: bool = False
    started: float | None = None  # Unix time of its name


@dataclass
class Scan:
    """The Tstat directories under a root, folder by folder, each oldest first."""

    root: Path
    directories: list[TstatDirectory] = field(default_factory=list)
    leftovers: list[Path] = field(default_factory=list)  # `.culling-<name>` of tstat_cull
    symlinks: list[Path] = field(default_factory=list)  # Tstat names that are symlinks: passed over

    def having(self, *statuses: Status) -> list[TstatDirectory]:
        return [d for d in self.directories if d.status in statuses]

    @property
    def seen(self) -> int:
        """Directories with a Tstat name, valid or not (0: the root holds no Tstat output)."""
        return len(self.directories)


_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def name_time(name: str) -> float | None:
    """Unix time of a Tstat directory name (Tstat names it in local time); None if not a date.

    The date is checked here rather than by time.strptime, whose module (locale, calendar,
    a dozen regexes) would be most of the memory a run adds to the interpreter's.
    """
    match = TSTAT_NAME_RE.match(name)
    if match is None:
        return None
    year, month, day, hour, minute = map(int, match.groups())
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not (
        year >= 1
        and 1 <= month <= 12
        and 1 <= day <= _MONTH_DAYS[month - 1] + (month == 2 and leap)
        and hour <= 23
        and minute <= 59
    ):
        return None
    try:
        return time.mktime((year, month, day, hour, minute, 0, 0, 0, -1))
    except (ValueError, OverflowError):
        return None


def is_tstat_name(name: str) -> bool:
    """True for names shaped like Tstat's rotated directories (the date is not checked)."""
    return TSTAT_NAME_RE.match(name) is not None


@dataclass
class _Folder:
    """One folder of the walk: its Tstat-named subdirectories and what was passed over."""

    path: Path
    tstat: list[os.DirEntry] = field(default_factory=list)
    leftovers: list[Path] = field(default_factory=list)
    symlinks: list[Path] = field(default_factory=list)


def _folders(root: Path) -> Iterator[_Folder]:
    """Each folder under `root`, itself first, then depth first in name order.

    Symlinks are never followed, so the walk stays inside the root and cannot loop;
    it stays on the root's file system (as `find -xdev`), so `-d /` does not wander
    into /proc. Raises TstatError if `root` itself cannot be listed.
    """
    try:
        device = os.stat(root).st_dev
    except OSError as exc:
        raise TstatError(f"cannot list {root}: {exc.strerror}") from exc
    pending: list[tuple[Path, int]] = [(root, 0)]
    while pending:
        path, depth = pending.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if path == root:
                raise TstatError(f"cannot list {root}: {exc.strerror}") from exc
            log.warning(
                "%s: cannot list (%s); Tstat directories below it are not seen", path, exc.strerror
            )
            continue
        folder = _Folder(path)
        below: list[Path] = []
        for entry in entries:
            name = entry.name
            if name.startswith(CULLING_PREFIX) and is_tstat_name(name[len(CULLING_PREFIX) :]):
                folder.leftovers.append(Path(entry.path))  # whatever it is: cull removes it
            elif entry.is_symlink():
                if is_tstat_name(name):
                    folder.symlinks.append(Path(entry.path))
            elif not entry.is_dir(follow_symlinks=False) or name.startswith("."):
                continue
            elif is_tstat_name(name):
                folder.tstat.append(entry)
            elif depth < MAX_DEPTH and _same_device(entry, device):
                below.append(Path(entry.path))
        yield folder
        pending.extend((p, depth + 1) for p in reversed(below))


def _same_device(entry: os.DirEntry, device: int) -> bool:
    try:
        return entry.stat(follow_symlinks=False).st_dev == device
    except OSError:
        return False


def _last_log_change(path: Path) -> float:
    """The latest mtime of the `log_*` entries of a directory (0 if it has none).

    Raises OSError if the directory cannot be listed or an entry examined.
    """
    latest = 0.0
    with os.scandir(path) as it:
        for entry in it:
            if entry.name.startswith(LOG_PREFIX):
                latest = max(latest, entry.stat(follow_symlinks=False).st_mtime)
    return latest


class _StrangeMarker(Exception):
    """A `.processed` that is not a regular file: not one tstat_send wrote."""


def _has_marker(path: Path) -> bool:
    """True if `.processed` is there (a regular file, as tstat_send writes it).

    Raises _StrangeMarker for anything else by that name (a planted symlink must
    neither silence the directory for good nor be written through), OSError when the
    directory cannot be searched.
    """
    try:
        st = os.lstat(path / PROCESSED_NAME)
    except FileNotFoundError:
        return False
    if stat.S_ISREG(st.st_mode):
        return True
    what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
    raise _StrangeMarker(f"it is {what}, not a marker tstat_send wrote")


def _ago(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _judge(
    path: Path,
    name: str,
    started: float,
    newest: bool,
    settle: float,
    include_newest: bool,
    now: float,
) -> TstatDirectory:
    """The status of one validly named directory of a folder."""
    try:
        if _has_marker(path):
            return TstatDirectory(path, name, Status.PROCESSED, started=started)
        changed = _last_log_change(path)
    except _StrangeMarker as exc:
        reason = f"{path / PROCESSED_NAME}: {exc}: the directory is not sent; remove it"
        return TstatDirectory(path, name, Status.UNREADABLE, reason, started=started)
    except OSError as exc:
        reason = f"{path}: cannot read the directory: {exc.strerror or exc}"
        if exc.errno in (errno.EACCES, errno.EPERM):
            reason += " (run as the user Tstat writes as, or fix the permissions)"
        return TstatDirectory(path, name, Status.UNREADABLE, reason, started=started)
    if changed > now + FUTURE_TOLERANCE_SECONDS:
        return TstatDirectory(
            path,
            name,
            Status.IGNORED,
            f"its logs are dated {_ago(changed - now)} in the future (clock stepped back?); "
            "left alone until then",
            started=started,
        )
    if newest:
        reason = "newest directory, Tstat may still be writing it (--include-newest to send it now)"
    elif now - changed < settle:
        reason = (
            f"its logs changed {_ago(now - changed)} ago, Tstat may still be writing "
            f"it (settle period {settle:g} s)"
        )
    else:
        return TstatDirectory(path, name, Status.DUE, complete=True, started=started)
    if include_newest:
        return TstatDirectory(path, name, Status.DUE, reason, complete=False, started=started)
    return TstatDirectory(path, name, Status.WAITING, reason, started=started)


def _scan_folder(
    root: Path, entries: list[os.DirEntry], settle: float, include_newest: bool, now: float
) -> list[TstatDirectory]:
    """The status of each Tstat directory of one folder (one Tstat instance)."""
    valid: list[tuple[float, str, Path]] = []
    found: list[TstatDirectory] = []
    for entry in entries:
        path = Path(entry.path)
        name = path.relative_to(root).as_posix()
        started = name_time(entry.name)
        if started is None:
            found.append(TstatDirectory(path, name, Status.IGNORED, "its name is not a valid date"))
        elif started > now + FUTURE_TOLERANCE_SECONDS:
            found.append(
                TstatDirectory(
                    path,
                    name,
                    Status.IGNORED,
                    f"its name lies {_ago(started - now)} in the future (clock stepped back?); "
                    "left alone until then",
                    started=started,
                )
            )
        else:
            valid.append((started, entry.name, path))
    valid.sort()
    for i, (started, _, path) in enumerate(valid):
        name = path.relative_to(root).as_posix()
        newest = i == len(valid) - 1
        found.append(_judge(path, name, started, newest, settle, include_newest, now))
    return sorted(found, key=lambda d: (d.started is None, d.started or 0.0, d.name))


def scan(
    root: Path,
    settle: float = DEFAULT_SETTLE_SECONDS,
    include_newest: bool = False,
    now: float | None = None,
) -> Scan:
    """Every Tstat directory under `root`, with its status and the reason for it.

    Reads only: names, `.processed` markers and the mtimes of the logs.
    Raises ConfigError for `/`, TstatError if `root` cannot be listed.
    """
    if os.path.realpath(root) == "/":
        # Walking (and, for tstat_cull, deleting in) the whole system is never meant.
        raise ConfigError("-d /: the file-system root is not a Tstat output root")
    now = time.time() if now is None else now
    result = Scan(root)
    for folder in _folders(root):
        result.leftovers += folder.leftovers
        result.symlinks += folder.symlinks
        result.directories += _scan_folder(root, folder.tstat, settle, include_newest, now)
    return result


class NoTstatDirectories(TstatError):
    """Nothing shaped like Tstat's output under the root: a typo, or Tstat writes elsewhere."""


def require_tstat_output(found: Scan) -> None:
    """Raise NoTstatDirectories unless `found` holds at least one Tstat directory."""
    if not found.seen:
        raise NoTstatDirectories(
            f"no Tstat directories (YYYY_MM_DD_HH_MM.out) under {found.root}, up to "
            f"{MAX_DEPTH} levels down: check -d and where Tstat writes (its -s option)"
        )
