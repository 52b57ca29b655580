"""Walk a Tstat root and deliver each complete directory through a transport.

Order of events that keeps every flow and sends as few as possible twice:
1. directories go oldest first; the newest is still being written by Tstat and is
   left for a later run unless --include-newest;
2. each log file is cut into deterministic chunks of <= 100 objects (same file,
   same options: same chunks, same message ids);
3. as the transport confirms messages, the position after the last message
   confirmed *in order* is written to the directory's state file, atomically;
4. only when every message of the directory is confirmed does `.processed` appear
   (durably), and the state file goes.
A run that dies anywhere resumes from the state file: what was confirmed is not
sent again, so duplicates are at most the messages that were in flight.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .config import Settings
from .errors import StateError, TransportError
from .reader import Chunk, LogFile, Position, locate_log
from .records import LogFormatError, Options
from .state import (
    PROCESSED_NAME,
    STATE_NAME,
    is_tstat_dir_name,
    read_json,
    write_atomic,
    write_json_atomic,
)
from .transports import Message, Transport

log = logging.getLogger(__name__)

# The logs 0.6.5 sends, in its order: all TCP flows of a directory, then all UDP.
LOGS = (("log_tcp_complete", "tcp"), ("log_udp_complete", "udp"))
STATE_VERSION = 1


@dataclass
class RunStats:
    """The counters of one run (summary line, metrics file)."""

    dirs_done: int = 0
    dirs_failed: int = 0
    dirs_skipped: int = 0  # already .processed
    dirs_waiting: int = 0  # newest, or not finished by Tstat: left for a later run
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
            f"rows={self.rows} bad_rows={self.bad_rows} objects={self.objects} "
            f"messages={self.messages} bytes={self.bytes} seconds={seconds:.1f}"
        )


def default_sensor() -> str:
    return socket.gethostname()


def find_directories(root: Path) -> list[Path]:
    """Tstat's rotated directories under `root`, oldest first (their names sort by time).

    Symlinks are passed over, as tstat_cull does, so the two agree on what exists.
    """
    found = []
    with os.scandir(root) as it:
        for entry in it:
            if is_tstat_dir_name(entry.name) and entry.is_dir(follow_symlinks=False):
                found.append(Path(entry.path))
    return sorted(found, key=lambda p: p.name)


class _Pending:
    """A published message the directory is waiting for."""

    __slots__ = ("log_name", "end", "number", "count", "confirmed")

    def __init__(self, log_name: str, end: Position, number: int, count: int):
        self.log_name = log_name
        self.end = end
        self.number = number
        self.count = count
        self.confirmed = False


def _describe_change(key: str, old: Any, new: Any) -> str:
    """One changed option as the operator gave it: the threshold in MB, as -T takes it."""
    if key == "threshold_bits":
        try:
            return f"-T/--threshold {float(old) / 8_000_000:g} MB -> {float(new) / 8_000_000:g} MB"
        except (TypeError, ValueError):
            pass
    return f"{key} {old!r} -> {new!r}"


class DirectoryProgress:
    """The state file of one directory: per log, the position confirmed so far."""

    def __init__(self, directory: Path, options: Options, transport: Transport, enabled: bool):
        self.path = directory / STATE_NAME
        self.directory = directory
        self.enabled = enabled
        self.options = options
        self.destination = transport.name
        self.files: dict[str, dict[str, Any]] = {}
        self.dirty = False
        if enabled:
            self._load()

    def _options_json(self, options: Options) -> dict[str, Any]:
        return {"threshold_bits": options.threshold_bits, "sensor": options.sensor,
                "instance": options.instance, "transport": self.destination}  # fmt: skip

    def _load(self) -> None:
        data = read_json(self.path)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            if data is not None:
                log.warning("%s: state file of an unknown version, sending the directory "
                            "from the start", self.path)  # fmt: skip
            return
        recorded = data.get("options") or {}
        files = data.get("files") or {}
        if recorded.get("transport") != self.destination:
            log.warning(
                "%s: progress was recorded for transport %r, this run uses %r: sending "
                "the whole directory through %r", self.directory, recorded.get("transport"),
                self.destination, self.destination,
            )  # fmt: skip
            return
        wanted = self._options_json(self.options)
        if recorded != wanted:
            try:
                old = Options(float(recorded["threshold_bits"]), str(recorded["sensor"]),
                              recorded["instance"])  # fmt: skip
            except (KeyError, TypeError, ValueError):
                log.warning("%s: unreadable options in state file, sending the directory "
                            "from the start", self.path)  # fmt: skip
                return
            changed = ", ".join(_describe_change(k, recorded.get(k), wanted[k]) for k in wanted
                                if recorded.get(k) != wanted[k])  # fmt: skip
            # Its first part already went out with the old options; finishing it with
            # them keeps its chunks (and message ids) consistent: nothing lost, no
            # duplicates. New directories use the new options.
            log.warning("%s: options changed since this directory was started (%s); "
                        "finishing it with the options it was started with",
                        self.directory, changed)  # fmt: skip
            self.options = old
        for name, entry in files.items():
            pos = Position.from_json(entry)
            if pos is not None and isinstance(entry.get("messages"), int):
                self.files[name] = {**pos.to_json(), "messages": entry["messages"],
                                    "objects": int(entry.get("objects", 0))}  # fmt: skip

    def start_of(self, log_name: str, size: int | None) -> tuple[Position, int]:
        """Where to resume a log; `size` None: not comparable with offsets (a .gz)."""
        entry = self.files.get(log_name)
        if not entry:
            return Position(), 0
        pos = Position.from_json(entry)
        assert pos is not None
        if size is not None and pos.offset > size:
            log.warning("%s/%s: file is shorter than the progress recorded for it "
                        "(%d < %d bytes): sending it from the start",
                        self.directory, log_name, size, pos.offset)  # fmt: skip
            del self.files[log_name]
            return Position(), 0
        return pos, entry["messages"]

    def confirm(self, pending: _Pending) -> None:
        """Record a message confirmed in order: its file is done up to its end."""
        entry = self.files.setdefault(pending.log_name, {"objects": 0})
        entry.update(pending.end.to_json())
        entry["messages"] = pending.number + 1
        entry["objects"] = entry.get("objects", 0) + pending.count
        self.dirty = True

    def advance(self, pos_by_log: dict[str, Position]) -> None:
        """Record that a file was read to `pos` with nothing left to send there."""
        for log_name, pos in pos_by_log.items():
            entry = self.files.setdefault(log_name, {"objects": 0, "messages": 0})
            if entry.get("offset", -1) != pos.offset:
                entry.update(pos.to_json())
                self.dirty = True

    def save(self, durable: bool = False) -> None:
        if not self.enabled or not self.dirty:
            return
        data = {"version": STATE_VERSION, "tool": f"tstat_transport {__version__}",
                "options": self._options_json(self.options), "files": self.files,
                "updated": int(time.time())}  # fmt: skip
        write_json_atomic(self.path, data, durable=durable)
        self.dirty = False

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("%s: cannot remove state file: %s", self.path, exc.strerror)


class Sender:
    """Delivers the directories of one Tstat root through one open transport."""

    def __init__(self, settings: Settings, transport: Transport,
                 stats: RunStats | None = None,
                 progress: Callable[[RunStats, str, int, int], None] | None = None):  # fmt: skip
        self.settings = settings
        self.transport = transport
        self.stats = stats or RunStats()
        self.options = Options(settings.threshold_bits, settings.sensor or default_sensor(),
                               settings.instance)  # fmt: skip
        self.tracking = transport.marks_processed
        self._pending: deque[_Pending] = deque()
        self._progress: DirectoryProgress | None = None
        self._on_progress = progress
        self._log_bytes = 0  # bytes of logs finished in this run, for the progress line
        # A state write (temporary file, rename) costs 0.6 ms of wall time on ext4 here,
        # several times what publishing a message costs: write it every window/2
        # confirmed messages (every one when the window is under 4). Every window/8 kept
        # the rate into the broker at ~0.65x of -N (bench --quick); this gives ~0.75x.
        # A crash then resends what was in flight plus fewer than window/2 messages.
        self._save_every = max(1, transport.window // 2)
        self._unsaved = 0
        transport.on_confirm = self._confirmed

    # -- confirmations -------------------------------------------------------
    def _confirmed(self, message: Message) -> None:
        message.token.confirmed = True

    def _advance(self) -> None:
        pending, progress = self._pending, self._progress
        while pending and pending[0].confirmed:
            done = pending.popleft()
            self._unsaved += 1
            if progress is not None:
                progress.confirm(done)

    def _checkpoint(self, durable: bool = False, force: bool = True) -> None:
        """Record the confirmed position; unless `force`, only every `_save_every` messages."""
        self._advance()
        if self._progress is not None and (force or self._unsaved >= self._save_every):
            self._progress.save(durable=durable)
            self._unsaved = 0

    def _reading(self, log_name: str, end: Position) -> None:
        """Rows that give no message go by: service the transport (heartbeats,
        confirms) and, with nothing in flight, record how far the file was read,
        so a run stopped in a long stretch of them still moves forward."""
        self.transport.poll()
        self._advance()
        if self._progress is not None and not self._pending:
            self._progress.advance({log_name: end})
        self._checkpoint()

    # -- the walk --------------------------------------------------------------
    def run(self, root: Path) -> int:
        """Process every due directory; return how many could not be delivered.

        Raises TransportError (delivery stopped: the rest waits for the next run)
        and StateError (progress cannot be recorded).
        """
        directories = find_directories(root)
        newest = directories[-1] if directories else None
        for directory in directories:
            if (directory / PROCESSED_NAME).exists():
                self.stats.dirs_skipped += 1
                continue
            complete = directory != newest
            if not complete and not self.settings.include_newest:
                log.info("%s: newest directory, Tstat may still be writing it: left for a "
                         "later run (--include-newest to send it now)", directory)  # fmt: skip
                self.stats.dirs_waiting += 1
                continue
            sent = self.process_directory(directory, complete)
            if self.settings.single and sent:
                log.info("--single: stopping after %s", directory)
                break
        return self.stats.dirs_failed

    def process_directory(self, directory: Path, complete: bool) -> int:
        """Send one directory; return the number of messages sent.

        Marks it `.processed` when all of it was confirmed and nothing is left to
        come (a file cut mid-line in the newest directory may still grow).
        """
        started = time.time()
        progress = DirectoryProgress(directory, self.options, self.transport, self.tracking)
        self._progress = progress
        sent = failed = 0
        waiting = False
        counts = {"rows": 0, "bad_rows": 0, "objects": 0}
        try:
            for log_name, protocol in LOGS:
                try:
                    found = locate_log(directory, log_name)
                except LogFormatError as exc:
                    log.error("%s", exc)
                    failed += 1
                    continue
                except OSError as exc:
                    log.error("%s: cannot read: %s", directory / log_name, exc.strerror or exc)
                    failed += 1
                    continue
                if found is None:
                    log.info("%s: no %s", directory, log_name)
                    continue
                path, size = found
                start, number = progress.start_of(log_name, size)
                logfile = LogFile(path, protocol, progress.options, start, complete)
                try:
                    number, n = self._send_file(logfile, log_name, number)
                    sent += n
                except LogFormatError as exc:
                    log.error("%s: file not sent", exc)
                    failed += 1
                except OSError as exc:
                    log.error("%s: cannot read: %s", path, exc.strerror or exc)
                    failed += 1
                finally:
                    for key in counts:
                        counts[key] += getattr(logfile.stats, key)
                    self.stats.rows += logfile.stats.rows
                    self.stats.bad_rows += logfile.stats.bad_rows
                    self._log_bytes += (size or 0) - start.offset
                if logfile.stats.incomplete_tail:
                    waiting = True
            self.transport.flush()
            self._checkpoint()
        except (TransportError, StateError, KeyboardInterrupt):
            # Keep what was confirmed before stopping: the next run resumes there.
            try:
                self._checkpoint(durable=True)
            except StateError as exc:
                log.error("%s", exc)
            raise
        finally:
            self._pending.clear()
            self._progress = None

        if failed:
            self.stats.dirs_failed += 1
            return sent
        if waiting:
            log.info("%s: a log ends in a row Tstat is still writing: the directory is "
                     "not marked processed yet", directory)  # fmt: skip
            self.stats.dirs_waiting += 1
            return sent
        if self.tracking:
            body = {"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "tool": f"tstat_transport {__version__}", "transport": self.transport.name,
                    "messages_this_run": sent, **counts}  # fmt: skip
            write_atomic(directory / PROCESSED_NAME, (json.dumps(body) + "\n").encode())
            progress.remove()
        self.stats.dirs_done += 1
        log.info("%s: done, %d message%s, %d row%s (%d bad) in %.1fs", directory,
                 sent, "" if sent == 1 else "s", counts["rows"], "" if counts["rows"] == 1 else "s",
                 counts["bad_rows"], time.time() - started)  # fmt: skip
        return sent

    def _send_file(self, logfile: LogFile, log_name: str, number: int) -> tuple[int, int]:
        directory = logfile.path.parent.name
        prefix = f"{logfile.options.sensor}:{logfile.options.instance}:{directory}:{log_name}:"
        transport, pending, stats = self.transport, self._pending, self.stats
        sent = 0
        chunk: Chunk
        for chunk in logfile.chunks():
            count = len(chunk.items)
            if not count:
                self._reading(log_name, chunk.end)
                continue
            body = chunk.body()
            token = _Pending(log_name, chunk.end, number, count)
            message = Message(
                body=body, count=count, message_id=f"{prefix}{number}",
                timestamp=int(time.time()),
                headers={"tstat_directory": directory, "tstat_log": log_name,
                         "chunk": number, "flows": count},  # fmt: skip
                token=token,
            )  # fmt: skip
            pending.append(token)
            transport.publish(message)
            number += 1
            sent += 1
            stats.messages += 1
            stats.objects += count
            stats.bytes += len(body)
            if self.tracking:
                self._checkpoint(force=False)
            if self._on_progress is not None:
                self._on_progress(
                    stats,
                    directory,
                    stats.rows + logfile.stats.rows,
                    self._log_bytes + chunk.end.offset - logfile.start.offset,
                )
        if logfile.end is not None and self._progress is not None and not pending:
            # Nothing in flight: rows after the last message produced no object
            # (threshold, bad rows); do not read them again next time.
            self._progress.advance({log_name: logfile.end})
        return number, sent
