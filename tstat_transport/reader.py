"""Read one Tstat log file as a stream of chunks of at most 100 flow objects.

Memory stays flat: the file is read line by line and only the chunk being filled
is held. Each chunk comes with the position where the next one starts, so the
sender can record how far the archive has confirmed and a later run can resume
there (by byte offset) instead of re-reading or re-sending the file.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .records import LogFormatError, Options, RowConverter, compile_converter

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode

log = logging.getLogger(__name__)

CHUNK_SIZE = 100  # flow objects per message, as the original
# Bad rows reported one by one per file; past that, one line with the total.
MAX_REPORTED = 10


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
        return {"offset": self.offset, "line": self.line, "skip": self.skip,
                "header_offset": self.header_offset}  # fmt: skip

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
            log.warning("%s:%d: %d NaN/Infinity value(s) sent as null (JSON has neither)",
                        self.path, line_no, replaced)  # fmt: skip
        return [_dumps(obj) for obj in objects]

    def _header_at(self, f, offset: int) -> RowConverter:
        f.seek(offset)
        raw = f.readline()
        if not raw:
            raise LogFormatError("header line missing")
        return compile_converter(self.protocol, parse_header(raw.decode("latin-1")), self.options)

    def chunks(self) -> Iterator[Chunk]:
        """Yield the chunks from `start` on; the last one may be short.

        Raises LogFormatError (naming file and line) for a header it cannot use;
        chunks yielded before stay valid. OSError propagates.
        """
        try:
            yield from self._chunks()
        except LogFormatError as exc:
            if not str(exc).startswith(str(self.path)):
                raise LogFormatError(f"{self.path}:{exc}") from None
            raise

    def _chunks(self) -> Iterator[Chunk]:
        stats = self.stats
        with open(self.path, "rb") as f:
            if self.start.offset == 0:
                first = f.readline()
                if not first:
                    self.end = Position()
                    return  # 0 bytes: Tstat has not flushed anything yet
                if not first.endswith(b"\n"):
                    if self.complete:
                        self._bad(1, "file holds only part of its header line")
                    else:
                        stats.incomplete_tail = True
                    self.end = Position()
                    return
                try:
                    conv = compile_converter(
                        self.protocol, parse_header(first.decode("latin-1")), self.options
                    )
                except LogFormatError as exc:
                    raise LogFormatError(f"{self.path}:1: {exc}") from None
                header_offset, offset, lineno = 0, len(first), 2
            else:
                try:
                    conv = self._header_at(f, self.start.header_offset)
                except LogFormatError as exc:
                    raise LogFormatError(
                        f"{self.path}: cannot resume: the header at byte "
                        f"{self.start.header_offset} is gone ({exc}); the file changed "
                        "since the last run"
                    ) from None
                header_offset, offset, lineno = (
                    self.start.header_offset, self.start.offset, self.start.line
                )  # fmt: skip
                f.seek(offset)
            skip = self.start.skip
            encode, ncols = conv.encode, conv.ncols
            buf: list = []
            rows = 0  # counted locally, added to stats per chunk
            for raw in f:
                row_offset = offset
                offset += len(raw)
                line_no = lineno
                lineno += 1
                if raw[-1:] != b"\n":
                    # A row Tstat is still writing (4 KiB stdio buffer), or the cut
                    # remains of a crash when the directory is complete.
                    if self.complete:
                        self._bad(line_no, "last line is cut short (no newline at end of file)")
                    else:
                        stats.incomplete_tail = True
                    offset = row_offset
                    lineno = line_no
                    break
                text = raw.decode("latin-1")
                if text[0] == "#":
                    # Tstat restarted into the same file: adopt the new header.
                    try:
                        conv = compile_converter(self.protocol, parse_header(text), self.options)
                    except LogFormatError as exc:
                        raise LogFormatError(f"{self.path}:{line_no}: {exc}") from None
                    if conv.ncols != ncols:
                        log.warning("%s:%d: a new header (%d columns) replaces the old one (%d)",
                                    self.path, line_no, conv.ncols, ncols)  # fmt: skip
                    else:
                        log.info("%s:%d: header repeated (Tstat restarted?)", self.path, line_no)
                    stats.headers += 1
                    encode, ncols = conv.encode, conv.ncols
                    header_offset = row_offset
                    continue
                fields = text[:-1].split(" ")
                if fields[-1][-1:] == "\r":
                    fields[-1] = fields[-1][:-1]
                rows += 1
                if len(fields) != ncols:
                    self._bad(line_no, conv.explain(fields))
                    continue
                try:
                    objs = encode(fields)
                except (ValueError, IndexError, ZeroDivisionError, OverflowError):
                    objs = self._slow_row(conv, fields, line_no)
                    if objs is None:
                        continue
                if skip:
                    del objs[:skip]
                    skip = 0
                if not objs:
                    continue
                buf += objs
                if len(buf) >= CHUNK_SIZE:
                    if len(buf) == CHUNK_SIZE:
                        end = Position(offset, lineno, 0, header_offset)
                        chunk, buf = buf, []
                    else:  # the chunk ends between this row's two directions
                        taken = len(objs) - (len(buf) - CHUNK_SIZE)
                        end = Position(row_offset, line_no, taken, header_offset)
                        chunk, buf = buf[:CHUNK_SIZE], buf[CHUNK_SIZE:]
                    stats.rows += rows
                    stats.objects += len(chunk)
                    yield Chunk(chunk, end)
                    rows = 0
            stats.rows += rows
            if buf:
                stats.objects += len(buf)
                yield Chunk(buf, Position(offset, lineno, 0, header_offset))
            self.end = Position(offset, lineno, 0, header_offset)


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
