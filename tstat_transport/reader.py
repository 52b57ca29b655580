"""Read one Tstat log file as a stream of chunks of at most 100 flow objects.

Memory stays flat: the file is read line by line, each line bounded, and only the
chunk being filled is held. Each chunk comes with the position where the next one
starts, so the sender can record how far the archive has confirmed and a later run
can resume there (by byte offset, in the uncompressed stream for a .gz) instead of
re-reading or re-sending the file. Only regular files are read.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import json
import logging
import math
import os
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .records import LogFormatError, Options, RowConverter, compile_converter
from .state import STATE_NAME

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode

log = logging.getLogger(__name__)

CHUNK_SIZE = 100  # flow objects per message, as the original
# A Tstat row is 1-3 KB: a longer line is a bad row (what a crash can leave, e.g.
# megabytes of NUL bytes), read past in pieces of this size so memory stays flat.
MAX_LINE_BYTES = 64 * 1024
# A message body stays under this, far below what brokers accept (RabbitMQ's
# max_message_size, 16 MiB by default since 4.0) and what HTTP servers commonly
# take; a chunk whose JSON would be bigger is cut into more messages.
MAX_MESSAGE_BYTES = 1024 * 1024
# Above this many JSON characters in the chunk being filled, check the exact body
# size (the brackets and commas of 100 objects come on top).
MESSAGE_TEXT_LIMIT = MAX_MESSAGE_BYTES - CHUNK_SIZE - 1
# Rows read with no object to send between two chances for the sender to service
# its transport and record the progress (a few tenths of a second of reading).
POLL_ROWS = 20_000
# Bad rows reported one by one per file; past that, one line with the total.
MAX_REPORTED = 10
# What an operator does about a log that cannot be resumed.
_START_OVER = f" (delete the directory's {STATE_NAME} to send it again from its start)"


@dataclass(frozen=True)
class Position:
    """Where a file's unsent objects start.

    `offset` is the byte offset of the first row not completely sent, `line` its
    line number (1-based), `skip` how many of that row's objects were already sent
    (a chunk can end between a row's two directions), and `header_offset` where the
    header in force there starts (a restarted Tstat may write a second header).
    """

    offset: int = 0
    line: int = 1
    skip: int = 0
    header_offset: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "offset": self.offset,
            "line": self.line,
            "skip": self.skip,
            "header_offset": self.header_offset,
        }

    @classmethod
    def from_json(cls, obj: object) -> Position | None:
        try:
            pos = cls(**{k: int(obj[k]) for k in ("offset", "line", "skip", "header_offset")})  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            return None
        if min(pos.offset, pos.skip, pos.header_offset) < 0 or pos.line < 1:
            return None
        return pos


@dataclass
class FileStats:
    rows: int = 0
    bad_rows: int = 0
    objects: int = 0
    headers: int = 0
    incomplete_tail: bool = False  # the file ends in a line without its newline


@dataclass
class Chunk:
    """Up to 100 flow objects, each already as compact JSON text."""

    items: list[str]
    end: Position  # where the next chunk starts

    @property
    def objects(self) -> list[dict]:
        return [json.loads(item) for item in self.items]

    def body(self) -> bytes:
        """The message: a JSON array of the objects."""
        return ("[" + ",".join(self.items) + "]").encode()


def parse_header(line: str) -> list[str]:
    """Column names of a Tstat header line, cleaned.

    `#15#c_ip:1 c_port:2` (TCP, with the level bitmask) and `#c_ip:1 ...` (UDP)
    both give ["c_ip", "c_port", ...]. Raises LogFormatError if it is not one.
    """
    text = line.rstrip("\r\n")
    if not text.startswith("#"):
        raise LogFormatError("first line is not a Tstat header (it does not start with '#')")
    text = text[1:]
    head, sep, rest = text.partition("#")
    if sep and head.isdigit():
        text = rest  # the TCP level prefix, e.g. "15#"
    names = [item.split(":", 1)[0] for item in text.split(" ") if item]
    if not names or not all(n.replace("_", "").isalnum() for n in names):
        raise LogFormatError(f"not a Tstat header: {line[:60].strip()!r}")
    return names


@dataclass
class LogFile:
    """One log file of a directory, read from `start`.

    `complete` says the file will not grow any more (a newer directory exists):
    then a last line without its newline is a bad row; otherwise it is a row
    Tstat has not finished writing, left for a later run.
    """

    path: Path
    protocol: str
    options: Options
    start: Position = field(default_factory=Position)
    complete: bool = True
    stats: FileStats = field(default_factory=FileStats)
    end: Position | None = None  # set once the file was read to its (complete) end
    _reported: int = 0

    def _bad(self, line: int, reason: str) -> None:
        self.stats.bad_rows += 1
        if self._reported < MAX_REPORTED:
            log.warning("%s:%d: bad row skipped: %s", self.path, line, reason)
        elif self._reported == MAX_REPORTED:
            log.warning("%s: more bad rows; the rest are only counted", self.path)
        self._reported += 1

    def _slow_row(self, conv: RowConverter, fields: list[str], line_no: int) -> list[str] | None:
        """A row the fast path declined: convert it the reference way, or report it."""
        try:
            objects = conv.convert(fields)
        except (ValueError, IndexError, ZeroDivisionError, OverflowError):
            self._bad(line_no, conv.explain(fields))
            return None
        replaced = finite_or_none(objects)
        if replaced:
            log.warning(
                "%s:%d: %d NaN/Infinity value(s) sent as null (JSON has neither)",
                self.path,
                line_no,
                replaced,
            )
        return [_dumps(obj) for obj in objects]

    def _header_at(self, f: io.BufferedIOBase, offset: int) -> RowConverter:
        f.seek(offset)
        raw = f.readline(MAX_LINE_BYTES)
        if not raw.endswith(b"\n"):
            raise LogFormatError("header line missing")
        return compile_converter(self.protocol, parse_header(raw.decode("latin-1")), self.options)

    def chunks(self) -> Iterator[Chunk]:
        """Yield the chunks from `start` on; the last one may be short.

        While rows give no object (below the threshold, bad), an empty chunk
        comes every POLL_ROWS rows, its `end` where the unsent objects
        start, so the sender can service its transport and record the progress.
        Raises LogFormatError (naming the file, and the line when there is one)
        for a header it cannot use, a file that is not a regular file, or corrupt
        compressed data; chunks yielded before stay valid. OSError propagates.
        """
        try:
            yield from self._chunks()
        except LogFormatError as exc:
            if not str(exc).startswith(str(self.path)):
                raise LogFormatError(f"{self.path}:{exc}") from None
            raise
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise LogFormatError(f"{self.path}: corrupt compressed data ({exc})") from None

    def _chunks(self) -> Iterator[Chunk]:
        with open_log(self.path) as f:
            begin = self._begin(f) if self.start.offset == 0 else self._resume(f)
            if begin is not None:
                yield from self._read(f, *begin)
            if getattr(f, "truncated", False):
                self._truncated()

    def _truncated(self) -> None:
        # A .gz Tstat is still writing, or one cut short by a crash: the rows it
        # holds were sent, but the file is never taken as complete.
        self.stats.incomplete_tail = True
        if self.complete:
            log.warning(
                "%s: the compressed data ends early (truncated gzip stream): the rows "
                "before line %d were read, the directory is not marked processed",
                self.path,
                (self.end or self.start).line,
            )

    def _begin(self, f: io.BufferedIOBase) -> tuple[RowConverter, int, int, int] | None:
        """Read the header at the start of the file: (converter, header offset, offset, line)."""
        first = f.readline(MAX_LINE_BYTES)
        if first.endswith(b"\n"):
            try:
                conv = compile_converter(
                    self.protocol, parse_header(first.decode("latin-1")), self.options
                )
            except LogFormatError as exc:
                raise LogFormatError(f"{self.path}:1: {exc}") from None
            return conv, 0, len(first), 2
        self.end = Position()
        if len(first) >= MAX_LINE_BYTES:
            raise LogFormatError(
                f"{self.path}:1: first line longer than {MAX_LINE_BYTES} bytes: not a Tstat header"
            )
        if not first or getattr(f, "truncated", False):
            return None  # 0 bytes: Tstat has not flushed anything yet
        if self.complete:
            self._bad(1, "file holds only part of its header line")
        else:
            self.stats.incomplete_tail = True
        return None

    def _resume(self, f: io.BufferedIOBase) -> tuple[RowConverter, int, int, int]:
        """Go back to `start`: the header in force there, then the first unsent row.

        A .gz file is decompressed from its start up to there.
        """
        start = self.start
        try:
            conv = self._header_at(f, start.header_offset)
        except (LogFormatError, EOFError) as exc:
            raise LogFormatError(
                f"{self.path}: cannot resume: the header at byte {start.header_offset} is "
                f"gone ({exc}); the file changed since the last run{_START_OVER}"
            ) from None
        try:
            reached = f.seek(start.offset)
        except EOFError:  # a .gz cut short before that point
            reached = -1
        if reached != start.offset:
            raise LogFormatError(
                f"{self.path}: cannot resume: it ends before byte {start.offset}, recorded "
                f"as read; the file changed since the last run{_START_OVER}"
            )
        return conv, start.header_offset, start.offset, start.line

    def _new_header(self, text: str, line_no: int, ncols: int) -> RowConverter:
        """Tstat restarted into the same file: adopt the header it wrote."""
        try:
            conv = compile_converter(self.protocol, parse_header(text), self.options)
        except LogFormatError as exc:
            raise LogFormatError(f"{self.path}:{line_no}: {exc}") from None
        if conv.ncols != ncols:
            log.warning(
                "%s:%d: a new header (%d columns) replaces the old one (%d)",
                self.path,
                line_no,
                conv.ncols,
                ncols,
            )
        else:
            log.info("%s:%d: header repeated (Tstat restarted?)", self.path, line_no)
        self.stats.headers += 1
        return conv

    def _unended_line(self, f: io.BufferedIOBase, raw: bytes, line_no: int) -> int:
        """A line read without its newline: over-long, or the last of the file.

        An over-long line is read past and reported as a bad row: returns its
        length. Otherwise the file ends there (returns 0): a row Tstat is still
        writing (4 KiB stdio buffer), or the cut remains of a crash when the
        directory is complete.
        """
        if len(raw) == MAX_LINE_BYTES:
            length = _skip_line(f.readline, len(raw))
            if length:
                self._bad(
                    line_no, f"line of {length} bytes, longer than the limit of {MAX_LINE_BYTES}"
                )
                return length
        if self.complete and not getattr(f, "truncated", False):
            self._bad(line_no, "last line is cut short (no newline at end of file)")
        else:
            self.stats.incomplete_tail = True
        return 0

    def _read(
        self, f: io.BufferedIOBase, conv: RowConverter, header_offset: int, offset: int, lineno: int
    ) -> Iterator[Chunk]:
        """The rows from `offset` (line `lineno`) on, cut into chunks."""
        # Hot loop: one pass per row, so only locals and no per-row calls beyond
        # decoding, splitting and encoding.
        stats = self.stats
        skip = self.start.skip
        encode, ncols = conv.encode, conv.ncols
        cut, parts, spaces = conv.split_plan()
        buf: list[str] = []
        objs: list[str] | None
        nbytes = 0  # JSON characters in buf (ASCII: as many bytes)
        rows = 0  # counted locally, added to stats per chunk
        unsent = Position(offset, lineno, skip, header_offset)  # where buf's objects start
        readline = f.readline
        while True:
            raw = readline(MAX_LINE_BYTES)
            if not raw:
                break
            row_offset = offset
            offset += len(raw)
            line_no = lineno
            lineno += 1
            if raw[-1:] != b"\n":
                length = self._unended_line(f, raw, line_no)
                if length:  # an over-long line, read past
                    rows += 1
                    offset = row_offset + length
                    continue
                offset = row_offset
                lineno = line_no
                break
            text = raw.decode("latin-1")
            if text[0] == "#":
                conv = self._new_header(text, line_no, ncols)
                encode, ncols = conv.encode, conv.ncols
                cut, parts, spaces = conv.split_plan()
                header_offset = row_offset
                continue
            # The columns past the last one read stay one string with the line's end
            # (see split_plan): fewer objects made for each row, and no copy without
            # the newline nor look at a CR; the rare paths split it all.
            fields = text.split(" ", cut)
            if cut < 0:  # no rest: the last column is all the row's end
                fields = _columns(text)
            rows += 1
            if len(fields) == parts and fields[-1].count(" ") == spaces:
                try:
                    objs = encode(fields)
                except (ValueError, IndexError, ZeroDivisionError, OverflowError):
                    objs = self._slow_row(conv, _columns(text), line_no)
            else:
                self._bad(line_no, conv.explain(_columns(text)))
                objs = None
            row_skip = 0
            if skip:
                # Resuming inside this row: its first objects went out already.
                if objs:
                    del objs[:skip]
                row_skip, skip = skip, 0
            if not objs:
                if rows >= POLL_ROWS:
                    stats.rows += rows
                    rows = 0
                    if not buf:
                        unsent = Position(offset, lineno, 0, header_offset)
                    yield Chunk([], unsent)
                continue
            buf += objs
            for item in objs:
                nbytes += len(item)
            if len(buf) >= CHUNK_SIZE or nbytes > MESSAGE_TEXT_LIMIT:
                if nbytes <= MESSAGE_TEXT_LIMIT:
                    # The usual case, what cut_chunks gives at less cost: the count
                    # alone fills the chunk, which may end inside this row.
                    over = len(buf) - CHUNK_SIZE  # this row's objects past the chunk
                    if over:
                        end = Position(
                            row_offset, line_no, row_skip + len(objs) - over, header_offset
                        )
                    else:
                        end = Position(offset, lineno, 0, header_offset)
                    chunks = [Chunk(buf[:CHUNK_SIZE], end)]
                    buf = buf[CHUNK_SIZE:]
                else:
                    row = Position(row_offset, line_no, row_skip, header_offset)
                    after = Position(offset, lineno, 0, header_offset)
                    chunks, buf = cut_chunks(buf, len(objs), row, after)
                nbytes = sum(map(len, buf))
                for chunk in chunks:
                    stats.rows += rows
                    rows = 0
                    stats.objects += len(chunk.items)
                    unsent = chunk.end
                    yield chunk
        stats.rows += rows
        end = Position(offset, lineno, 0, header_offset)
        if buf:
            stats.objects += len(buf)
            yield Chunk(buf, end)
        self.end = end


def _columns(text: str) -> list[str]:
    """All the columns of a row (`text` ends in its newline), the CR of a CRLF dropped."""
    fields = text[:-1].split(" ")
    if fields[-1][-1:] == "\r":
        fields[-1] = fields[-1][:-1]
    return fields


def cut_chunks(
    buf: list[str], row_objects: int, row: Position, after: Position
) -> tuple[list[Chunk], list[str]]:
    """Cut the full chunks off `buf`; return them and the objects left over.

    The last `row_objects` objects of `buf` come from one row, starting at `row`
    (whose `skip` counts the row's objects sent before); `after` is the position
    past that row. The objects before that row fit in one chunk. A chunk is full
    at CHUNK_SIZE objects or when one more would take its body over
    MAX_MESSAGE_BYTES; cutting depends on the objects only, so chunks (and
    message ids) are the same on every run.
    """
    first = len(buf) - row_objects
    chunks: list[Chunk] = []

    def end_at(index: int) -> Position:
        if index == len(buf):
            return after
        assert index >= first, "the objects before the row fit in one chunk"
        return Position(row.offset, row.line, row.skip + index - first, row.header_offset)

    start, size = 0, 1  # size: the body's bytes so far, "[" included
    for index, item in enumerate(buf):
        if index > start and size + len(item) + 1 > MAX_MESSAGE_BYTES:
            chunks.append(Chunk(buf[start:index], end_at(index)))
            start, size = index, 1
        size += len(item) + 1
        if index + 1 - start == CHUNK_SIZE:
            chunks.append(Chunk(buf[start : index + 1], end_at(index + 1)))
            start, size = index + 1, 1
    return chunks, buf[start:]


def _skip_line(readline: Callable[[int], bytes], read: int) -> int:
    """Read past the rest of an over-long line in bounded pieces.

    Returns the line's length in bytes (`read` bytes were read already), or 0 if
    the file ends before its newline.
    """
    length = read
    while True:
        piece = readline(MAX_LINE_BYTES)
        if not piece:
            return 0
        length += len(piece)
        if piece[-1:] == b"\n":
            return length


_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _not_regular(path: Path, mode: int) -> LogFormatError:
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return LogFormatError(f"{path}: {kind}, not a regular file: only regular files are read")


class _GzipLog(gzip.GzipFile):
    """A .gz log read line by line; a stream that ends early reads as its end.

    Tstat -Z writes the file as it goes, so the newest directory's .gz ends in the
    middle of the compressed stream: what came before is good, and `truncated` says
    the file is not complete.
    """

    truncated = False

    def readline(self, size: int | None = -1) -> bytes:
        try:
            return super().readline(size)
        except EOFError:
            # The C buffered reader drops the bytes of the unfinished line: the
            # next run reads them again from the last complete row.
            self.truncated = True
            return b""


@contextlib.contextmanager
def open_log(path: Path) -> Iterator[io.BufferedIOBase]:
    """Open a log (plain or .gz) for reading, if it is a regular file.

    The open neither follows a symlink nor blocks (a FIFO would wait for a writer
    forever; a link to /dev/zero would never end). Raises LogFormatError naming
    the file when it is anything but a regular file, OSError otherwise.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symlink (O_NOFOLLOW), a socket
            raise _not_regular(path, os.lstat(path).st_mode) from None
        raise
    with os.fdopen(fd, "rb") as raw:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        os.set_blocking(fd, True)
        if not is_compressed(path):
            yield raw
            return
        with _GzipLog(fileobj=raw, mode="rb") as gz:
            yield gz


def is_compressed(path: Path) -> bool:
    """True for the `.gz` logs Tstat writes with -Z."""
    return path.name.endswith(".gz")


def locate_log(directory: Path, name: str) -> tuple[Path, int | None] | None:
    """The file holding log `name` in `directory`: `name`, or `name.gz` (Tstat -Z).

    Returns it with its size when that can be compared with offsets read from it
    (None for a .gz: offsets count uncompressed bytes), or None when neither
    exists. Raises LogFormatError when both exist (which one holds the flows is
    not ours to guess), OSError when the directory cannot be searched.
    """
    found = []
    for candidate in (directory / name, directory / f"{name}.gz"):
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            continue
        found.append((candidate, None if is_compressed(candidate) else st.st_size))
    if len(found) > 1:
        raise LogFormatError(
            f"{directory}: both {name} and {name}.gz exist: neither is sent until one is removed"
        )
    return found[0] if found else None


def finite_or_none(objects: list) -> int:
    """Replace NaN/Infinity (not JSON) by null in place; return how many were replaced."""
    replaced = 0
    for obj in objects:
        values = obj["values"]
        for key, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                values[key] = None
                replaced += 1
    return replaced
