"""Walk a Tstat root and deliver each complete directory through a transport.

Order of events that keeps every flow and sends as few as possible twice:
1. directories go oldest first, folder by folder; which are due is decided in
   directories.py (a directory Tstat may still write waits, unless --include-newest);
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
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import __version__
from .config import Settings
from .directories import Status, TstatDirectory, require_tstat_output, scan
from .errors import ConfigError, StateError, TransportError
from .reader import Chunk, LogFile, Position, locate_log
from .records import FORMAT_VERSION, LogFormatError, Options
from .resume import DirectoryState, ResumePoint
from .state import PROCESSED_NAME, write_atomic
from .stats import RunStats
from .transports import Message, Transport

log = logging.getLogger(__name__)

# The logs 0.6.5 sends, in its order: all TCP flows of a directory, then all UDP.
LOGS = (("log_tcp_complete", "tcp"), ("log_udp_complete", "udp"))
MOSTLY_BAD_MIN_ROWS = 10


# A message id is `sensor:instance:directory:log:chunk`, and AMQP carries it as a
# short string: at most 255 bytes. The longest log name is 16 bytes; a chunk number
# below 2**63 has at most 19 digits. What is left is for sensor, instance and the
# directory's path under ROOT, checked at start-up for the shortest path (a Tstat name
# in ROOT itself) and again for each directory.
MAX_MESSAGE_ID_BYTES = 255
_ID_FIXED_BYTES = 4 + max(len(name) for name, _ in LOGS) + 19
_SHORTEST_DIRECTORY = len("YYYY_MM_DD_HH_MM.out")


def default_sensor() -> str:
    return socket.gethostname()


def message_id_prefix(sensor: str, instance: str | int, directory: str, log_name: str) -> str:
    """The message ids of one log, without their chunk number."""
    return f"{sensor}:{instance}:{directory}:{log_name}:"


def _utf8_size(text: str) -> int | None:
    """Bytes of `text` in UTF-8, or None if it has none (undecodable bytes of a name)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def check_ids(sensor: str, instance: str | int, sensor_is_default: bool = False) -> None:
    """Refuse a sensor or instance id that could break publishing mid-run.

    Both go into every flow and every message id, which AMQP bounds.
    Raises ConfigError naming the option and the limit.
    """
    default = " (this host's name)" if sensor_is_default else ""
    values = (
        (f"-S/--sensor {sensor!r}{default}", sensor),
        (f"-I/--instance {instance!r}", str(instance)),
    )
    for shown, value in values:
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ConfigError(
                f"{shown}: control characters (a newline, a tab...) are not allowed: "
                "it goes into every flow and message id"
            )
        if _utf8_size(value) is None:
            raise ConfigError(f"{shown}: not valid UTF-8 text")
    room = MAX_MESSAGE_ID_BYTES - _ID_FIXED_BYTES - _SHORTEST_DIRECTORY
    used = sum(_utf8_size(value) or 0 for _, value in values)
    if used > room:
        raise ConfigError(
            f"-S/--sensor and -I/--instance take {used} bytes together, over the {room} "
            f"a message id leaves them: AMQP limits an id to {MAX_MESSAGE_ID_BYTES} bytes, "
            "and it also holds the directory, the log name and the chunk number"
        )


def id_problem(sensor: str, instance: str | int, directory: str) -> str | None:
    """Why the message ids of `directory` (its path under ROOT) cannot be sent, or None."""
    size = _utf8_size(directory)
    if size is None:
        return "its path is not valid UTF-8, and it goes into every message id"
    longest = len(f"{sensor}{instance}".encode()) + size + _ID_FIXED_BYTES
    if longest > MAX_MESSAGE_ID_BYTES:
        return (
            f"its message ids could take {longest} bytes, over AMQP's limit of "
            f"{MAX_MESSAGE_ID_BYTES}: shorten the names of its folders, or -S/-I"
        )
    return None


