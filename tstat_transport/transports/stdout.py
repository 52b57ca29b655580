"""The stdout transport (`-N/--no-transport` or `-t stdout`): print messages, mark nothing.

Config section: none (it needs no config file).
Framing: one message per line, a compact JSON array of at most 100 flow objects
(JSON Lines, ready for `jq`); with --pretty, each message as the original printed
it (`json.dumps(list, indent=4)`), one after the other.
Delivery: none to an archive, so it never marks a directory `.processed` and writes
no progress state: a later real run still sends everything.
"""

from __future__ import annotations

import json
import sys
from typing import BinaryIO

from ..errors import OutputClosed
from .base import Message, Transport


class StdoutTransport(Transport):
    name = "stdout"
    needs_config = False
    marks_processed = False
    window = 1

    def __init__(self, settings, config, stream: BinaryIO | None = None) -> None:
        super().__init__(settings, config)
        self.pretty = settings.pretty
        self._stream = stream

    def describe(self) -> str:
        return "standard output"

    def open(self) -> None:
        if self._stream is None:
            self._stream = sys.stdout.buffer

    def _out(self) -> BinaryIO:
        if self._stream is None:
            raise RuntimeError("stdout transport used before open()")
        return self._stream

    def publish(self, message: Message) -> None:
        body = message.body
        if self.pretty:
            body = json.dumps(json.loads(body), indent=4).encode()
        try:
            out = self._out()
            out.write(body)
            out.write(b"\n")
        except BrokenPipeError:
            raise OutputClosed("standard output was closed (broken pipe)") from None
        self.on_confirm(message)

    def flush(self) -> None:
        try:
            self._out().flush()
        except BrokenPipeError:
            raise OutputClosed("standard output was closed (broken pipe)") from None

    def close(self) -> None:
        try:
            if self._stream is not None:
                self._stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass
