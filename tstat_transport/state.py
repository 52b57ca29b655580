"""Files tstat_send keeps on disk: the run lock, progress state and .processed markers.

Every write is atomic (temporary file in the same directory, then rename), so a crash
or a full disk leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import pwd
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import AlreadyRunning, StateError

log = logging.getLogger(__name__)


PROCESSED_NAME = ".processed"
STATE_NAME = ".tstat_send.state"
LOCK_NAME = ".tstat_transport.lock"
# A state file holds a few hundred bytes; anything much bigger is not one of ours.
MAX_STATE_BYTES = 1024 * 1024


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace `path` with `data` in one step.

    With `durable`, the file and the rename are fsynced, so the new content
    survives a power cut too; without it, a killed process still leaves a whole
    file (the kernel keeps the page cache), which is what progress checkpoints need.
    Raises StateError (naming the path and the cause, e.g. no space left).
    """
    if os.path.islink(path):
        # The rename below would replace the link, not write through it; but a link
        # where our own file belongs was put there by someone else: leave it to them.
        raise StateError(
            f"cannot write {path}: it is a symbolic link (not written through; "
            "remove it if it should not be there)"
        )
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; give what open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        if durable:
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except OSError as exc:
        reason = "no space left on device" if exc.errno == errno.ENOSPC else exc.strerror
        raise StateError(f"cannot write {path}: {reason}") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_json_atomic(path: Path, obj: Any, durable: bool = True) -> None:
    write_atomic(path, json.dumps(obj, sort_keys=True).encode() + b"\n", durable=durable)


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None if it is missing or unreadable (a warning says which).

    Only a regular file of at most MAX_STATE_BYTES is read, without following a
    symlink or blocking on a FIFO: a planted /dev/zero must not hang the run.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        reason = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        log.warning("%s: ignoring unreadable state file (%s)", path, reason)
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            log.warning("%s: ignoring the state file: not a regular file", path)
            return None
        try:
            data = f.read(MAX_STATE_BYTES + 1)
            if len(data) > MAX_STATE_BYTES:
                raise ValueError(f"over {MAX_STATE_BYTES} bytes")
            return json.loads(data)
        except (OSError, ValueError) as exc:
            log.warning("%s: ignoring unreadable state file (%s)", path, exc)
            return None
        except RecursionError:  # nested deeper than json can parse: not a file we wrote
            log.warning("%s: ignoring unreadable state file (nested too deeply)", path)
            return None


def _fix_hint(path: Path, exc: OSError) -> str:
    """How to get out of a permission trap, e.g. a root-owned file left by a run as root."""
    if exc.errno not in (errno.EACCES, errno.EPERM):
        return ""
    user = _user_name(os.geteuid())
    target = path if path.exists() else path.parent
    try:
        owner = _user_name(os.stat(target).st_uid)
    except OSError:
        return ""
    if owner == user:
        return f" (check the mode of {target})"
    # chown the file (or the root, when the file cannot be created there). Not "run as
    # root": that is how the trap is usually set.
    return f" ({target} belongs to {owner}, this run is {user}: as root, `chown {user}: {target}`)"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@contextlib.contextmanager
def run_lock(root: Path) -> Iterator[Path]:
    """Hold an exclusive, non-blocking lock on `root` for tstat_send and tstat_cull.

    The lock file is never deleted: deleting it would let a second run lock a new
    inode while the first still holds the old one. The kernel drops the lock when
    the process dies, so a killed run never leaves a stale lock behind.
    Raises AlreadyRunning if another process holds it, StateError if it cannot be created.
    """
    path = root / LOCK_NAME
    # Read-only: flock needs no write access, so a lock file a run as root left behind
    # (0644) does not lock the service user out. Neither a symlink planted there is
    # followed nor a FIFO waited on.
    flags = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateError(
                f"cannot open lock file {path}: it is a symbolic link (not followed)"
            ) from exc
        raise StateError(
            f"cannot open lock file {path}: {exc.strerror}{_fix_hint(path, exc)}"
        ) from exc
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StateError(f"cannot use lock file {path}: not a regular file")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(
                f"another tstat_send or tstat_cull is working on {root} (lock {path} is held)"
            ) from None
        try:
            yield path
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
