"""Test helpers: a real in-memory transport for driving the sender without a broker."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tstat_transport.config import ConfigFile, Settings
from tstat_transport.errors import TransportUnavailable
from tstat_transport.transports import Message, Transport


class ListTransport(Transport):
    """Keeps every message it receives; confirms with a lag of `window` messages.

    `fail_after=N` makes the N+1th publish fail as a lost connection does: the
    messages still in flight count as received (they may have reached the
    archive) but are never confirmed.
    """

    name = "list"
    needs_config = False
    marks_processed = True

    def __init__(self, settings: Settings, window: int = 4, fail_after: int | None = None):
        super().__init__(settings, ConfigFile(None))
        self.window = window
        self.fail_after = fail_after
        self.received: list[Message] = []
        self.inflight: list[Message] = []
        self.opened = self.closed = False

    def open(self) -> None:
        self.opened = True

    def publish(self, message: Message) -> None:
        if self.fail_after is not None and len(self.received) >= self.fail_after:
            raise TransportUnavailable("list transport: connection lost (test)")
        self.received.append(message)
        self.inflight.append(message)
        while len(self.inflight) >= self.window:
            self.on_confirm(self.inflight.pop(0))

    def flush(self) -> None:
        while self.inflight:
            self.on_confirm(self.inflight.pop(0))

    def close(self) -> None:
        self.closed = True

    def objects(self) -> list[dict]:
        return [obj for m in self.received for obj in json.loads(m.body)]


def settings(root: Path, **kw) -> Settings:
    kw.setdefault("threshold_mb", 0.0)
    kw.setdefault("sensor", "testsensor")
    kw.setdefault("include_newest", True)
    return Settings(directory=root, transport="list", **kw)


def jsonl_objects(text: str) -> list[dict]:
    """The flow objects of `tstat_send -N` output (one JSON array per line)."""
    return [obj for line in text.splitlines() if line for obj in json.loads(line)]


def settle(root: Path, seconds_ago: float = 86400) -> None:
    """Date every log under `root` back, as logs Tstat finished with long ago are: a copy
    (or a fresh checkout of the data) would otherwise be within tstat_send's settle period."""
    when = time.time() - seconds_ago
    for path in root.rglob("log_*"):
        os.utime(path, (when, when), follow_symlinks=False)
