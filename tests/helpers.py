"""Test helpers: a real in-memory transport for driving the sender without a broker."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from tstat_transport.config import ConfigFile, Settings
from tstat_transport.errors import TransportError, TransportUnavailable
from tstat_transport.state import STATE_NAME
from tstat_transport.transports import Message, Transport


def under_ci() -> bool:
    """True under CI: any non-empty CI other than 0/false/no (CI=true, CI=1, CI=yes...)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


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


class FaultyTransport(ListTransport):
    """A receiver that misbehaves the ways a real one can; the faults are class attributes,
    so that `register()` can hand a configured class to the CLI by name.

    - `fail_flush_at=N`: the N-th flush (one per directory) confirms the older half of
      what is in flight, then the connection drops (TransportUnavailable).
    - `fail_after=N`: the (N+1)-th publish finds the connection gone; first, as the
      RabbitMQ transport does, the acks already on their way are collected: every
      message in flight but the newest is confirmed (none with `collect = False`).
    - `nack_at=N`: the receiver refuses the N-th message (0-based): everything before it
      is confirmed, then TransportError, as for a nack.
    - `reverse`: a full window is confirmed newest first, and its oldest message only
      with the next window (acks out of order).
    - `batch`: a full window is confirmed all at once, as one ack with `multiple` does.
    - `lag=N`: each message is confirmed once N newer ones are out, however wide the
      window (a receiver that answers quickly).
    - `flush_leaves=N`: flush returns with the newest N messages still unconfirmed and
      no error (a transport that breaks its contract).
    Every message confirmed is kept in `confirmed`, in the order confirmed. With
    `watch_state`, each publish first notes in `lags` how many messages of the current
    log were confirmed in order beyond what the directory's state file on disk records.
    """

    name = "faulty"
    window = 4
    fail_after: int | None = None
    fail_flush_at: int | None = None
    nack_at: int | None = None
    collect = True
    reverse = False
    batch = False
    lag: int | None = None
    flush_leaves = 0
    watch_state = False
    instances: list[FaultyTransport] = []

    def __init__(
        self,
        settings: Settings,
        config: ConfigFile | None = None,
        window: int | None = None,
        fail_after: int | None = None,
    ):
        super().__init__(
            settings,
            window or type(self).window,
            type(self).fail_after if fail_after is None else fail_after,
        )
        self.flushes = 0
        self.lags: list[int] = []
        self.confirmed: list[Message] = []
        self.held: list[Message] = []  # confirmed late on purpose (`reverse`)
        type(self).instances.append(self)

    def _confirm(self, message: Message) -> None:
        self.inflight.remove(message)
        self.confirmed.append(message)
        self.on_confirm(message)

    def _state_lag(self, message: Message) -> int:
        directory, log = message.headers["tstat_directory"], message.headers["tstat_log"]
        done = {id(m) for m in self.confirmed}
        confirmed = 0
        for sent in self.received:
            if sent.headers["tstat_directory"] == directory and sent.headers["tstat_log"] == log:
                if id(sent) not in done:
                    break
                confirmed += 1
        try:
            state = json.loads((self.settings.directory / directory / STATE_NAME).read_text())
            saved = state["files"][log]["messages"]
        except (FileNotFoundError, KeyError):
            saved = 0
        return confirmed - saved

    def publish(self, message: Message) -> None:
        if self.watch_state:
            self.lags.append(self._state_lag(message))
        if self.fail_after is not None and len(self.received) >= self.fail_after:
            for old in self.inflight[:-1] if self.collect else []:
                self._confirm(old)
            raise TransportUnavailable("faulty transport: connection lost (test)")
        if self.nack_at is not None and len(self.received) == self.nack_at:
            for old in list(self.inflight):
                self._confirm(old)
            raise TransportError(f"faulty transport: message {message.message_id} nacked (test)")
        self.received.append(message)
        self.inflight.append(message)
        if self.lag is not None:
            while len(self.inflight) > self.lag:
                self._confirm(self.inflight[0])
        if len(self.inflight) < self.window:
            return
        if self.batch:
            for old in list(self.inflight):
                self._confirm(old)
        elif self.reverse:
            for old in self.held:
                self._confirm(old)
            self.held = self.inflight[:1]
            for old in reversed(self.inflight[1:]):
                self._confirm(old)
        else:
            self._confirm(self.inflight[0])

    def flush(self) -> None:
        self.flushes += 1
        if self.fail_flush_at == self.flushes:
            for old in self.inflight[: len(self.inflight) // 2]:
                self._confirm(old)
            raise TransportUnavailable("faulty transport: connection lost in flush (test)")
        for old in self.inflight[: len(self.inflight) - self.flush_leaves]:
            self._confirm(old)
        self.held = []


def register(monkeypatch, **faults) -> type[FaultyTransport]:
    """A FaultyTransport with `faults`, registered as `-t faulty` for this test."""
    import tstat_transport.transports as registry

    cls = type("ConfiguredFaultyTransport", (FaultyTransport,), {**faults, "instances": []})
    monkeypatch.setattr(sys.modules[__name__], "ConfiguredFaultyTransport", cls, raising=False)
    monkeypatch.setitem(registry.BUILTIN, "faulty", "helpers:ConfiguredFaultyTransport")
    return cls


# -- flow values worked out by hand from the raw columns (doc/message-format.md) ---------


# The values of a TCP object at Tstat's core level (#00#), in order: what every level has.
CORE_TCP = [
    "duration",
    "num_bits",
    "num_packets",
    "bits_per_second",
    "packets_per_second",
    "tcp_rexmit_bytes",
    "tcp_rexmit_pkts",
    "tcp_rexmit_rate",
    "tcp_syn_cnt",
    "tcp_out_seq_pkts",
]


def raw_rows(root: Path, log: str) -> dict[tuple[str, int], dict[str, str]]:
    """Every row of `log` in every directory, as column name -> text, keyed by client.

    Where a name repeats (the advanced level), the first column of that name counts.
    """
    rows = {}
    for path in sorted(root.glob(f"*/{log}")):
        lines = path.read_text().splitlines()
        if not lines:
            continue
        names = [item.rsplit(":", 1)[0] for item in lines[0].lstrip("#").split("#")[-1].split()]
        for line in lines[1:]:
            row: dict[str, str] = {}
            for name, value in zip(names, line.split(" ")):
                row.setdefault(name, value)
            rows[(row["c_ip"], int(row["c_port"]))] = row
    return rows


def ms(text: str) -> float:
    """A `%f` column as used: rounded to 3 decimals (doc/message-format.md, Numbers)."""
    return round(float(text), 3)


def rate(amount: int, seconds: float) -> float:
    return round(amount / seconds, 2) if seconds else 0


def by_hand_tcp(row: dict[str, str], d: str) -> dict:
    seconds = ms(row["durat"]) / 1000  # Tstat writes TCP times in ms
    bits = int(row[d + "bytes_uniq"]) * 8
    packets = int(row[d + "pkts_data"])
    return {
        "duration": round(seconds, 2),
        "num_bits": bits,
        "num_packets": packets,
        "bits_per_second": rate(bits, seconds),
        "packets_per_second": rate(packets, seconds),
        "tcp_rexmit_bytes": int(row[d + "bytes_retx"]),
        "tcp_rexmit_pkts": int(row[d + "pkts_retx"]),
        # 0.6.8's additions: retransmitted / data packets, unrounded, 0 unless both are set.
        "tcp_rexmit_rate": (
            int(row[d + "pkts_retx"]) / packets if int(row[d + "pkts_retx"]) and packets else 0
        ),
        "tcp_syn_cnt": int(row[d + "syn_cnt"]),
        "tcp_out_seq_pkts": int(row[d + "pkts_ooo"]),
    }


def by_hand_udp(row: dict[str, str], d: str) -> dict:
    # Tstat writes UDP durations in seconds; rates use them at full precision.
    seconds = float(row[d + "durat"])
    bits = int(row[d + "bytes_all"]) * 8
    packets = int(row[d + "pkts_all"])
    return {
        "duration": round(seconds, 2),
        "num_bits": bits,
        "num_packets": packets,
        "bits_per_second": rate(bits, seconds),
        "packets_per_second": rate(packets, seconds),
    }


def settle(root: Path, seconds_ago: float = 86400) -> None:
    """Date every log under `root` back, as logs Tstat finished with long ago are: a copy
    (or a fresh checkout of the data) would otherwise be within tstat_send's settle period."""
    when = time.time() - seconds_ago
    for path in root.rglob("log_*"):
        os.utime(path, (when, when), follow_symlinks=False)


def snapshot(top: Path) -> dict[str, tuple[int, int]]:
    """Every path below `top` (links not followed) with its size and mtime in ns."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            result[str(path.relative_to(top))] = (st.st_size, st.st_mtime_ns)
    return result
