"""A tstat_transport plugin (`-t jsonl`): append each message to a JSON Lines file.

Configuration, section `[jsonl]`::

    [jsonl]
    path = /var/spool/tstat/flows.jsonl   ; required; created if absent, always appended to
    window = 50                           ; messages written between two fsyncs (default 50)

Each message body (a JSON array of at most 100 flow objects) becomes one line.

Delivery guarantee: at-least-once. Messages are confirmed in batches of `window`, once fsync
has returned for them; a run that stops before that resends them next time, so the file can
hold a message twice (a consumer drops duplicates by content). A write error (disk full,
permissions) raises TransportError and can leave a partial last line, which readers skip.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tstat_transport.errors import TransportError
from tstat_transport.transports import Message, Transport

if TYPE_CHECKING:
    from tstat_transport.config import ConfigFile, Settings

SECTION = "jsonl"


class JsonlTransport(Transport):
    """Append each message as one line to `[jsonl] path`; confirm after fsync."""

    name = "jsonl"
    config_sections = {SECTION: {"path", "window"}}

    def __init__(self, settings: Settings, config: ConfigFile) -> None:
        # Validate here, without touching the file: errors are ConfigErrors naming the key.
        super().__init__(settings, config)
        self.path = Path(config.get_str(SECTION, "path"))
        self.window = config.get_int(SECTION, "window", 50, lo=1, hi=10_000)
        self._file: IO[bytes] | None = None
        self._pending: list[Message] = []

    def describe(self) -> str:
        return f"jsonl file {self.path}"

    def open(self) -> None:
        try:
            self._file = open(self.path, "ab")
        except OSError as exc:
            raise TransportError(f"{self.path}: cannot open for appending: {exc.strerror}") from exc

    def publish(self, message: Message) -> None:
        assert self._file is not None, "publish() before open()"
        # JSON allows no raw line break inside a string, so joining the lines keeps it intact.
        line = b" ".join(message.body.splitlines()) + b"\n"
        try:
            self._file.write(line)
        except OSError as exc:
            raise TransportError(f"{self.path}: cannot write: {exc.strerror}") from exc
        self._pending.append(message)
        if len(self._pending) >= self.window:  # the window is full: wait for the disk
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        assert self._file is not None, "flush() before open()"
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise TransportError(f"{self.path}: cannot write: {exc.strerror}") from exc
        confirmed, self._pending = self._pending, []
        for message in confirmed:
            self.on_confirm(message)

    def close(self) -> None:
        # Never raises; what was not confirmed is sent again by the next run.
        self._pending = []
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
