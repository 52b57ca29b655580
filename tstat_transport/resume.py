"""The resume state of one directory being sent (`.tstat_send.state`).

Per log file it records the position after the last message the archive confirmed in
order, how many messages that was, and the options the directory was started with,
so that a later run sends exactly the chunks that were not confirmed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from . import __version__
from .reader import Position
from .records import Options
from .state import STATE_NAME, read_json, write_json_atomic

log = logging.getLogger(__name__)

STATE_VERSION = 1


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
            changed = ", ".join(
                f"{k} {recorded.get(k)!r} -> {wanted[k]!r}" for k in wanted
                if recorded.get(k) != wanted[k]
            )  # fmt: skip
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

    def start_of(self, log_name: str, size: int) -> tuple[Position, int]:
        entry = self.files.get(log_name)
        if not entry:
            return Position(), 0
        pos = Position.from_json(entry)
        assert pos is not None
        if pos.offset > size:
            log.warning("%s/%s: file is shorter than the progress recorded for it "
                        "(%d < %d bytes): sending it from the start",
                        self.directory, log_name, size, pos.offset)  # fmt: skip
            del self.files[log_name]
            return Position(), 0
        return pos, entry["messages"]

    def confirm(self, log_name: str, end: Position, number: int, count: int) -> None:
        """Record message `number` (of `count` objects) confirmed in order: `log_name` is
        done up to `end`."""
        entry = self.files.setdefault(log_name, {"objects": 0})
        entry.update(end.to_json())
        entry["messages"] = number + 1
        entry["objects"] = entry.get("objects", 0) + count
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
