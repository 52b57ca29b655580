"""RabbitMQ transport: publish each message to an AMQP 0-9-1 broker with publisher confirms.

Config sections (details and examples in doc/rabbitmq.md):

- `[rabbit]`: host (comma-separated cluster nodes, each optionally `host:port`), port,
  username, password, use_ssl, vhost, queue, routing_key, exchange, and the knobs that
  keep a cron run bounded: window, connect_retries, retry_delay, timeout, heartbeat,
  blocked_connection_timeout.
- `[rabbit_queue_options]`: durable, exclusive, auto_delete, passive (booleans); any
  other key is a queue argument (`x-queue-type = quorum`), which starts with x-.
- `[ssl_options]`: ca_certs, certfile, keyfile, server_hostname, verify (or the
  original's `cert_reqs = CERT_NONE`).

Delivery guarantees: every message is published persistent (delivery_mode 2) and
`mandatory`, on a channel in confirm mode. A message is reported through `on_confirm`
only once the broker has acked it and did not return it as unroutable, so a confirmed
message is held by at least one queue. Up to `window` messages are in flight at once;
a message that is unconfirmed when the connection is lost is not reported, and the
sender sends it again on the next run (at-least-once; `message_id` lets a consumer
drop the duplicate). A nack or a return fails the run with TransportError.

Only this module imports pika. The SelectConnection is driven by our own loop
(`_wait`), the way pika's BlockingConnection drives it internally, so acks can be
handled as they arrive without waiting for each one before the next publish.
"""

from __future__ import annotations

import collections
import difflib
import logging
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, NoReturn

import pika
import pika.exceptions
from pika.adapters.select_connection import IOLoop, SelectConnection
from pika.adapters.utils import connection_workflow

from ..config import mask, parse_scalar
from ..errors import ConfigError, TransportError, TransportUnavailable
from .base import Message, Transport

if TYPE_CHECKING:
    from ..config import ConfigFile, Settings

log = logging.getLogger(__name__)

RABBIT = "rabbit"
QUEUE_OPTIONS = "rabbit_queue_options"
SSL_OPTIONS = "ssl_options"
QUEUE_FLAGS = ("durable", "exclusive", "auto_delete", "passive")

# AMQP reply codes that mean "try again later" rather than "fix the configuration".
_TEMPORARY_CODES = {
    320,  # CONNECTION_FORCED: the broker is shutting down or an admin closed us
    541,  # INTERNAL_ERROR: the broker failed, not our request
}


