"""The RabbitMQ transport's configuration: `[rabbit]`, `[rabbit_queue_options]`, `[ssl_options]`.

Read and checked once, with no I/O beyond loading the TLS files, into one frozen
`RabbitSettings`; doc/rabbitmq.md describes every key.
"""

from __future__ import annotations

import difflib
import logging
import ssl
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import mask, parse_scalar
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import ConfigFile

log = logging.getLogger(__name__)

RABBIT = "rabbit"
QUEUE_OPTIONS = "rabbit_queue_options"
SSL_OPTIONS = "ssl_options"
QUEUE_FLAGS = ("durable", "exclusive", "auto_delete", "passive")

CONFIG_SECTIONS: dict[str, set[str] | None] = {
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
        "confirm_timeout",
        "nack_retries",
    },
    QUEUE_OPTIONS: None,
    SSL_OPTIONS: {"ca_certs", "certfile", "keyfile", "server_hostname", "verify", "cert_reqs"},
}

# x-overflow values with which a queue at its length limit nacks new messages.
_REJECTING_OVERFLOW = ("reject-publish", "reject-publish-dlx")


@dataclass(frozen=True)
class Node:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RabbitSettings:
    """Everything the transport needs from the config file, validated."""

    config_name: str
    nodes: tuple[Node, ...]  # each with its port filled in
    use_ssl: bool
    username: str
    password: str = field(repr=False)
    vhost: str
    queue: str
    exchange: str
    routing_key: str
    window: int
    connect_retries: int
    retry_delay: float
    timeout: float
    heartbeat: int
    blocked_connection_timeout: float
    confirm_timeout: float
    nack_retries: int
    queue_flags: dict[str, bool]
    passive: bool
    queue_arguments: dict[str, Any]
    ssl_context: ssl.SSLContext | None = field(repr=False)
    server_hostname: str | None

    @classmethod
    def from_config(cls, config: ConfigFile) -> RabbitSettings:
        """Read the three sections; raises ConfigError naming file, section and key."""
        use_ssl = config.get_bool(RABBIT, "use_ssl", False)
        # 5671 is the registered amqps port; a TLS listener on 5672 is rare.
        port = config.get_int(RABBIT, "port", 5671 if use_ssl else 5672, lo=1, hi=65535)
        nodes = _read_nodes(config, port)
        queue, exchange, routing_key = _read_destination(config)
        flags, passive, arguments = _read_queue_options(config, queue)
        ssl_context = server_hostname = None
        if use_ssl:
            ssl_context, server_hostname = _read_ssl_options(config)
        elif any(config.raw_keys(SSL_OPTIONS)):
            log.warning(
                "%s: [%s] is ignored because [%s] use_ssl is false",
                config.name,
                SSL_OPTIONS,
                RABBIT,
            )
        return cls(
            config_name=config.name,
            nodes=nodes,
            use_ssl=use_ssl,
            username=config.get_str(RABBIT, "username", "guest"),
            password=config.get_str(RABBIT, "password", "guest"),
            vhost=config.get_str(RABBIT, "vhost", "/") or "/",
            queue=queue,
            exchange=exchange,
            routing_key=routing_key,
            window=config.get_int(RABBIT, "window", 64, lo=1, hi=65535),
            connect_retries=config.get_int(RABBIT, "connect_retries", 2, lo=0, hi=100),
            retry_delay=config.get_float(RABBIT, "retry_delay", 2.0, lo=0.0),
            timeout=config.get_float(RABBIT, "timeout", 30.0, lo=0.1),
            heartbeat=config.get_int(RABBIT, "heartbeat", 60, lo=1, hi=65535),
            blocked_connection_timeout=config.get_float(
                RABBIT, "blocked_connection_timeout", 300.0, lo=0.1
            ),
            confirm_timeout=config.get_float(RABBIT, "confirm_timeout", 60.0, lo=0.1),
            nack_retries=config.get_int(RABBIT, "nack_retries", 3, lo=0, hi=100),
            queue_flags=flags,
            passive=passive,
            queue_arguments=arguments,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
        )

    @property
    def rejects_when_full(self) -> bool:
        """True when the queue we declare nacks new messages once it is at its length limit."""
        return (
            bool(self.queue)
            and not self.passive
            and self.queue_arguments.get("x-overflow") in _REJECTING_OVERFLOW
        )

    def retry_pause(self, attempt: int) -> float:
        """Seconds before retry number `attempt` (1, 2, ...): retry_delay doubled each time."""
        return self.retry_delay * 2 ** (attempt - 1)

    def describe(self) -> str:
        """`amqp://user@host:port/vhost queue=... exchange=...`, never the password."""
        scheme = "amqps" if self.use_ssl else "amqp"
        hosts = ",".join(str(n) for n in self.nodes)
        user = urllib.parse.quote(self.username, safe="")
        vhost = urllib.parse.quote(self.vhost, safe="")
        text = f"{scheme}://{user}@{hosts}/{vhost} queue={self.queue or '-'}"
        text += f" exchange={self.exchange or '(default)'}"
        if self.routing_key != self.queue:
            text += f" routing_key={self.routing_key}"
        return text


