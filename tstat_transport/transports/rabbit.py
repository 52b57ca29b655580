"""RabbitMQ transport: publish each message to an AMQP 0-9-1 broker with publisher confirms.

Config sections (every key and its default in doc/rabbitmq.md; parsed by rabbit_settings):

- `[rabbit]`: host (comma-separated cluster nodes, each optionally `host:port`), port,
  username, password, use_ssl, vhost, queue, routing_key, exchange, and the bounds that
  keep a cron run from hanging: window, connect_retries, retry_delay, timeout,
  heartbeat, blocked_connection_timeout, confirm_timeout, nack_retries.
- `[rabbit_queue_options]`: durable, exclusive, auto_delete, passive (booleans); any
  other key is a queue argument (`x-queue-type = quorum`), which starts with x-.
- `[ssl_options]`: ca_certs, certfile, keyfile, server_hostname, verify (or the
  original's `cert_reqs = CERT_NONE`).

Delivery guarantees: every message is published persistent (delivery_mode 2) and
`mandatory`, on a channel in confirm mode. A message is reported through `on_confirm`
only once the broker has acked it and did not return it as unroutable, so a confirmed
message is held by at least one queue. Up to `window` messages are in flight at once.
A connection lost mid-run is opened again (another node first) and the messages that
were in flight are published again with the same `message_id`; a nacked message is
published again after a pause. Both are bounded (connect_retries, nack_retries,
confirm_timeout); past the bounds the run stops and the next one resends what was not
confirmed (at-least-once; `message_id` lets a consumer drop the duplicate).

Only this module imports pika. The SelectConnection is driven by our own loop
(`_drive`), the way pika's BlockingConnection drives it internally, so acks are
handled as they arrive without waiting for each one before the next publish. The
bookkeeping of confirms is in confirms.py, which does no I/O.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, NoReturn

import pika
import pika.exceptions
import pika.frame
import pika.spec
from pika.adapters.select_connection import IOLoop, SelectConnection
from pika.adapters.utils import connection_workflow

from ..errors import ConfigError, TransportError, TransportUnavailable
from . import framing
from .base import Message, Transport
from .confirms import ConfirmTracker
from .rabbit_settings import CONFIG_SECTIONS, RABBIT, Node, RabbitSettings
from .rabbit_settings import reason as reason_of

if TYPE_CHECKING:
    from ..config import ConfigFile, Settings

log = logging.getLogger(__name__)

# AMQP reply codes that mean "try again later" rather than "fix the configuration".
_TEMPORARY_CODES = {
    320,  # CONNECTION_FORCED: the broker is shutting down or an admin closed us
    541,  # INTERNAL_ERROR: the broker failed, not our request
}
# getaddrinfo's answers for a name that does not exist (as opposed to EAI_AGAIN, a
# resolver that failed for the moment).
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


class Refused(TransportError):
    """The broker refused a request (an AMQP reply code): an operator must act."""

    def __init__(self, message: str, reply_code: int) -> None:
        super().__init__(message)
        self.reply_code = reply_code


class ConnectionLost(TransportUnavailable):
    """A connection that was open went away: opening another one may get further."""


class NoSuchHost(TransportUnavailable):
    """DNS says the host name does not exist: retrying it will not help."""


@dataclass(frozen=True)
class _Step:
    """What the transport is doing, for error lines and for choosing a hint."""

    doing: str
    subject: str = ""  # "queue" or "exchange" when the step is about one


_PUBLISHING = _Step("publishing")


class RabbitTransport(Transport):
    """Publish to RabbitMQ with publisher confirms and a bounded window of unconfirmed messages.

    Raises ConfigError from `__init__` (and from `open()` when no host name exists),
    TransportUnavailable (broker down, unreachable, connection lost beyond the
    retries, no confirm within confirm_timeout) or TransportError (refused login,
    vhost, queue or exchange, a persistent nack on a full queue, an unroutable
    message, a certificate that does not verify) from the rest.
    """

    name: ClassVar[str] = "rabbit"
    config_sections: ClassVar[dict[str, set[str] | None]] = CONFIG_SECTIONS

    def __init__(self, settings: Settings, config: ConfigFile) -> None:
        super().__init__(settings, config)
        self.rabbit = RabbitSettings.from_config(config)
        self.window = self.rabbit.window
        self._loop: IOLoop | None = None
        self._conn: SelectConnection | None = None
        self._channel: Any = None
        self._node: Node | None = None
        self._step = _Step("connecting")
        self._tracker = ConfirmTracker()
        # Confirmed messages not yet reported: on_confirm runs from our own code, never
        # from inside pika's frame handling.
        self._confirmed: collections.deque[Message] = collections.deque()
        # Nacked messages waiting to be published again: (when, sequence, message).
        self._retries: list[tuple[float, int, Message]] = []
        self._nacks: dict[str, int] = {}  # message_id -> times nacked in this run
        self._sequence = itertools.count()
        self._failure: TransportError | None = None
        self._events = 0  # counts acks, nacks, returns and closes: "something happened"
        self._last_progress = time.monotonic()  # confirm_timeout counts from here
        self._reconnects_left = 1 + self.rabbit.connect_retries
        self._blocked = False  # a broker alarm: blocked_connection_timeout bounds the wait
        # One pass of the I/O loop costs about as much as framing a message: publishes
        # go out together every window / 8 (at most 8) messages, well inside the window.
        self._pump_every = max(1, min(8, self.window // 8))
        self._unpumped = 0
        self._publish_frame: bytes | None = None  # basic.publish, marshalled for the channel
        # Frames of the messages published since the last pass of the loop, handed to the
        # connection as one write (one socket send, one wake-up of the broker): about half
        # the transport's CPU per message of one write each. At most _pump_every messages
        # or OUTGOING_BYTES, whichever comes first; they belong to the current channel.
        self._outgoing: list[bytes] = []
        self._outgoing_bytes = 0

    # -- what the operator sees ----------------------------------------------------

    def describe(self) -> str:
        """`amqp://user@host:port/vhost queue=... exchange=...`, never the password."""
        return self.rabbit.describe()

    def _where(self, node: Node | None = None) -> str:
        node = node or self._node
        hosts = str(node) if node else ",".join(str(n) for n in self.rabbit.nodes)
        return f"rabbit {hosts} (vhost {self.rabbit.vhost!r}, user {self.rabbit.username!r})"

    # -- connection ----------------------------------------------------------------

    def open(self) -> None:
        """Connect to the first node that answers and set up the channel.

        Unavailable nodes are tried in turn, for 1 + connect_retries rounds with an
        exponential backoff between rounds; refusals (login, vhost, queue) stop at once.
        Raises TransportUnavailable, TransportError, or ConfigError when no host name
        of the list exists.
        """
        self._open(check_only=False)

    def _open(self, check_only: bool) -> str:
        if self._loop is None:
            self._loop = IOLoop()
            self._loop.activate_poller()
        try:
            return self._open_any_node(check_only)
        except BaseException:
            # `with transport:` does not call __exit__ when open() raises.
            self.close()
            raise

    def _open_any_node(self, check_only: bool, first: int = 0) -> str:
        settings = self.rabbit
        nodes = settings.nodes[first:] + settings.nodes[:first]
        failures: list[str] = []
        missing: list[Node] = []  # names DNS says do not exist: not tried again
        last: TransportUnavailable | None = None
        rounds = 1 + settings.connect_retries
        for attempt in range(rounds):
            candidates = [node for node in nodes if node not in missing]
            if not candidates:
                break
            if attempt:
                delay = settings.retry_pause(attempt)
                # Only with -v: cron mails the one line that ends the run, not each retry.
                log.info(
                    "no RabbitMQ node reachable (last: %s); retry %d of %d in %gs",
                    failures[-1],
                    attempt,
                    settings.connect_retries,
                    delay,
                )
                time.sleep(delay)
            for node in candidates:
                try:
                    self._connect(node)
                    report = self._setup_channel(check_only)
                except TransportUnavailable as exc:
                    last = exc
                    failures.append(str(exc))
                    log.info("%s", exc)
                    self._drop_connection()
                    if isinstance(exc, NoSuchHost):
                        missing.append(node)
                    continue
                for node in missing:
                    log.warning(
                        "%s: [%s] host %r does not exist (DNS): remove or fix it",
                        settings.config_name,
                        RABBIT,
                        node.host,
                    )
                return report
        tried = "; ".join(dict.fromkeys(failures))  # same failure each round: say it once
        if len(missing) == len(nodes):
            names = ", ".join(repr(node.host) for node in missing)
            raise ConfigError(
                f"{settings.config_name}: [{RABBIT}] host: no such host name {names} "
                "(DNS says it does not exist): fix [rabbit] host"
            ) from (last.__cause__ if last else None)
        raise TransportUnavailable(
            f"cannot reach RabbitMQ after {rounds} round(s) over {len(nodes)} node(s): {tried}"
        ) from (last.__cause__ if last else None)

    def _connect(self, node: Node) -> None:
        settings = self.rabbit
        self._node = node
        self._failure = None
        self._step = _Step("connecting")
        ssl_options = None
        if settings.ssl_context is not None:
            ssl_options = pika.SSLOptions(
                settings.ssl_context, settings.server_hostname or node.host
            )
        params = pika.ConnectionParameters(
            host=node.host,
            port=node.port,
            virtual_host=settings.vhost,
            credentials=pika.PlainCredentials(settings.username, settings.password),
            ssl_options=ssl_options,
            heartbeat=settings.heartbeat,
            blocked_connection_timeout=settings.blocked_connection_timeout,
            socket_timeout=settings.timeout,
            stack_timeout=settings.timeout,
            connection_attempts=1,
            client_properties={"connection_name": "tstat_transport " + socket.gethostname()},
        )
        outcome: dict[str, Any] = {}
        log.debug("%s: connecting", self._where(node))
        self._conn = SelectConnection(
            params,
            on_open_callback=lambda conn: outcome.setdefault("ok", conn),
            on_open_error_callback=lambda conn, exc: outcome.setdefault("error", exc),
            on_close_callback=self._on_connection_closed,
            custom_ioloop=self._loop,
        )
        self._wait(lambda: bool(outcome), settings.timeout + 1)
        if "error" in outcome:
            raise self._open_error(outcome["error"]) from outcome["error"]
        self._blocked = False
        self._conn.add_on_connection_blocked_callback(self._on_blocked)
        self._conn.add_on_connection_unblocked_callback(self._on_unblocked)
        log.info("connected to %s%s", self._where(node), " over TLS" if settings.use_ssl else "")

    def _setup_channel(self, check_only: bool) -> str:
        """Open the channel, check the exchange, declare (or check) the queue, enable confirms."""
        channel = self._open_channel()
        report = []
        if self.rabbit.exchange:
            report.append(self._check_exchange(channel))
        if self.rabbit.queue:
            report.append(self._declare_queue(channel, check_only))
        if not check_only:
            self._rpc(
                lambda cb: channel.confirm_delivery(self._on_ack_nack, callback=cb),
                _Step("enabling publisher confirms"),
            )
        self._step = _PUBLISHING
        return ", ".join(report) or "connected"

    def _open_channel(self) -> Any:
        assert self._conn is not None
        opened: list[Any] = []
        self._step = _Step("opening a channel")
        self._conn.channel(on_open_callback=opened.append)
        self._wait(lambda: bool(opened), self.rabbit.timeout)
        channel = self._channel = opened[0]
        self._publish_frame = None
        self._drop_outgoing()
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        return channel

    def _check_exchange(self, channel: Any) -> str:
        exchange = self.rabbit.exchange
        # We never declare an exchange (its type and owner are the archive's); a
        # passive declare fails with 404 when it is missing.
        self._rpc(
            lambda cb: channel.exchange_declare(exchange, passive=True, callback=cb),
            _Step(f"checking exchange {exchange!r}", "exchange"),
        )
        return f"exchange {exchange!r} exists"

    def _declare_queue(self, channel: Any, check_only: bool) -> str:
        """Declare the queue (or only check it exists) and bind it; say what it holds."""
        settings = self.rabbit
        passive = settings.passive or check_only
        what = "checking" if passive else "declaring"
        try:
            ok = self._rpc(
                lambda cb: channel.queue_declare(
                    settings.queue,
                    passive=passive,
                    arguments=None if passive else settings.queue_arguments,
                    callback=cb,
                    **settings.queue_flags,
                ),
                _Step(f"{what} queue {settings.queue!r}", "queue"),
            )
        except Refused as exc:
            if not (check_only and not settings.passive and exc.reply_code == 404):
                raise
            return f"queue {settings.queue!r} does not exist yet (the first run declares it)"
        if settings.exchange and not passive:
            # A queue we declare is bound to the exchange, so a fresh broker works
            # without manual set-up; binding again is a no-op. With passive = true
            # the archive owns the topology and we change nothing.
            self._rpc(
                lambda cb: channel.queue_bind(
                    settings.queue, settings.exchange, settings.routing_key, callback=cb
                ),
                _Step(
                    f"binding queue {settings.queue!r} to exchange {settings.exchange!r}",
                    "queue",
                ),
            )
        return (
            f"queue {settings.queue!r} has {ok.method.message_count} message(s) "
            f"and {ok.method.consumer_count} consumer(s)"
        )

    def _rpc(self, call: Callable[[Callable[[Any], None]], None], step: _Step) -> Any:
        replies: list[Any] = []
        self._step = step
        call(replies.append)
        self._wait(lambda: bool(replies), self.rabbit.timeout)
        return replies[0]

    # -- the loop ------------------------------------------------------------------

    def _drive(self, stop: Callable[[], bool], deadline: float) -> bool:
        """Run the I/O loop until `stop()` (True) or until time.monotonic() passes `deadline`."""
        loop = self._loop
        assert loop is not None
        self._write_out()
        fired: list[bool] = []
        timer = None
        try:
            while not stop():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if timer is None:
                    # Wakes poll() up at the deadline at the latest; armed once, not per
                    # poll. Capped, as the deadline may be infinite (broker blocking us).
                    timer = loop.call_later(min(left, 5.0), lambda: fired.append(True))
                loop.poll()
                loop.process_timeouts()
                if fired:
                    fired.clear()
                    timer = None
            return True
        finally:
            if timer is not None:
                loop.remove_timeout(timer)

    def _wait(self, done: Callable[[], bool], timeout: float) -> None:
        """Run the I/O loop until `done()` during set-up; raise the first failure."""
        finished = self._drive(
            lambda: self._failure is not None or done(), time.monotonic() + timeout
        )
        if self._failure is not None:
            raise self._failure
        if not finished:
            raise TransportUnavailable(
                f"{self._where()}: no answer within {timeout:g}s while {self._step.doing} "
                "(see [rabbit] timeout)"
            )

    def _pump(self) -> None:
        """One pass of the I/O loop that does not block: send what is queued, read acks."""
        loop = self._loop
        assert loop is not None
        self._write_out()
        # A zero-delay timer makes poll() return at once, as BlockingConnection does
        # for process_data_events(0).
        loop.call_later(0, _nothing)
        loop.poll()
        loop.process_timeouts()

    # -- delivery ------------------------------------------------------------------

    def publish(self, message: Message) -> None:
        """Send `message`; block only while `window` messages are unconfirmed.

        Raises TransportError or TransportUnavailable (after reporting every message
        confirmed before the failure).
        """
        if self._loop is None:
            raise TransportError(f"{self._where()}: publish() before open()")
        if len(self._tracker) + len(self._retries) >= self.window:
            self._settle_until(lambda: len(self._tracker) + len(self._retries) < self.window)
        else:
            self._settle()
        self._send(message)
        self._unpumped += 1
        if self._unpumped >= self._pump_every:
            self._unpumped = 0
            self._pump()
            self._settle()

    def flush(self) -> None:
        """Return once every published message is confirmed.

        Raises TransportError or TransportUnavailable.
        """
        if self._loop is None:
            return
        self._settle_until(lambda: not self._tracker and not self._retries)

    def poll(self) -> None:
        """Answer heartbeats and collect confirms without blocking (the sender is reading)."""
        if self._conn is None:
            return
        self._pump()
        self._settle()
        if self._tracker and time.monotonic() >= self._confirm_deadline():
            self._fail(self._confirm_timeout_error())

    def _send(self, message: Message) -> None:
        if not self._tracker:
            self._last_progress = time.monotonic()  # the clock starts with the oldest unconfirmed
        # Tracked even when it cannot go out: a lost connection is then recovered by
        # _settle(), which publishes every unconfirmed message again on the new one.
        self._tracker.published(message)
        if self._channel is None:
            self._record(self._lost("no open channel"))
            return
        try:
            if not (self._channel.is_open and self._conn is not None and self._conn.is_open):
                raise pika.exceptions.ChannelWrongStateError("channel or connection is closed")
            self._write_publish(message)
        except pika.exceptions.AMQPError as exc:
            self._record(self._lost(f"lost while publishing: {exc!r}"), exc)

    def _write_publish(self, message: Message) -> None:
        """Frame one basic.publish; it goes out with the next write (_write_out).

        What Channel.basic_publish does, cheaper: the method frame is the same for every
        message and built once per channel, the content header is assembled by framing.py
        instead of pika's generic property encoders, and the frames of several messages
        go out as one buffer. It uses pika internals, hence the version bound in
        pyproject.toml.
        """
        conn, number, body = self._conn, self._channel.channel_number, message.body
        assert conn is not None, "publishing needs an open connection"
        if self._publish_frame is None:
            self._publish_frame = pika.frame.Method(
                number,
                pika.spec.Basic.Publish(
                    exchange=self.rabbit.exchange,
                    routing_key=self.rabbit.routing_key,
                    mandatory=True,
                ),
            ).marshal()
        header = framing.content_header(
            number, len(body), message.message_id, message.timestamp, message.headers
        )
        self._outgoing += [self._publish_frame, header]
        self._outgoing += framing.body_frames(number, body, conn._body_max_length)
        self._outgoing_bytes += len(body)
        if self._outgoing_bytes >= OUTGOING_BYTES:
            self._write_out()

    def _write_out(self) -> None:
        """Hand the frames published since the last write to the connection, as one write."""
        if not self._outgoing:
            return
        frames = b"".join(self._outgoing)
        self._drop_outgoing()
        if self._conn is not None:
            self._conn._output_marshaled_frames([frames])

    def _settle(self) -> None:
        """Report confirms, publish due retries, and deal with a recorded failure."""
        while True:
            while self._confirmed:
                self.on_confirm(self._confirmed.popleft())
            if self._failure is not None:
                self._recover_or_fail()
                continue
            if self._retries and self._retries[0][0] <= time.monotonic():
                self._send(heapq.heappop(self._retries)[2])
                continue
            return

    def _settle_until(self, done: Callable[[], bool]) -> None:
        """Run the loop until `done()`, bounded by confirm_timeout without confirm progress."""
        while True:
            self._settle()
            if done():
                return
            deadline = self._confirm_deadline()
            if time.monotonic() >= deadline:
                self._fail(self._confirm_timeout_error())
            if self._retries:
                deadline = min(deadline, self._retries[0][0])
            self._drive(self._something_happened_since(self._events), deadline)

    def _something_happened_since(self, seen: int) -> Callable[[], bool]:
        return lambda: self._events != seen

    def _confirm_deadline(self) -> float:
        if not self._tracker or self._blocked:
            return float("inf")
        return self._last_progress + self.rabbit.confirm_timeout

    def _confirm_timeout_error(self) -> TransportUnavailable:
        return TransportUnavailable(
            f"{self._where()}: no confirm from the broker for "
            f"{self.rabbit.confirm_timeout:g}s with {len(self._tracker)} message(s) "
            "unconfirmed (a quorum queue without its majority, a stuck disk?); see "
            "[rabbit] confirm_timeout; unconfirmed messages are sent again by the next run"
        )

    def _recover_or_fail(self) -> None:
        """After a lost connection, open another (bounded) and publish the unconfirmed again."""
        failure = self._failure
        assert failure is not None
        if not isinstance(failure, ConnectionLost):
            self._fail(failure)
        if self._reconnects_left <= 0:
            self._fail(
                _chained(
                    TransportUnavailable(
                        f"{failure}, again ({1 + self.rabbit.connect_retries} reconnection(s) "
                        f"in this run, see [rabbit] connect_retries){_RESENT}"
                    ),
                    failure,
                )
            )
        self._reconnects_left -= 1
        lost = self._node
        unconfirmed = self._tracker.take_unconfirmed()
        log.info("%s; connecting again", failure)
        self._drop_connection()
        nodes = self.rabbit.nodes
        first = (nodes.index(lost) + 1) % len(nodes) if lost in nodes else 0
        try:
            self._open_any_node(check_only=False, first=first)
        except (TransportError, ConfigError) as exc:
            # A refusal (login, queue) keeps its exit code: an operator must act. A name
            # DNS no longer knows, though it did at start, is taken as temporary.
            refused = isinstance(exc, TransportError) and not isinstance(exc, TransportUnavailable)
            text = f"{failure}; connecting again failed: {exc}"
            # Recorded, so that a later publish() fails the same way without trying again.
            self._failure = _chained(
                TransportError(text) if refused else TransportUnavailable(text + _RESENT), exc
            )
            raise self._failure from None
        log.info(
            "publishing %d unconfirmed message(s) again through %s", len(unconfirmed), self._where()
        )
        for message in unconfirmed:
            self._send(message)
        self._last_progress = time.monotonic()

    def _fail(self, failure: TransportError) -> NoReturn:
        """Raise `failure`, first collecting the acks still on their way.

        After a return or a nack the connection is still good: waiting (bounded) for the
        other messages in flight reports them confirmed, so the next run resends less.
        """
        self._failure = failure
        # Nacks of later messages may come before the ack of an earlier one (a nack needs
        # no fsync): keep collecting through them, until nothing is in flight, the
        # channel is gone, or `timeout` passes.
        if (
            not isinstance(failure, TransportUnavailable)
            and self._channel is not None
            and self._channel.is_open
        ):
            self._drive(
                lambda: not self._tracker or self._channel is None,
                time.monotonic() + self.rabbit.timeout,
            )
        while self._confirmed:
            self.on_confirm(self._confirmed.popleft())
        raise failure

    def _on_ack_nack(self, frame: Any) -> None:
        method = frame.method
        ack = isinstance(method, pika.spec.Basic.Ack)
        settled = self._tracker.settle(method.delivery_tag, method.multiple, ack)
        self._events += 1
        self._last_progress = time.monotonic()
        self._confirmed.extend(settled.confirmed)
        for message, why in settled.returned:
            self._record(
                TransportError(
                    f"{self._where()}: message {message.message_id} was returned unroutable: {why}"
                )
            )
        for message in settled.nacked:
            self._nacked(message)

    def _nacked(self, message: Message) -> None:
        settings = self.rabbit
        times = self._nacks[message.message_id] = self._nacks.get(message.message_id, 0) + 1
        if times <= settings.nack_retries:
            # A quorum queue nacks for a moment while it elects a new leader: try again.
            pause = settings.retry_pause(times)
            log.info(
                "%s: message %s nacked; publishing it again in %gs (retry %d of %d)",
                self._where(),
                message.message_id,
                pause,
                times,
                settings.nack_retries,
            )
            entry = (time.monotonic() + pause, next(self._sequence), message)
            heapq.heappush(self._retries, entry)
            return
        queue = settings.queue or settings.routing_key
        refused = (
            f"{self._where()}: the broker refused (nacked) message {message.message_id} "
            f"for queue {queue!r} {times} times"
        )
        if settings.rejects_when_full:
            # Retrying will not empty the queue: someone must drain it or raise the limit.
            self._record(
                TransportError(
                    f"{refused}: the queue is full ([rabbit_queue_options] x-overflow = "
                    f"{settings.queue_arguments['x-overflow']}): let its consumer catch up, "
                    "or raise x-max-length / x-max-length-bytes"
                )
            )
        else:
            self._record(
                TransportUnavailable(
                    f"{refused} (a broker-side failure, or a length limit with "
                    "x-overflow = reject-publish set on the queue); the next run sends it again"
                )
            )

    def _on_blocked(self, connection: Any, frame: Any) -> None:
        self._blocked = True
        self._events += 1

    def _on_unblocked(self, connection: Any, frame: Any) -> None:
        self._blocked = False
        self._events += 1
        self._last_progress = time.monotonic()  # the broker takes messages again

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        why = (
            f"{method.reply_code} {method.reply_text}, exchange "
            f"{method.exchange or '(default)'!r}, routing key {method.routing_key!r}"
        )
        self._events += 1
        if not self._tracker.returned(properties.message_id, why):
            self._record(
                TransportError(f"{self._where()}: a message was returned unroutable ({why})")
            )

    def _on_channel_closed(self, channel: Any, reason: Exception) -> None:
        self._channel = None
        self._events += 1
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
            self._record(self._refusal(reason.reply_code, reason.reply_text), reason)
        elif not isinstance(reason, pika.exceptions.ChannelClosedByClient):
            # pika closes the channels first when the connection goes: same cause.
            self._on_connection_closed(None, reason)

    def _on_connection_closed(self, connection: Any, reason: Exception) -> None:
        self._channel = None
        self._events += 1
        if isinstance(reason, pika.exceptions.ConnectionClosedByClient) or self._conn is None:
            return  # our own close()
        self._record(self._closed_error(reason), reason)

    def _record(self, failure: TransportError, cause: BaseException | None = None) -> None:
        if self._failure is None:  # the first failure is the cause; later ones follow from it
            failure.__cause__ = cause
            self._failure = failure

    # -- failure mapping -----------------------------------------------------------

    def _lost(self, why: str) -> ConnectionLost:
        return ConnectionLost(f"{self._where()}: {why}")

    def _refusal(self, code: int, text: str) -> TransportError:
        subject = self._step.subject
        if code == 403:
            hint = "the user lacks this permission (rabbitmqctl list_permissions)"
        elif code == 404 and subject == "queue":
            hint = (
                "create the queue, or set [rabbit_queue_options] passive = false to let "
                "tstat_send declare it"
            )
        elif code == 404:
            hint = "create the exchange, or fix [rabbit] exchange"
        elif code == 406 and subject == "queue":
            hint = (
                "the queue exists with other settings: make [rabbit_queue_options] match "
                "it, or set passive = true to publish to it as it is"
            )
        else:
            hint = ""
        text = f"{self._where()}: {self._step.doing} refused by the broker ({code} {text})"
        if code == 320:
            # The node is shutting down (a restart): another node, or this one once it
            # is back, takes the rest.
            return self._lost(f"the broker closed the connection ({code} {text})")
        if code in _TEMPORARY_CODES:
            return TransportUnavailable(text)
        return Refused(f"{text}: {hint}" if hint else text, code)

    def _closed_error(self, reason: Exception) -> TransportError:
        if isinstance(reason, pika.exceptions.ConnectionClosedByBroker):
            return self._refusal(reason.reply_code, reason.reply_text)
        if isinstance(reason, pika.exceptions.ConnectionBlockedTimeout):
            return TransportUnavailable(
                f"{self._where()}: the broker blocked publishing for more than "
                f"{self.rabbit.blocked_connection_timeout:g}s (memory or disk alarm); "
                "unconfirmed messages are sent again by the next run"
            )
        if isinstance(reason, pika.exceptions.AMQPHeartbeatTimeout):
            return self._lost(f"no heartbeat from the broker for {self.rabbit.heartbeat}s")
        return self._lost(f"connection lost while {self._step.doing} ({reason_of(reason)})")

    def _open_error(self, error: BaseException) -> TransportError:
        """Map what pika reports for a failed connection attempt to our kinds of error."""
        cause = _innermost(error)
        if isinstance(cause, pika.exceptions.ConnectionClosedByBroker):
            return self._refusal(cause.reply_code, cause.reply_text)
        if isinstance(cause, socket.gaierror) and cause.errno in _NO_SUCH_NAME:
            return NoSuchHost(f"{self._where()}: no such host name ({reason_of(cause)})")
        error_class, text = next(
            ((cls, text) for types, cls, text in _OPEN_ERRORS if isinstance(cause, types)),
            (TransportError, "cannot connect ({reason})"),
        )
        return error_class(
            f"{self._where()}: "
            + text.format(
                vhost=self.rabbit.vhost,
                timeout=self.rabbit.timeout,
                reason=reason_of(cause),
                verify=getattr(cause, "verify_message", "").rstrip("."),
            )
        )

    # -- check and close -----------------------------------------------------------

    def check(self) -> str:
        """Connect, check the exchange and the queue (passively), send nothing.

        Raises TransportError or TransportUnavailable.
        """
        try:
            return f"{self.describe()}: ok: {self._open(check_only=True)}"
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection (waiting at most `timeout`); never raises."""
        try:
            self._drop_connection()
        except Exception:  # close() must never mask the error being raised
            log.debug("closing %s failed", self._where(), exc_info=True)
        if self._loop is not None:
            try:
                self._loop.close()
            except Exception:
                log.debug("closing the I/O loop failed", exc_info=True)
            self._loop = None

    def _drop_outgoing(self) -> None:
        # Framed for a channel that is gone: the tracker still holds these messages, and
        # recovery publishes every unconfirmed one again on the new channel.
        self._outgoing.clear()
        self._outgoing_bytes = 0

    def _drop_connection(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        self._drop_outgoing()
        if conn is None or conn.is_closed:
            return
        if not conn.is_closing:
            conn.close()
        # Acks that still arrive now are not reported: on_confirm is called only from
        # publish() and flush(), and those messages are simply sent again next run.
        self._drive(lambda: conn.is_closed, time.monotonic() + self.rabbit.timeout)


def _nothing() -> None:
    pass


# Frames held for one write at most (see RabbitTransport._outgoing): a few typical messages
# (~90 kB each at -T 0), one message at the 1 MiB cap.
OUTGOING_BYTES = 1024 * 1024


_RESENT = "; unconfirmed messages are sent again by the next run"


def _chained(error: TransportError, cause: BaseException) -> TransportError:
    error.__cause__ = cause
    return error


# What a failed connection attempt means, first match wins: (pika's underlying
# exception types, our error class, the text after "rabbit host:port (vhost, user): ").
_OPEN_ERRORS: list[tuple[tuple[type[BaseException], ...], type[TransportError], str]] = [
    (
        (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError),
        TransportError,
        "login refused: wrong username or password ([rabbit] username, password)",
    ),
    (
        (pika.exceptions.ProbableAccessDeniedError,),
        TransportError,
        "vhost {vhost!r} does not exist or the user may not use it ([rabbit] vhost; "
        "rabbitmqctl list_permissions)",
    ),
    (
        (ssl.SSLCertVerificationError,),
        TransportError,
        "the broker's TLS certificate does not verify: {verify} ([ssl_options] ca_certs, "
        "server_hostname)",
    ),
    (
        (ssl.SSLEOFError, ssl.SSLZeroReturnError),
        TransportUnavailable,
        "TLS connection closed during the handshake",
    ),
    (
        (ssl.SSLError,),
        TransportError,
        "TLS handshake failed ({reason}); is use_ssl right for this port?",
    ),
    ((socket.gaierror,), TransportUnavailable, "cannot resolve host name ({reason})"),
    (
        (ConnectionRefusedError,),
        TransportUnavailable,
        "connection refused (is RabbitMQ running and listening on this port?)",
    ),
    # pika ends a handshake that outlives stack_timeout by aborting its own connection:
    # ConnectionOpenAborted means a timeout here, as we never abort one.
    (
        (
            connection_workflow.AMQPConnectorStackTimeout,
            TimeoutError,
            pika.exceptions.ConnectionOpenAborted,
        ),
        TransportUnavailable,
        "no answer within {timeout:g}s (see [rabbit] timeout)",
    ),
    (
        (pika.exceptions.IncompatibleProtocolError,),
        TransportUnavailable,
        "the connection closed before the AMQP handshake (broker starting up, or not AMQP/TLS "
        "on this port?)",
    ),
    (
        (OSError, pika.exceptions.AMQPConnectionError),
        TransportUnavailable,
        "cannot connect ({reason})",
    ),
]


def _innermost(error: BaseException) -> BaseException:
    """The underlying cause of a pika connection failure, unwrapped from its workflow layers."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, connection_workflow.AMQPConnectionWorkflowFailed) and error.exceptions:
            error = error.exceptions[-1]
        elif isinstance(error, connection_workflow.AMQPConnectorPhaseErrorBase):
            error = error.exception
        elif (
            type(error) is pika.exceptions.AMQPConnectionError
            and error.args
            and isinstance(error.args[0], BaseException)
        ):
            error = error.args[0]
        else:
            break
    return error