@dataclass(frozen=True)
class _Node:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class RabbitTransport(Transport):
    """Publish to RabbitMQ with publisher confirms and a bounded window of unconfirmed messages.

    Raises ConfigError from `__init__`, TransportUnavailable (broker down, unreachable,
    connection lost) or TransportError (refused login, vhost, queue or exchange, a
    nack, an unroutable message, a certificate that does not verify) from the rest.
    """

    name: ClassVar[str] = "rabbit"
    config_sections: ClassVar[dict[str, set[str] | None]] = {
        RABBIT: {
            "host",
            "port",
            "username",
            "password",
            "use_ssl",
            "vhost",
            "queue",
            "routing_key",
            "exchange",
            "window",
            "connect_retries",
            "retry_delay",
            "timeout",
            "heartbeat",
            "blocked_connection_timeout",
        },
        QUEUE_OPTIONS: None,
        SSL_OPTIONS: {"ca_certs", "certfile", "keyfile", "server_hostname", "verify", "cert_reqs"},
    }

    def __init__(self, settings: Settings, config: ConfigFile) -> None:
        super().__init__(settings, config)
        self._read_rabbit(config)
        self._read_queue_options(config)
        self._ssl_context = self._read_ssl_options(config) if self.use_ssl else None
        if not self.use_ssl and any(config.raw_keys(SSL_OPTIONS)):
            log.warning(
                "%s: [%s] is ignored because [%s] use_ssl is false",
                config.name,
                SSL_OPTIONS,
                RABBIT,
            )
        self._loop: IOLoop | None = None
        self._conn: SelectConnection | None = None
        self._channel: Any = None
        self._node: _Node | None = None
        self._reset_delivery_state()

    # -- configuration -------------------------------------------------------------

    def _read_rabbit(self, config: ConfigFile) -> None:
        def where(key: str) -> str:
            return f"{config.name}: [{RABBIT}] {key}"

        self.use_ssl = config.get_bool(RABBIT, "use_ssl", False)
        # 5671 is the registered amqps port; a TLS listener on 5672 is rare.
        self.port = config.get_int(RABBIT, "port", 5671 if self.use_ssl else 5672, lo=1, hi=65535)
        host_text = config.get_str(RABBIT, "host", "localhost")
        self.nodes = [
            self._parse_node(part.strip(), where("host"))
            for part in host_text.split(",")
            if part.strip()
        ]
        if not self.nodes:
            raise ConfigError(
                f"{where('host')} = {mask('host', host_text)}: expected a host name, "
                "or several separated by commas"
            )
        self.username = config.get_str(RABBIT, "username", "guest")
        self._password = config.get_str(RABBIT, "password", "guest")
        self.vhost = config.get_str(RABBIT, "vhost", "/") or "/"
        self.queue = config.get_str(RABBIT, "queue", "")
        self.exchange = config.get_str(RABBIT, "exchange", "")
        self.routing_key = config.get_str(RABBIT, "routing_key", self.queue)
        if not self.exchange and not self.routing_key:
            if self.queue:  # `routing_key =` left empty: the queue is not to blame
                raise ConfigError(
                    f"{where('routing_key')}: is empty, and with the default exchange messages "
                    "go to the queue the routing key names: remove the line (it defaults to "
                    "the queue's name) or set it"
                )
            raise ConfigError(
                f"{where('queue')}: required key is missing (with the default "
                "exchange, messages go to the queue the routing key names)"
            )
        self.window = config.get_int(RABBIT, "window", 64, lo=1, hi=65535)
        self.connect_retries = config.get_int(RABBIT, "connect_retries", 2, lo=0, hi=100)
        self.retry_delay = config.get_float(RABBIT, "retry_delay", 2.0, lo=0.0)
        self.timeout = config.get_float(RABBIT, "timeout", 30.0, lo=0.1)
        self.heartbeat = config.get_int(RABBIT, "heartbeat", 60, lo=1, hi=65535)
        self.blocked_connection_timeout = config.get_float(
            RABBIT, "blocked_connection_timeout", 300.0, lo=0.1
        )

    @staticmethod
    def _parse_node(text: str, where: str) -> _Node:
        # `host`, `host:port`, `[v6addr]` or `[v6addr]:port`; a bare IPv6 address has
        # several colons and takes the default port.
        host, port_text = text, ""
        shown = mask("host", text)
        if any(c.isspace() for c in text):
            # Two lines run together (`host = h password = x`) would be echoed, password
            # and all, in every connection error.
            raise ConfigError(f"{where} = {shown}: expected a host name, found spaces")
        if "@" in text or "://" in text:
            # A URL here would be taken for a host name and echoed, password and all,
            # in every connection error.
            raise ConfigError(
                f"{where} = {shown}: expected a host name, not a URL: give username, "
                "password and vhost in keys of their own"
            )
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest and not rest.startswith(":"):
                raise ConfigError(f"{where} = {shown}: expected [address]:port")
            port_text = rest[1:]
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        if not host:
            raise ConfigError(f"{where} = {shown}: empty host name")
        if not port_text:
            return _Node(host, 0)
        try:
            port = int(port_text)
            if not 1 <= port <= 65535:
                raise ValueError
        except ValueError:
            raise ConfigError(f"{where} = {shown}: port must be an integer 1-65535") from None
        return _Node(host, port)

    def _read_queue_options(self, config: ConfigFile) -> None:
        self.queue_flags = {
            # Durable unless told otherwise: a persistent message in a non-durable queue
            # is confirmed, then lost when the broker restarts.
            "durable": config.get_bool(QUEUE_OPTIONS, "durable", True),
            "exclusive": config.get_bool(QUEUE_OPTIONS, "exclusive", False),
            "auto_delete": config.get_bool(QUEUE_OPTIONS, "auto_delete", False),
        }
        self.passive = config.get_bool(QUEUE_OPTIONS, "passive", False)
        # Every other key is a queue argument: `x-max-length = 10000` becomes the integer
        # 10000, as the broker requires; `x-queue-type = quorum` stays a string. Queue
        # arguments all start with x-: any other key is a misspelled flag (`durabel`),
        # which the broker would accept as an argument and ignore.
        for key in config.raw_keys(QUEUE_OPTIONS):
            if key not in QUEUE_FLAGS and not key.lower().startswith("x-"):
                close = difflib.get_close_matches(key, QUEUE_FLAGS, n=1, cutoff=0.6)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"not a flag ({', '.join(QUEUE_FLAGS)}), and queue arguments start with x-"
                )
                raise ConfigError(f"{config.name}: [{QUEUE_OPTIONS}] {key}: unknown key ({hint})")
        self.queue_arguments: dict[str, Any] = {
            key: parse_scalar(value)
            for key, value in config.items(QUEUE_OPTIONS).items()
            if key not in QUEUE_FLAGS
        }
        if (self.queue_arguments or config.raw_keys(QUEUE_OPTIONS)) and not self.queue:
            log.warning(
                "%s: [%s] is ignored because [%s] queue is not set: no queue is declared",
                config.name,
                QUEUE_OPTIONS,
                RABBIT,
            )

    def _read_ssl_options(self, config: ConfigFile) -> ssl.SSLContext:
        def where(key: str) -> str:
            return f"{config.name}: [{SSL_OPTIONS}] {key}"

        verify = config.get_bool(SSL_OPTIONS, "verify", True)
        cert_reqs = config.get_str(SSL_OPTIONS, "cert_reqs", "").upper()
        if cert_reqs and cert_reqs not in ("CERT_NONE", "CERT_OPTIONAL", "CERT_REQUIRED"):
            raise ConfigError(
                f"{where('cert_reqs')} = {cert_reqs!r}: expected CERT_REQUIRED or CERT_NONE"
            )
        off_key = "verify"
        if cert_reqs == "CERT_NONE":
            if config.get_str(SSL_OPTIONS, "verify", "") and verify:
                raise ConfigError(
                    f"{where('cert_reqs')} = CERT_NONE contradicts "
                    f"[{SSL_OPTIONS}] verify = true: keep one of them"
                )
            verify, off_key = False, "cert_reqs"
        ca_certs = config.get_str(SSL_OPTIONS, "ca_certs", "")
        certfile = config.get_str(SSL_OPTIONS, "certfile", "")
        keyfile = config.get_str(SSL_OPTIONS, "keyfile", "")
        self.server_hostname = config.get_str(SSL_OPTIONS, "server_hostname", "") or None
        if keyfile and not certfile:
            raise ConfigError(f"{where('keyfile')}: needs [{SSL_OPTIONS}] certfile as well")

        # The files are read here, not in open(): a CA file that cannot be read is a
        # configuration error, and should stop the run before any directory is touched.
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if ca_certs:
            try:
                context.load_verify_locations(cafile=ca_certs)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"{where('ca_certs')} = {ca_certs!r}: cannot load CA "
                    f"certificates: {_reason(exc)}"
                ) from None
        if certfile:
            try:
                context.load_cert_chain(certfile, keyfile or None)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"{where('certfile')} = {certfile!r}: cannot load the client "
                    f"certificate/key: {_reason(exc)}"
                ) from None
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            log.warning(
                "%s: TLS certificate verification is off: the connection is encrypted "
                "but the broker is not authenticated",
                where(off_key),
            )
        self.verify = verify
        return context

    # -- what the operator sees ----------------------------------------------------

    def _node_port(self, node: _Node) -> _Node:
        return node if node.port else _Node(node.host, self.port)

    def describe(self) -> str:
        """`amqp://user@host:port/vhost queue=... exchange=...`, never the password."""
        scheme = "amqps" if self.use_ssl else "amqp"
        hosts = ",".join(str(self._node_port(n)) for n in self.nodes)
        user = urllib.parse.quote(self.username, safe="")
        vhost = urllib.parse.quote(self.vhost, safe="")
        text = f"{scheme}://{user}@{hosts}/{vhost} queue={self.queue or '-'}"
        text += f" exchange={self.exchange or '(default)'}"
        if self.routing_key != self.queue:
            text += f" routing_key={self.routing_key}"
        return text

    def _where(self, node: _Node | None = None) -> str:
        node = node or self._node
        hosts = str(node) if node else ",".join(str(self._node_port(n)) for n in self.nodes)
        return f"rabbit {hosts} (vhost {self.vhost!r}, user {self.username!r})"

    # -- connection ----------------------------------------------------------------

    def open(self) -> None:
        """Connect to the first node that answers and set up the channel.

        Unavailable nodes are tried in turn, for 1 + connect_retries rounds with an
        exponential backoff between rounds; refusals (login, vhost, queue) stop at once.
        Raises TransportUnavailable or TransportError.
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

    def _open_any_node(self, check_only: bool) -> str:
        failures: list[str] = []
        last: TransportUnavailable | None = None
        rounds = 1 + self.connect_retries
        for attempt in range(rounds):
            if attempt:
                delay = self.retry_delay * 2 ** (attempt - 1)
                log.warning(
                    "no RabbitMQ node reachable (last: %s); retry %d of %d in %gs",
                    failures[-1],
                    attempt,
                    self.connect_retries,
                    delay,
                )
                time.sleep(delay)
            for node in self.nodes:
                node = self._node_port(node)
                try:
                    self._connect(node)
                    return self._setup_channel(check_only)
                except TransportUnavailable as exc:
                    last = exc
                    failures.append(str(exc))
                    log.info("%s", exc)
                    self._drop_connection()
        tried = "; ".join(dict.fromkeys(failures))  # same failure each round: say it once
        raise TransportUnavailable(
            f"cannot reach RabbitMQ after {rounds} round(s) over {len(self.nodes)} node(s): {tried}"
        ) from (last.__cause__ if last else None)

    def _connect(self, node: _Node) -> None:
        self._node = node
        self._reset_delivery_state()
        ssl_options = None
        if self._ssl_context is not None:
            ssl_options = pika.SSLOptions(self._ssl_context, self.server_hostname or node.host)
        params = pika.ConnectionParameters(
            host=node.host,
            port=node.port,
            virtual_host=self.vhost,
            credentials=pika.PlainCredentials(self.username, self._password),
            ssl_options=ssl_options,
            heartbeat=self.heartbeat,
            blocked_connection_timeout=self.blocked_connection_timeout,
            socket_timeout=self.timeout,
            stack_timeout=self.timeout,
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
        self._wait(lambda: bool(outcome), "connecting", timeout=self.timeout + 1)
        if "error" in outcome:
            raise self._open_error(outcome["error"]) from outcome["error"]
        log.info("connected to %s%s", self._where(node), " over TLS" if self.use_ssl else "")

    def _setup_channel(self, check_only: bool) -> str:
        """Open the channel, check the exchange, declare (or check) the queue, enable confirms."""
        assert self._conn is not None
        opened: list[Any] = []
        self._doing = "opening a channel"
        self._conn.channel(on_open_callback=opened.append)
        self._wait(lambda: bool(opened), self._doing, timeout=self.timeout)
        channel = self._channel = opened[0]
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        report = []
        if self.exchange:
            # We never declare an exchange (its type and owner are the archive's); a
            # passive declare fails with 404 when it is missing.
            self._rpc(
                lambda cb: channel.exchange_declare(self.exchange, passive=True, callback=cb),
                f"checking exchange {self.exchange!r}",
            )
            report.append(f"exchange {self.exchange!r} exists")
        if self.queue:
            passive = self.passive or check_only
            what = "checking" if passive else "declaring"
            try:
                ok = self._rpc(
                    lambda cb: channel.queue_declare(
                        self.queue,
                        passive=passive,
                        arguments=None if passive else self.queue_arguments,
                        callback=cb,
                        **self.queue_flags,
                    ),
                    f"{what} queue {self.queue!r}",
                )
            except TransportError as exc:
                if not (
                    check_only and not self.passive and getattr(exc, "reply_code", None) == 404
                ):
                    raise
                report.append(
                    f"queue {self.queue!r} does not exist yet (the first run declares it)"
                )
            else:
                report.append(
                    f"queue {self.queue!r} has {ok.method.message_count} message(s) "
                    f"and {ok.method.consumer_count} consumer(s)"
                )
                if self.exchange and not passive:
                    # A queue we declare is bound to the exchange, so a fresh broker works
                    # without manual set-up; binding again is a no-op. With passive = true
                    # the archive owns the topology and we change nothing.
                    self._rpc(
                        lambda cb: channel.queue_bind(
                            self.queue, self.exchange, self.routing_key, callback=cb
                        ),
                        f"binding queue {self.queue!r} to exchange {self.exchange!r}",
                    )
        if not check_only:
            self._rpc(
                lambda cb: channel.confirm_delivery(self._on_ack_nack, callback=cb),
                "enabling publisher confirms",
            )
        self._doing = "publishing"
        return ", ".join(report) or "connected"

    def _rpc(self, call: Callable[[Callable[[Any], None]], None], doing: str) -> Any:
        replies: list[Any] = []
        self._doing = doing
        call(replies.append)
        self._wait(lambda: bool(replies), doing, timeout=self.timeout)
        return replies[0]

    # -- the loop ------------------------------------------------------------------

    def _run_until(self, stop: Callable[[], bool], timeout: float | None) -> bool:
        """Run the I/O loop until `stop()`: True, or False if `timeout` seconds pass first."""
        assert self._loop is not None
        expired: list[bool] = []
        timer = self._loop.call_later(timeout, lambda: expired.append(True)) if timeout else None
        try:
            while not stop():
                if expired:
                    return False
                self._loop.poll()
                self._loop.process_timeouts()
            return True
        finally:
            if timer is not None:
                self._loop.remove_timeout(timer)

    def _wait(self, done: Callable[[], bool], doing: str, timeout: float | None = None) -> None:
        """Run the I/O loop until `done()`, reporting confirms; raise the first failure.

        Without a timeout, the heartbeat and blocked_connection_timeout bound the wait:
        pika closes a connection whose broker went silent or stays blocked.
        """

        def stop() -> bool:
            self._deliver_confirms()
            return self._failure is not None or done()

        finished = self._run_until(stop, timeout)
        if self._failure is not None:
            raise self._failure
        if not finished:
            raise TransportUnavailable(
                f"{self._where()}: no answer within {timeout:g}s while {doing} "
                "(see [rabbit] timeout)"
            )

    def _pump(self) -> None:
        """One pass of the I/O loop that does not block: send what is queued, read acks."""
        assert self._loop is not None
        # A zero-delay timer makes poll() return at once, as BlockingConnection does
        # for process_data_events(0).
        self._loop.call_later(0, lambda: None)
        self._loop.poll()
        self._loop.process_timeouts()
        self._deliver_confirms()

    # -- delivery ------------------------------------------------------------------

    def _reset_delivery_state(self) -> None:
        self._pending: dict[int, Message] = {}  # delivery tag -> message, in tag order
        self._returned: dict[int, str] = {}  # delivery tag -> why the broker returned it
        self._confirmed: collections.deque[Message] = collections.deque()
        self._next_tag = 0
        self._failure: TransportError | None = None
        self._doing = "connecting"

    def publish(self, message: Message) -> None:
        """Send `message`; block only while `window` messages are unconfirmed.

        Raises TransportError or TransportUnavailable (after reporting every message
        confirmed before the failure).
        """
        if self._failure is not None:
            self._fail()
        if self._channel is None:
            raise TransportError(f"{self._where()}: publish() before open()")
        try:
            self._wait(lambda: len(self._pending) < self.window, "waiting for confirms")
        except TransportError:
            self._fail()
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message.message_id,
            timestamp=message.timestamp,
            headers=message.headers or None,
        )
        try:
            self._channel.basic_publish(
                self.exchange, self.routing_key, message.body, properties, mandatory=True
            )
        except pika.exceptions.AMQPError as exc:
            raise self._failure or self._unavailable(f"lost while publishing: {exc!r}") from exc
        self._next_tag += 1
        self._pending[self._next_tag] = message
        self._pump()
        if self._failure is not None:
            self._fail()

    def flush(self) -> None:
        """Return once every published message is confirmed.

        Raises TransportError or TransportUnavailable.
        """
        if self._channel is None and not self._pending:
            return
        try:
            self._wait(lambda: not self._pending, "waiting for confirms")
        except TransportError:
            self._fail()

    def _fail(self) -> NoReturn:
        """Raise the recorded failure, first collecting the acks still on their way.

        After a return or a nack the connection is still good: waiting (bounded) for the
        other messages in flight reports them confirmed, so the next run resends less.
        """
        failure = self._failure
        if failure is None:  # a timeout of our own, not a recorded failure
            raise
        # Nacks of later messages may come before the ack of an earlier one (a nack needs
        # no fsync): keep collecting through them, until nothing is in flight, the
        # channel is gone, or `timeout` passes.
        if self._channel is not None and self._channel.is_open:
            self._run_until(lambda: not self._pending or self._channel is None, self.timeout)
        self._deliver_confirms()
        raise failure

    def _deliver_confirms(self) -> None:
        # on_confirm runs here, outside pika's frame handling, so an exception it raises
        # (the sender's state file on a full disk) cannot leave pika half-way through a frame.
        while self._confirmed:
            self.on_confirm(self._confirmed.popleft())

    def _on_ack_nack(self, frame: Any) -> None:
        method = frame.method
        nack = isinstance(method, pika.spec.Basic.Nack)
        if method.multiple:
            tags = [tag for tag in self._pending if tag <= method.delivery_tag]
        else:
            tags = [method.delivery_tag] if method.delivery_tag in self._pending else []
        for tag in tags:
            message = self._pending.pop(tag)
            if tag in self._returned:
                self._record(
                    TransportError(
                        f"{self._where()}: message {message.message_id} "
                        f"was returned unroutable: {self._returned.pop(tag)}"
                    )
                )
            elif nack:
                queue = self.queue or self.routing_key
                self._record(
                    TransportError(
                        f"{self._where()}: the broker refused (nacked) message "
                        f"{message.message_id} for queue {queue!r} (queue full with "
                        "x-overflow = reject-publish, or a broker-side failure)"
                    )
                )
            else:
                self._confirmed.append(message)

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        # A basic.return carries no delivery tag; it comes before the ack of the same
        # message, so it belongs to the oldest unconfirmed message with that id.
        why = (
            f"{method.reply_code} {method.reply_text}, exchange "
            f"{method.exchange or '(default)'!r}, routing key {method.routing_key!r}"
        )
        for tag, message in self._pending.items():
            if message.message_id == properties.message_id and tag not in self._returned:
                self._returned[tag] = why
                return
        self._record(TransportError(f"{self._where()}: a message was returned unroutable ({why})"))

    def _on_channel_closed(self, channel: Any, reason: Exception) -> None:
        self._channel = None
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
            self._record(self._refusal(reason.reply_code, reason.reply_text), reason)
        elif not isinstance(reason, pika.exceptions.ChannelClosedByClient):
            # pika closes the channels first when the connection goes: same cause.
            self._on_connection_closed(None, reason)

    def _on_connection_closed(self, connection: Any, reason: Exception) -> None:
        self._channel = None
        if isinstance(reason, pika.exceptions.ConnectionClosedByClient) or self._conn is None:
            return  # our own close()
        self._record(self._closed_error(reason), reason)

    def _record(self, failure: TransportError, cause: BaseException | None = None) -> None:
        if self._failure is None:  # the first failure is the cause; later ones follow from it
            failure.__cause__ = cause
            self._failure = failure

    # -- failure mapping -----------------------------------------------------------

    def _unavailable(self, why: str) -> TransportUnavailable:
        return TransportUnavailable(
            f"{self._where()}: {why}; unconfirmed messages are sent again by the next run"
        )

    def _refusal(self, code: int, text: str) -> TransportError:
        about_queue = f"queue {self.queue!r}" in self._doing
        if code == 403:
            hint = "the user lacks this permission (rabbitmqctl list_permissions)"
        elif code == 404 and about_queue:
            hint = (
                "create the queue, or set [rabbit_queue_options] passive = false to let "
                "tstat_send declare it"
            )
        elif code == 404:
            hint = "create the exchange, or fix [rabbit] exchange"
        elif code == 406 and about_queue:
            hint = (
                "the queue exists with other settings: make [rabbit_queue_options] match "
                "it, or set passive = true to publish to it as it is"
            )
        else:
            hint = ""
        text = f"{self._where()}: {self._doing} refused by the broker ({code} {text})"
        error_class = TransportUnavailable if code in _TEMPORARY_CODES else TransportError
        error = error_class(f"{text}: {hint}" if hint else text)
        error.reply_code = code  # type: ignore[attr-defined]
        return error

    def _closed_error(self, reason: Exception) -> TransportError:
        if isinstance(reason, pika.exceptions.ConnectionClosedByBroker):
            return self._refusal(reason.reply_code, reason.reply_text)
        if isinstance(reason, pika.exceptions.ConnectionBlockedTimeout):
            return self._unavailable(
                f"the broker blocked publishing for more than {self.blocked_connection_timeout:g}s "
                "(memory or disk alarm)"
            )
        if isinstance(reason, pika.exceptions.AMQPHeartbeatTimeout):
            return self._unavailable(f"no heartbeat from the broker for {self.heartbeat}s")
        return self._unavailable(f"connection lost while {self._doing} ({_reason(reason)})")

    def _open_error(self, error: BaseException) -> TransportError:
        """Map what pika reports for a failed connection attempt to our two kinds of error."""
        cause = _innermost(error)
        if isinstance(cause, pika.exceptions.ConnectionClosedByBroker):
            return self._refusal(cause.reply_code, cause.reply_text)
        error_class, text = next(
            ((cls, text) for types, cls, text in _OPEN_ERRORS if isinstance(cause, types)),
            (TransportError, "cannot connect ({reason})"),
        )
        return error_class(
            f"{self._where()}: "
            + text.format(
                vhost=self.vhost,
                timeout=self.timeout,
                reason=_reason(cause),
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

    def _drop_connection(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is None or conn.is_closed:
            return
        if not conn.is_closing:
            conn.close()
        # Acks that still arrive now are not reported: on_confirm is called only from
        # publish() and flush(), and those messages are simply sent again next run.
        self._run_until(lambda: conn.is_closed, self.timeout)


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


def _reason(exc: BaseException) -> str:
    """A short text for an exception: its message, else its class name."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