def _parse_node(text: str, where: str, default_port: int) -> Node:
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
        return Node(host, default_port)
    try:
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{where} = {shown}: port must be an integer 1-65535") from None
    return Node(host, port)


def _read_nodes(config: ConfigFile, port: int) -> tuple[Node, ...]:
    """`host`: one node or several separated by commas, each with `port` unless it names one."""
    where = f"{config.name}: [{RABBIT}]"
    host_text = config.get_str(RABBIT, "host", "localhost")
    nodes = tuple(
        _parse_node(part.strip(), f"{where} host", port)
        for part in host_text.split(",")
        if part.strip()
    )
    if not nodes:
        raise ConfigError(
            f"{where} host = {mask('host', host_text)}: expected a host name, or several "
            "separated by commas"
        )
    return nodes


def _read_destination(config: ConfigFile) -> tuple[str, str, str]:
    """`queue`, `exchange` and `routing_key`, refused when no message could be routed."""
    where = f"{config.name}: [{RABBIT}]"
    queue = config.get_str(RABBIT, "queue", "")
    exchange = config.get_str(RABBIT, "exchange", "")
    routing_key = config.get_str(RABBIT, "routing_key", queue)
    if not exchange and not routing_key:
        if queue:  # `routing_key =` left empty: the queue is not to blame
            raise ConfigError(
                f"{where} routing_key: is empty, and with the default exchange messages "
                "go to the queue the routing key names: remove the line (it defaults to "
                "the queue's name) or set it"
            )
        raise ConfigError(
            f"{where} queue: required key is missing (with the default exchange, "
            "messages go to the queue the routing key names)"
        )
    return queue, exchange, routing_key


def _read_queue_options(config: ConfigFile, queue: str) -> tuple[dict[str, bool], bool, dict]:
    flags = {
        # Durable unless told otherwise: a persistent message in a non-durable queue
        # is confirmed, then lost when the broker restarts.
        "durable": config.get_bool(QUEUE_OPTIONS, "durable", True),
        "exclusive": config.get_bool(QUEUE_OPTIONS, "exclusive", False),
        "auto_delete": config.get_bool(QUEUE_OPTIONS, "auto_delete", False),
    }
    passive = config.get_bool(QUEUE_OPTIONS, "passive", False)
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
    arguments: dict[str, Any] = {
        key: parse_scalar(value)
        for key, value in config.items(QUEUE_OPTIONS).items()
        if key not in QUEUE_FLAGS
    }
    if (arguments or config.raw_keys(QUEUE_OPTIONS)) and not queue:
        log.warning(
            "%s: [%s] is ignored because [%s] queue is not set: no queue is declared",
            config.name,
            QUEUE_OPTIONS,
            RABBIT,
        )
    return flags, passive, arguments


def _read_ssl_options(config: ConfigFile) -> tuple[ssl.SSLContext, str | None]:
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
    server_hostname = config.get_str(SSL_OPTIONS, "server_hostname", "") or None
    if keyfile and not certfile:
        raise ConfigError(f"{where('keyfile')}: needs [{SSL_OPTIONS}] certfile as well")

    # The files are read here, not when connecting: a CA file that cannot be read is a
    # configuration error, and should stop the run before any directory is touched.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_certs:
        try:
            context.load_verify_locations(cafile=ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{where('ca_certs')} = {ca_certs!r}: cannot load CA certificates: {reason(exc)}"
            ) from None
    if certfile:
        try:
            context.load_cert_chain(certfile, keyfile or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{where('certfile')} = {certfile!r}: cannot load the client "
                f"certificate/key: {reason(exc)}"
            ) from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.warning(
            "%s: TLS certificate verification is off: the connection is encrypted "
            "but the broker is not authenticated",
            where(off_key),
        )
    return context, server_hostname


def reason(exc: BaseException) -> str:
    """A short text for an exception: its message, else its class name."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
