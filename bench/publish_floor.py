"""The publish floor: raw pika publishing of the benchmark's messages with pipelined confirms.

Messages are published persistent (delivery_mode 2) and mandatory to the default exchange,
routed to QUEUE (declared durable), with up to --window messages unconfirmed at once
(pika's SelectConnection, as in its asynchronous_publisher_example.py). It succeeds only if
every message was acked: a nack or a return (unroutable) makes it exit 1.

    python bench/publish_floor.py --messages FILE --queue Q      # one message per line
    python bench/publish_floor.py --root ROOT -T 0 --queue Q     # built on the fly like floor.py

With --messages (the harness's "publish floor") nothing is parsed: the lines were written by
floor.py beforehand, so this measures what the broker and pika accept. With --root it is a
straight-line end-to-end: floor.py's parse and format feeding the same publisher.
Prints one JSON line with what was published and confirmed.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pika
from pika.spec import Basic

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floor  # noqa: E402


def file_messages(path: str) -> Iterator[tuple[bytes, int]]:
    """One message per line; the flow count is taken from the text, not trusted from elsewhere."""
    with open(path, "rb") as f:
        for line in f:
            body = line.rstrip(b"\n")
            if body:
                yield body, body.count(b'"flow_type"')


def root_messages(root: str, threshold: float, sensor: str | None) -> Iterator[tuple[bytes, int]]:
    for text, count in floor.messages(root, threshold, sensor):
        yield text.encode(), count


class Publisher:
    """Publish everything from `source`, keeping at most `window` messages unconfirmed."""

    def __init__(
        self,
        params: pika.ConnectionParameters,
        queue: str,
        source: Iterator[tuple[bytes, int]],
        window: int,
    ):
        self.params = params
        self.queue = queue
        self.source = source
        self.window = window
        self.properties = pika.BasicProperties(
            content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent
        )
        self.unconfirmed: collections.deque[tuple[int, int]] = collections.deque()
        self.acked_early: set[int] = set()
        self.tag = 0
        self.exhausted = False
        self.result = {
            "messages": 0,
            "flows": 0,
            "acked_messages": 0,
            "acked_flows": 0,
            "nacked": 0,
            "returned": 0,
            "error": None,
        }
        self.connection: pika.SelectConnection | None = None
        self.channel = None

    def run(self) -> dict:
        self.connection = pika.SelectConnection(
            self.params,
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
        )
        self.connection.ioloop.start()
        return self.result

    def _fail(self, error: str) -> None:
        if self.result["error"] is None:
            self.result["error"] = error
        if self.connection is not None and not (
            self.connection.is_closing or self.connection.is_closed
        ):
            self.connection.close()

    def _on_open(self, connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_channel)

    def _on_open_error(self, connection: object, error: Exception) -> None:
        self.result["error"] = f"cannot connect: {error!r}"
        self.connection.ioloop.stop()

    def _on_closed(self, connection: object, reason: Exception) -> None:
        self.connection.ioloop.stop()

    def _on_channel(self, channel: object) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.queue_declare(self.queue, durable=True, callback=self._on_declared)

    def _on_channel_closed(self, channel: object, reason: Exception) -> None:
        if not self._done():
            self._fail(f"channel closed: {reason!r}")
        elif self.connection.is_open:
            self.connection.close()

    def _on_declared(self, frame: object) -> None:
        self.channel.confirm_delivery(self._on_confirm, callback=lambda frame: self._pump())

    def _on_return(self, channel: object, method: object, properties: object, body: bytes) -> None:
        # RabbitMQ sends basic.return before the ack of the same message: count it here.
        self.result["returned"] += 1

    def _on_confirm(self, frame: object) -> None:
        method = frame.method
        tag = method.delivery_tag
        if isinstance(method, Basic.Nack):
            self.result["nacked"] += 1
        if method.multiple:
            while self.unconfirmed and self.unconfirmed[0][0] <= tag:
                self._confirmed(self.unconfirmed.popleft()[1])
        else:
            self.acked_early.add(tag)
        while self.unconfirmed and self.unconfirmed[0][0] in self.acked_early:
            self.acked_early.discard(self.unconfirmed[0][0])
            self._confirmed(self.unconfirmed.popleft()[1])
        self._pump()

    def _confirmed(self, flows: int) -> None:
        self.result["acked_messages"] += 1
        self.result["acked_flows"] += flows

    def _done(self) -> bool:
        return self.exhausted and not self.unconfirmed

    def _pump(self) -> None:
        if self.result["error"] is not None:
            return
        while not self.exhausted and len(self.unconfirmed) < self.window:
            item = next(self.source, None)
            if item is None:
                self.exhausted = True
                break
            body, flows = item
            self.channel.basic_publish("", self.queue, body, self.properties, mandatory=True)
            self.tag += 1
            self.unconfirmed.append((self.tag, flows))
            self.result["messages"] += 1
            self.result["flows"] += flows
        if self._done():
            self.connection.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--messages", help="file of messages, one JSON array per line")
    src.add_argument("--root", help="Tstat root: build the messages like floor.py")
    p.add_argument("-T", "--threshold", type=float, default=1000, metavar="MBYTES")
    p.add_argument("-S", "--sensor", default=None)
    p.add_argument("--queue", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5672)
    p.add_argument("--vhost", default="/")
    p.add_argument("--user", default="guest")
    p.add_argument("--password", default="guest")
    p.add_argument("--window", type=int, default=256, help="unconfirmed messages at most")
    a = p.parse_args(argv)
    params = pika.ConnectionParameters(
        host=a.host,
        port=a.port,
        virtual_host=a.vhost,
        credentials=pika.PlainCredentials(a.user, a.password),
        heartbeat=60,
        blocked_connection_timeout=60,
    )
    source = (
        file_messages(a.messages) if a.messages else root_messages(a.root, a.threshold, a.sensor)
    )
    t0 = time.perf_counter()
    result = Publisher(params, a.queue, source, a.window).run()
    result["seconds"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(result))
    ok = (
        result["error"] is None
        and result["nacked"] == 0
        and result["returned"] == 0
        and result["acked_messages"] == result["messages"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