def mostly_bad(rows: int, bad_rows: int) -> bool:
    """True when a log's bad rows are more than half of at least MOSTLY_BAD_MIN_ROWS rows.

    Such a file is not Tstat's rows with a few accidents but rows that do not fit
    their header (a column more or less): sending the rest and marking the directory
    would silently drop most of its flows.
    """
    return rows >= MOSTLY_BAD_MIN_ROWS and bad_rows * 2 > rows


class _Pending:
    """A published message the directory is waiting for, and where its file then stood."""

    __slots__ = ("log_name", "end", "number", "count", "rows", "bad_rows", "confirmed")

    def __init__(
        self, log_name: str, end: Position, number: int, count: int, rows: int, bad_rows: int
    ):
        self.log_name = log_name
        self.end = end
        self.number = number
        self.count = count
        self.rows = rows  # rows (and bad rows) of the file read up to `end`
        self.bad_rows = bad_rows
        self.confirmed = False


@dataclass
class _Outcome:
    """What sending one directory's logs came to."""

    sent: int = 0
    failed: int = 0
    waiting: bool = False  # a log ends in a row Tstat is still writing
    counts: dict[str, int] = field(default_factory=lambda: {"rows": 0, "bad_rows": 0, "objects": 0})


def unwritable(directory: Path) -> str | None:
    """Why `directory` cannot take the state file and marker, or None if it can.

    Creating (and removing) a file is the one test that sees every cause: modes,
    a read-only mount, an immutable directory, and root, for whom access() says yes.
    """
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".tstat_send.probe.")
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(probe)
    return None


def _message(body: bytes, id_prefix: str, directory: str, token: _Pending) -> Message:
    """The message of one chunk: its id and headers name where in the logs it comes from."""
    return Message(
        body=body,
        count=token.count,
        message_id=f"{id_prefix}{token.number}",
        timestamp=int(time.time()),
        headers={
            "tstat_directory": directory,
            "tstat_log": token.log_name,
            "chunk": token.number,
            "flows": token.count,
            "format_version": FORMAT_VERSION,
        },
        token=token,
    )


