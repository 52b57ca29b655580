"""The resume state of one directory being sent (`.tstat_send.state`).

Per log file it records the position after the last message the archive confirmed in
order, how many messages that was, and the options the directory was started with,
so that a later run sends exactly the chunks that were not confirmed.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .reader import Position
from .records import Options
from .state import STATE_NAME, read_json, write_json_atomic

log = logging.getLogger(__name__)

STATE_VERSION = 1
COUNTS = ("messages", "objects", "rows", "bad_rows")
# Bytes before the resume offset that must read the same for the progress to apply.
TAIL_BYTES = 64
MAX_HEADER_BYTES = 65536
# A .gz log is told from another by its first compressed bytes: a writer only appends
# to a gzip stream, and they hold the start of the rows (a restarted Tstat -Z that
# rewrites the file in place writes other ones).
GZ_PREFIX_BYTES = 4096


@dataclass(frozen=True)
class ResumePoint:
    """Where a log's unsent part starts, the number of its next message, and the rows
    (and bad rows) read before it."""

    position: Position = field(default_factory=Position)
    number: int = 0
    rows: int = 0
    bad_rows: int = 0


@dataclass(frozen=True)
class _Opened:
    """A log file this run reads: where, its inode, and whether offsets are its bytes."""

    path: Path
    inode: int | None
    bytes_comparable: bool  # False for a .gz: offsets count uncompressed bytes


def _checked_entry(entry: object) -> dict[str, Any] | None:
    """A file's entry of the state, or None if it is not one this tool could have written."""
    if not isinstance(entry, dict):
        return None
    pos = Position.from_json(entry)
    if pos is None:
        return None
    checked: dict[str, Any] = pos.to_json()
    for key in COUNTS:
        value = entry.get(key, 0)
        # bool is an int to Python, and a negative count would make negative message ids.
        if type(value) is not int or value < 0:
            return None
        checked[key] = value
    if "inode" in entry:
        if type(entry["inode"]) is not int:
            return None
        checked["inode"] = entry["inode"]
    for key in ("header_sha1", "tail_sha1", "gz_prefix_sha1"):
        if key in entry:
            if not isinstance(entry[key], str):
                return None
            checked[key] = entry[key]
    if "gz_prefix_bytes" in entry:
        if type(entry["gz_prefix_bytes"]) is not int or entry["gz_prefix_bytes"] < 0:
            return None
        checked["gz_prefix_bytes"] = entry["gz_prefix_bytes"]
    return checked


def _sha1(data: bytes) -> str:
    # Imported here: hashlib maps OpenSSL (~4 MB of RSS), which a -N run never needs.
    import hashlib

    return hashlib.sha1(data).hexdigest()


def _pread(path: Path, pieces: list[tuple[int, int]]) -> list[bytes] | None:
    """The bytes of `path` at each (length, offset), or None if it cannot be read as a
    regular file (the open never blocks on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return [os.pread(fd, length, offset) for length, offset in pieces]
    except OSError:
        return None
    finally:
        os.close(fd)


def gz_fingerprint(path: Path, length: int = GZ_PREFIX_BYTES) -> dict[str, Any] | None:
    """The digest of a compressed log's first `length` bytes (fewer if it is shorter)."""
    got = _pread(path, [(length, 0)])
    if got is None:
        return None
    return {"gz_prefix_sha1": _sha1(got[0]), "gz_prefix_bytes": len(got[0])}


def fingerprint(path: Path, pos: Position) -> dict[str, str] | None:
    """Digests of the header line in force at `pos` and of the bytes just before it,
    enough to tell that a file is still the one the progress was recorded for."""
    start = max(pos.header_offset, pos.offset - TAIL_BYTES)
    got = _pread(path, [(MAX_HEADER_BYTES, pos.header_offset), (pos.offset - start, start)])
    if got is None:
        return None
    header = got[0].split(b"\n", 1)[0]
    return {"header_sha1": _sha1(header), "tail_sha1": _sha1(got[1])}


