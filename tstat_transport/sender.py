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
from pathlib import Path
from typing import Callable

from . import __version__
from .config import Settings
from .errors import StateError, TransportError
from .reader import Chunk, LogFile, Position
from .records import LogFormatError, Options
from .resume import DirectoryState
from .state import PROCESSED_NAME, is_tstat_dir_name, write_atomic
from .stats import RunStats
from .transports import Message, Transport

log = logging.getLogger(__name__)

# The logs 0.6.5 sends, in its order: all TCP flows of a directory, then all UDP.
LOGS = (("log_tcp_complete", "tcp"), ("log_udp_complete", "udp"))


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


class Sender:
    """Delivers the directories of one Tstat root through one open transport."""

    def __init__(self, settings: Settings, transport: Transport,
                 stats: RunStats | None = None,
                 on_message: Callable[[RunStats, str, int, int], None] | None = None):  # fmt: skip
        self.settings = settings
        self.transport = transport
        self.stats = stats or RunStats()
        self.options = Options(settings.threshold_bits, settings.sensor or default_sensor(),
                               settings.instance)  # fmt: skip
        self.tracking = transport.marks_processed
        self._pending: deque[_Pending] = deque()
        self._state: DirectoryState | None = None
        self._on_message = on_message
        self._log_bytes = 0  # bytes of logs finished in this run, for the progress line
        # A state write costs ~0.4 ms here, as much as publishing a message: with a wide
        # window, write it every window/8 confirmed messages (every one when the window
        # is under 16). A crash then resends what was in flight plus fewer than that.
        self._save_every = max(1, transport.window // 8)
        self._unsaved = 0
        transport.on_confirm = self._confirmed

    # -- confirmations -------------------------------------------------------
    def _confirmed(self, message: Message) -> None:
        message.token.confirmed = True

    def _advance(self) -> None:
        pending, state = self._pending, self._state
        while pending and pending[0].confirmed:
            done = pending.popleft()
            self._unsaved += 1
            if state is not None:
                state.confirm(done.log_name, done.end, done.number, done.count)

    def _checkpoint(self, durable: bool = False, force: bool = True) -> None:
        """Record the confirmed position; unless `force`, only every `_save_every` messages."""
        self._advance()
        if self._state is not None and (force or self._unsaved >= self._save_every):
            self._state.save(durable=durable)
            self._unsaved = 0

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
        state = DirectoryState(directory, self.options, self.transport.name, self.tracking)
        self._state = state
        sent = failed = 0
        waiting = False
        counts = {"rows": 0, "bad_rows": 0, "objects": 0}
        try:
            for log_name, protocol in LOGS:
                path = directory / log_name
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    log.info("%s: no %s", directory, log_name)
                    continue
                start, number = state.start_of(log_name, size)
                logfile = LogFile(path, protocol, state.options, start, complete)
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
                    self._log_bytes += size - start.offset
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
            self._state = None

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
            state.remove()
        self.stats.dirs_done += 1
        log.info("%s: done, %d messages, %d rows (%d bad) in %.1fs", directory, sent,
                 counts["rows"], counts["bad_rows"], time.time() - started)  # fmt: skip
        return sent

    def _send_file(self, logfile: LogFile, log_name: str, number: int) -> tuple[int, int]:
        directory = logfile.path.parent.name
        prefix = f"{logfile.options.sensor}:{logfile.options.instance}:{directory}:{log_name}:"
        transport, pending, stats = self.transport, self._pending, self.stats
        sent = 0
        chunk: Chunk
        for chunk in logfile.chunks():
            count = len(chunk.items)
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
            if self._on_message is not None:
                self._on_message(
                    stats,
                    directory,
                    stats.rows + logfile.stats.rows,
                    self._log_bytes + chunk.end.offset - logfile.start.offset,
                )
        if logfile.end is not None and self._state is not None and not pending:
            # Nothing in flight: rows after the last message produced no object
            # (threshold, bad rows); do not read them again next time.
            self._state.advance({log_name: logfile.end})
        return number, sent