class Sender:
    """Delivers the directories of one Tstat root through one open transport."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        stats: RunStats | None = None,
        on_message: Callable[[RunStats, str, int, int], None] | None = None,
    ):
        self.settings = settings
        self.transport = transport
        self.stats = stats or RunStats()
        self.options = Options(
            settings.threshold_bits,
            settings.sensor or default_sensor(),
            settings.instance,
            settings.anonymize,
        )
        self.tracking = transport.marks_processed
        self._pending: deque[_Pending] = deque()
        self._state: DirectoryState | None = None
        self._on_message = on_message
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
        pending, state = self._pending, self._state
        while pending and pending[0].confirmed:
            done = pending.popleft()
            self._unsaved += 1
            if state is not None:
                state.confirm(
                    done.log_name, done.end, done.number, done.count, done.rows, done.bad_rows
                )

    def _checkpoint(self, durable: bool = False, force: bool = True) -> None:
        """Record the confirmed position; unless `force`, only every `_save_every` messages."""
        self._advance()
        if self._state is not None and (force or self._unsaved >= self._save_every):
            self._state.save(durable=durable)
            self._unsaved = 0

    def _reading(self, log_name: str, end: Position, rows: int, bad_rows: int) -> None:
        """Rows that give no message go by: service the transport (heartbeats,
        confirms) and, with nothing in flight, record how far the file was read
        (and its rows so far), so a run stopped in a long stretch of them still
        moves forward."""
        self.transport.poll()
        self._advance()
        if self._state is not None and not self._pending:
            self._state.advance(log_name, end, rows, bad_rows)
        self._checkpoint()

    # -- the walk --------------------------------------------------------------
    def run(self, root: Path) -> int:
        """Process every due directory; return how many could not be delivered.

        Raises NoTstatDirectories (nothing Tstat-like under `root`), TransportError
        (delivery stopped: the rest waits for the next run) and StateError (progress
        cannot be recorded).
        """
        found = scan(root, self.settings.settle_seconds, self.settings.include_newest)
        require_tstat_output(found)
        stats = self.stats
        for record in found.directories:
            if record.status is Status.PROCESSED:
                stats.dirs_skipped += 1
            elif record.status is Status.IGNORED:
                log.warning("%s: %s: not sent", record.path, record.reason)
                stats.dirs_ignored += 1
            elif record.status is Status.UNREADABLE:
                log.error("%s", record.reason)  # names the path itself
                stats.dirs_failed += 1
            elif record.status is Status.WAITING:
                log.info("%s: %s: left for a later run", record.path, record.reason)
                stats.dirs_waiting += 1
            elif self.process_directory(record) and self.settings.single:
                log.info("--single: stopping after %s", record.path)
                break
        return stats.dirs_failed

    def process_directory(self, record: TstatDirectory) -> int:
        """Send one directory; return the number of messages sent.

        Marks it `.processed` when all of it was confirmed and nothing is left to
        come (a file cut mid-line in a directory Tstat may still write may still grow).
        """
        started = time.time()
        directory = record.path
        if self._refused(record):
            self.stats.dirs_failed += 1
            return 0
        state = DirectoryState(directory, self.options, self.transport.name, self.tracking)
        self._state = state
        outcome = _Outcome()
        try:
            for log_name, protocol in LOGS:
                self._send_log(record, log_name, protocol, outcome)
            self.transport.flush()
            self._checkpoint()
            if self._pending:
                # flush() promises every message confirmed; a transport that returns
                # without must not get the directory marked.
                raise TransportError(
                    f"{directory}: the {self.transport.name} transport returned from flush "
                    f"with {len(self._pending)} message(s) unconfirmed: not marked processed"
                )
        except (TransportError, StateError, KeyboardInterrupt) as exc:
            if not isinstance(exc, KeyboardInterrupt):
                self.stats.dirs_failed += 1
            # Keep what was confirmed before stopping: the next run resumes there.
            try:
                self._checkpoint(durable=True)
            except StateError as again:
                if not isinstance(exc, StateError):  # else it is the same error, said once
                    log.error("%s", again)
            raise
        finally:
            self._pending.clear()
            self._state = None
        return self._conclude(record, state, outcome, started)

    def _refused(self, record: TstatDirectory) -> bool:
        """Whether the directory cannot go at all, found before anything is sent (and said)."""
        directory = record.path
        problem = id_problem(self.options.sensor, self.options.instance, record.name)
        if problem is not None:
            # A publish would fail mid-directory, and on every run again.
            shown = os.fsencode(directory).decode("utf-8", "backslashreplace")  # eth\xff
            log.error("%s: %s: not sent", shown, problem)
            return True
        why = unwritable(directory) if self.tracking else None
        if why is not None:
            # Sending first would resend the same messages on every run, since
            # neither the progress nor the marker could ever be recorded.
            log.error(
                "%s: cannot write in the directory (%s): not sent, since its "
                "progress and .processed could not be recorded",
                directory,
                why,
            )
            return True
        return False

    def _send_log(
        self, record: TstatDirectory, log_name: str, protocol: str, outcome: _Outcome
    ) -> None:
        """Send what is left of one log of a directory; account for it in `outcome`."""
        state = self._state
        assert state is not None
        try:
            found = locate_log(record.path, log_name)
        except LogFormatError as exc:
            log.error("%s", exc)
            outcome.failed += 1
            return
        except OSError as exc:  # a directory that cannot be searched
            log.error("%s: cannot read: %s", record.path / log_name, exc.strerror or exc)
            outcome.failed += 1
            return
        if found is None:
            log.info("%s: no %s", record.path, log_name)
            return
        path, size = found
        resume = state.start_of(log_name, path, size)
        logfile = LogFile(path, protocol, state.options, resume.position, record.complete)
        try:
            outcome.sent += self._send_file(logfile, record.name, log_name, resume)
        except LogFormatError as exc:
            log.error("%s: file not sent", exc)
            outcome.failed += 1
            return
        except OSError as exc:
            log.error("%s: cannot read: %s", path, exc.strerror or exc)
            outcome.failed += 1
            return
        finally:
            for key in outcome.counts:
                outcome.counts[key] += getattr(logfile.stats, key)
            self.stats.rows += logfile.stats.rows
            self.stats.bad_rows += logfile.stats.bad_rows
            self._log_bytes += (size or 0) - resume.position.offset
        rows = resume.rows + logfile.stats.rows
        bad_rows = resume.bad_rows + logfile.stats.bad_rows
        if mostly_bad(rows, bad_rows):
            log.error(
                "%s: %d of its %d rows are bad (more than half): the directory is not "
                "marked processed; does the header match the rows?",
                path,
                bad_rows,
                rows,
            )
            outcome.failed += 1
            return
        if logfile.stats.incomplete_tail:
            outcome.waiting = True
        if logfile.end is not None and not self._pending:
            # Nothing in flight: rows after the last message produced no object
            # (threshold, bad rows); do not read them again next time.
            state.advance(log_name, logfile.end, rows, bad_rows)

    def _conclude(
        self, record: TstatDirectory, state: DirectoryState, outcome: _Outcome, started: float
    ) -> int:
        """Mark the directory if all of it went, and count it; return the messages sent."""
        if outcome.failed:
            self.stats.dirs_failed += 1
            return outcome.sent
        if outcome.waiting:
            log.info(
                "%s: a log ends in a row Tstat is still writing: the directory is "
                "not marked processed yet",
                record.path,
            )
            self.stats.dirs_waiting += 1
            return outcome.sent
        counts = outcome.counts
        if self.tracking:
            body = {
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "tool": f"tstat_transport {__version__}",
                "transport": self.transport.name,
                "messages_this_run": outcome.sent,
                **counts,
            }
            write_atomic(record.path / PROCESSED_NAME, (json.dumps(body) + "\n").encode())
            state.remove()
        self.stats.dirs_done += 1
        sent, rows = outcome.sent, counts["rows"]
        log.info(
            "%s: done, %d message%s, %d row%s (%d bad) in %.1fs",
            record.path,
            sent,
            "" if sent == 1 else "s",
            rows,
            "" if rows == 1 else "s",
            counts["bad_rows"],
            time.time() - started,
        )
        return outcome.sent

    def _send_file(
        self, logfile: LogFile, directory: str, log_name: str, resume: ResumePoint
    ) -> int:
        """Publish the chunks of one log from `resume`; return how many were published."""
        options = logfile.options
        prefix = message_id_prefix(options.sensor, options.instance, directory, log_name)
        transport, pending, stats, file_stats = (
            self.transport,
            self._pending,
            self.stats,
            logfile.stats,
        )
        number = resume.number
        sent = 0
        chunk: Chunk
        for chunk in logfile.chunks():
            count = len(chunk.items)
            if not count:
                rows = resume.rows + file_stats.rows
                self._reading(log_name, chunk.end, rows, resume.bad_rows + file_stats.bad_rows)
                self._show_progress(logfile, directory, chunk)
                continue
            body = chunk.body()
            token = _Pending(
                log_name,
                chunk.end,
                number,
                count,
                resume.rows + file_stats.rows,
                resume.bad_rows + file_stats.bad_rows,
            )
            message = _message(body, prefix, directory, token)
            pending.append(token)
            transport.publish(message)
            number += 1
            sent += 1
            stats.messages += 1
            stats.objects += count
            stats.bytes += len(body)
            if self.tracking:
                self._checkpoint(force=False)
            self._show_progress(logfile, directory, chunk)
        return sent

    def _show_progress(self, logfile: LogFile, directory: str, chunk: Chunk) -> None:
        if self._on_message is not None:
            self._on_message(
                self.stats,
                directory,
                self.stats.rows + logfile.stats.rows,
                self._log_bytes + chunk.end.offset - logfile.start.offset,
            )