def _describe_change(key: str, old: Any, new: Any) -> str:
    """One changed option as the operator gave it: the threshold in MB, as -T takes it."""
    if key == "threshold_bits":
        try:
            return f"-T/--threshold {float(old) / 8_000_000:g} MB -> {float(new) / 8_000_000:g} MB"
        except (TypeError, ValueError):
            pass
    return f"{key} {old!r} -> {new!r}"


class DirectoryState:
    """The state file of one directory: per log, the position confirmed so far."""

    def __init__(self, directory: Path, options: Options, destination: str, enabled: bool):
        self.path = directory / STATE_NAME
        self.directory = directory
        self.enabled = enabled
        self.options = options
        self.destination = destination
        self.files: dict[str, dict[str, Any]] = {}
        self.dirty = False
        self._read: dict[str, _Opened] = {}  # the files this run reads, by log name
        self._unprinted: set[str] = set()  # files whose fingerprint is older than their entry
        if enabled:
            self._load()

    def _options_json(self, options: Options) -> dict[str, Any]:
        return {
            "threshold_bits": options.threshold_bits,
            "sensor": options.sensor,
            "instance": options.instance,
            "transport": self.destination,
        }

    def _load(self) -> None:
        data = read_json(self.path)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            if data is not None:
                log.warning(
                    "%s: state file of an unknown version, sending the directory from the start",
                    self.path,
                )
            return
        if not self._take_recorded_options(data.get("options") or {}):
            return
        files = data.get("files") or {}
        if not isinstance(files, dict):
            log.warning(
                "%s: unreadable state file, sending the directory from the start", self.path
            )
            return
        self._load_entries(files)

    def _take_recorded_options(self, recorded: dict[str, Any]) -> bool:
        """Whether the recorded progress can be resumed: it must have gone to this run's
        transport, and the directory is finished with the options it was started with."""
        if recorded.get("transport") != self.destination:
            log.warning(
                "%s: progress was recorded for transport %r, this run uses %r: sending "
                "the whole directory through %r",
                self.directory,
                recorded.get("transport"),
                self.destination,
                self.destination,
            )
            return False
        wanted = self._options_json(self.options)
        if recorded == wanted:
            return True
        try:
            # Anonymisation is not in the state (it must never hold a key): the
            # rest of the directory gets this run's.
            old = Options(
                float(recorded["threshold_bits"]),
                str(recorded["sensor"]),
                recorded["instance"],
                self.options.anonymize,
            )
        except (KeyError, TypeError, ValueError):
            log.warning(
                "%s: unreadable options in state file, sending the directory from the start",
                self.path,
            )
            return False
        changed = ", ".join(
            _describe_change(k, recorded.get(k), wanted[k])
            for k in wanted
            if recorded.get(k) != wanted[k]
        )
        # Its first part already went out with the old options; finishing it with
        # them keeps its chunks (and message ids) consistent: nothing lost, no
        # duplicates. New directories use the new options.
        log.warning(
            "%s: options changed since this directory was started (%s); "
            "finishing it with the options it was started with",
            self.directory,
            changed,
        )
        self.options = old
        return True

    def _load_entries(self, files: dict[str, Any]) -> None:
        """Keep each file's recorded progress that is usable; the others start over."""
        for name, entry in files.items():
            checked = _checked_entry(entry)
            if checked is None:
                log.warning(
                    "%s: unusable progress for %s, sending it from the start", self.path, name
                )
            else:
                self.files[name] = checked

    def start_of(self, log_name: str, path: Path, size: int | None) -> ResumePoint:
        """Where to resume `log_name`, read from `path`: from the start unless the
        recorded progress still describes this very file. `size` None: a compressed
        log, whose offsets count uncompressed bytes and cannot be checked as bytes."""
        entry = self.files.get(log_name)
        try:
            inode: int | None = os.lstat(path).st_ino
        except OSError:
            inode = None  # the reader says why
        self._read[log_name] = _Opened(path, inode, size is not None)
        if not entry:
            return ResumePoint()
        pos = Position.from_json(entry)
        assert pos is not None
        changed = self._changed(entry, pos, self._read[log_name], size)
        if changed is None:
            return ResumePoint(pos, entry["messages"], entry["rows"], entry["bad_rows"])
        log.warning("%s: %s since the last run: sending it from the start", path, changed)
        # The new file's chunks get numbers after the old one's: the same message id
        # for different flows would make a consumer drop them as duplicates.
        number = entry["messages"]
        self.files[log_name] = {
            **Position().to_json(),
            "messages": number,
            "objects": entry["objects"],
            "rows": 0,
            "bad_rows": 0,
        }
        self.dirty = True
        return ResumePoint(Position(), number, 0, 0)

    def _changed(
        self, entry: dict[str, Any], pos: Position, opened: _Opened, size: int | None
    ) -> str | None:
        """How the file differs from the one the progress was recorded for, or None."""
        inode = opened.inode
        if inode is not None and entry.get("inode", inode) != inode:
            return f"the file was replaced (inode {entry['inode']} -> {inode})"
        if size is not None and pos.offset > size:
            return (
                f"the file is shorter than the progress recorded for it "
                f"({size} < {pos.offset} bytes)"
            )
        if "header_sha1" in entry and opened.bytes_comparable:
            now = fingerprint(opened.path, pos)
            if now is None:
                return "the file cannot be read back where the progress was recorded"
            if now["header_sha1"] != entry["header_sha1"]:
                return f"the header at byte {pos.header_offset} changed"
            if now["tail_sha1"] != entry["tail_sha1"]:
                return f"the rows before byte {pos.offset} changed"
        if "gz_prefix_sha1" in entry and not opened.bytes_comparable:
            length = entry.get("gz_prefix_bytes", GZ_PREFIX_BYTES)
            prints = gz_fingerprint(opened.path, length)
            if prints is None:
                return "the file cannot be read back where the progress was recorded"
            if prints != {"gz_prefix_sha1": entry["gz_prefix_sha1"], "gz_prefix_bytes": length}:
                return f"its first {length} compressed bytes changed (rewritten in place)"
        return None

    def confirm(
        self, log_name: str, end: Position, number: int, count: int, rows: int, bad_rows: int
    ) -> None:
        """Record message `number` (of `count` objects) confirmed in order: `log_name` is
        done up to `end`, where it had `rows` rows, `bad_rows` of them bad."""
        entry = self.files.setdefault(log_name, {"objects": 0})
        entry.update(end.to_json())
        entry["messages"] = number + 1
        entry["objects"] = entry.get("objects", 0) + count
        self._moved(log_name, entry, rows, bad_rows)

    def advance(self, log_name: str, end: Position, rows: int, bad_rows: int) -> None:
        """Record that a file was read to `end` with nothing left to send there."""
        entry = self.files.setdefault(log_name, {"objects": 0, "messages": 0})
        if entry.get("offset", -1) != end.offset:
            entry.update(end.to_json())
            self._moved(log_name, entry, rows, bad_rows)

    def _moved(self, log_name: str, entry: dict[str, Any], rows: int, bad_rows: int) -> None:
        entry["rows"] = rows
        entry["bad_rows"] = bad_rows
        opened = self._read.get(log_name)
        if opened is not None and opened.inode is not None:
            entry["inode"] = opened.inode
        self._unprinted.add(log_name)
        self.dirty = True

    def save(self, durable: bool = False) -> None:
        if not self.enabled or not self.dirty:
            return
        for log_name in self._unprinted:
            entry = self.files[log_name]
            opened = self._read.get(log_name)
            pos = Position.from_json(entry)
            if opened is None or pos is None:
                continue
            if opened.bytes_comparable:
                prints = fingerprint(opened.path, pos)
            elif entry.get("gz_prefix_bytes") == GZ_PREFIX_BYTES:
                continue  # taken whole already (and checked at start): it cannot change
            else:
                prints = gz_fingerprint(opened.path)
            if prints is not None:
                entry.update(prints)
        self._unprinted.clear()
        data = {
            "version": STATE_VERSION,
            "tool": f"tstat_transport {__version__}",
            "options": self._options_json(self.options),
            "files": self.files,
            "updated": int(time.time()),
        }
        write_json_atomic(self.path, data, durable=durable)
        self.dirty = False

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("%s: cannot remove state file: %s", self.path, exc.strerror)
