"""HTTP(S) transport (`-t http`): POST each message to a URL, one request per message.

Configuration, section `[http]` (only `url` is required)::

    [http]
    url = https://archive.example.net/tstat/flows
    ; default Authorization when auth_value is set
    auth_header = Authorization
    ; from the environment; never logged
    auth_value = Bearer ${TSTAT_HTTP_TOKEN}
    ; trust only this CA (default: the system CAs)
    ca_certs = /etc/ssl/certs/archive-ca.pem
    ; false turns verification off, with a warning
    tls_verify = true
    ; seconds, for connecting and for each read
    timeout = 30
    ; extra attempts after a transient failure
    retries = 3
    ; seconds before the first retry; doubles, <= 60
    retry_delay = 1

Comments stand on their own lines: a `;` after a value is part of the value.

Credentials in the URL (`https://user:${PASS}@host/`) are sent as HTTP Basic auth; log lines
and errors show the URL without them. Over plain `http://` the auth header travels in clear.

Each request is `POST <url>` with the message body (a JSON array of at most 100 flow objects)
and these headers:

- `Content-Type: application/json`
- `X-Message-Id`: the message's deterministic id, the same on every resend; percent-encoded
  where it holds `%` or a character outside printable ASCII;
- `X-Timestamp`: the message's timestamp (integer Unix seconds);
- `X-Flow-Count`: how many flow objects the array holds;
- `X-Tstat-Format-Version`: the message format's version (doc/message-format.md);
- `X-Tstat-Headers`: the message's other headers as a JSON object, when it has any.

Delivery guarantee: at-least-once. A message is confirmed only when the receiver answers 2xx,
and `publish` returns only then (window 1, so `flush` has nothing to wait for). A connection
error, a timeout, a 5xx, 408 or 429 is retried after `retry_delay`, 2 x `retry_delay`, ...
(at most 60 s each); when the last retry fails too, TransportUnavailable (exit 75): the next run
resends from the first unconfirmed message. Any other answer (another 4xx, a redirect) and a
TLS certificate that does not verify raise TransportError at once (exit 1): an operator must
fix the URL, the token or the CA. A receiver may have stored a message whose answer was lost
(timeout, dropped connection, a 5xx after storing), so a message can arrive more than once:
receivers drop duplicates by `X-Message-Id`.

One keep-alive connection serves the whole run. A reused connection the server has since
closed is reopened once at once, without counting as a retry.

`check()` (--check-config) connects, and for https completes the TLS handshake verifying the
certificate, without sending a request: a receiver may refuse anything but a POST of real data,
so whether the path exists and the token is accepted shows only with the first message.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import math
import re
import socket
import ssl
import time
from typing import TYPE_CHECKING, Callable
from urllib.parse import SplitResult, quote, unquote, urlsplit

from ..config import mask
from ..errors import ConfigError, TransportError, TransportUnavailable
from .base import Message, Transport

if TYPE_CHECKING:
    from ..config import ConfigFile, Settings

log = logging.getLogger(__name__)

SECTION = "http"
MAX_RETRY_DELAY = 60.0
# Statuses that say "not now" rather than "never": 408 Request Timeout, 429 Too Many Requests.
RETRY_STATUSES = frozenset({408, 429})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_PRINTABLE = re.compile(r"[\x20-\x7e\t]+")
# How a keep-alive connection the server has closed shows on the next request.
_CLOSED = (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError)
_URL_CHARS = re.compile(r"[\x21-\x7e]+")  # no space, control or non-ASCII character
# Everything printable but '%', so that a percent-encoded id cannot be mistaken for a plain one.
_ID_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class _Retryable(Exception):
    """An answer that says "try again later" (5xx, 408, 429)."""


class HttpTransport(Transport):
    """POST each message to `[http] url` and confirm it on a 2xx answer."""

    name = "http"
    config_sections = {
        SECTION: {
            "url",
            "auth_header",
            "auth_value",
            "ca_certs",
            "tls_verify",
            "timeout",
            "retries",
            "retry_delay",
        }
    }
    window = 1

    def __init__(self, settings: Settings, config: ConfigFile) -> None:
        super().__init__(settings, config)
        where = f"{config.name}: [{SECTION}]"
        parts = self._read_url(config.get_str(SECTION, "url"), where)
        self.headers = {"Content-Type": "application/json"}
        if parts.username is not None:
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            basic = base64.b64encode(userinfo.encode("utf-8")).decode("ascii")
            self.headers["Authorization"] = f"Basic {basic}"
        self._read_auth(config, where)

        self.ca_certs = config.get_str(SECTION, "ca_certs", "") or None
        self.tls_verify = config.get_bool(SECTION, "tls_verify", True)
        self.timeout = config.get_float(SECTION, "timeout", 30.0)
        if not (0 < self.timeout < math.inf):
            raise ConfigError(f"{where} timeout = {self.timeout}: expected a number of seconds > 0")
        self.retries = config.get_int(SECTION, "retries", 3, lo=0, hi=100)
        self.retry_delay = config.get_float(SECTION, "retry_delay", 1.0, lo=0)
        if self.https and not self.tls_verify:
            log.warning(
                "%s: TLS certificate verification is off ([%s] tls_verify = false in %s): "
                "anyone on the path can read and alter the flows%s",
                self.url,
                SECTION,
                config.name,
                "; ca_certs is not used" if self.ca_certs else "",
            )

        self._conn: http.client.HTTPConnection | None = None
        self._answered = 0  # responses read on the current socket: >0 means it is being reused

    def describe(self) -> str:
        return self.url

    def _read_url(self, raw_url: str, where: str) -> SplitResult:
        """Set url, https, host, port and target; ConfigError unless an http(s) URL."""
        parts = urlsplit(raw_url)
        # What the operator sees: the URL without user and password, nor the unsent fragment.
        self.url = parts._replace(netloc=parts.netloc.rpartition("@")[2], fragment="").geturl()
        try:
            port = parts.port
        except ValueError:
            port = -1
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or port == -1
            or not _URL_CHARS.fullmatch(raw_url)
        ):
            raise ConfigError(
                f"{where} url = {mask('url', self.url)}: expected http://host[:port]/path "
                "or https://..."
            )
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = port
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return parts

    def _read_auth(self, config: ConfigFile, where: str) -> None:
        """Add the `auth_header: auth_value` header; ConfigError if either is unusable."""
        auth_header = config.get_str(SECTION, "auth_header", None)
        auth_value = config.get_str(SECTION, "auth_value", None)
        if auth_value is None:
            if auth_header is not None:
                raise ConfigError(
                    f"{where} auth_header = {auth_header!r}: needs auth_value "
                    "(e.g. auth_value = Bearer ${TSTAT_HTTP_TOKEN})"
                )
            return
        auth_header = auth_header or "Authorization"
        if not _HEADER_NAME.fullmatch(auth_header):
            raise ConfigError(f"{where} auth_header = {auth_header!r}: not an HTTP header name")
        if auth_header.lower() in (h.lower() for h in self.headers):
            raise ConfigError(
                f"{where} auth_header = {auth_header!r}: already set "
                "(by the URL's user:password or as Content-Type)"
            )
        # The value is a secret: the errors say what is wrong with it, never what it is.
        if not auth_value:
            raise ConfigError(f"{where} auth_value: is empty (is its environment variable set?)")
        if not _PRINTABLE.fullmatch(auth_value):
            raise ConfigError(
                f"{where} auth_value: holds a line break or a non-ASCII character (value not shown)"
            )
        self.headers[auth_header] = auth_value

    def open(self) -> None:
        """Connect, retrying as a POST does.

        Raises TransportError, TransportUnavailable, or ConfigError for a `ca_certs` file
        that cannot be loaded.
        """
        if self._conn is None:
            if self.https:
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self._ssl_context()
                )
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._with_retries("connect to", self._conn.connect)

    def publish(self, message: Message) -> None:
        """POST `message` and confirm it once the receiver answered 2xx.

        Raises TransportError for an answer retrying cannot mend, TransportUnavailable when
        the receiver still fails after the retries.
        """
        headers = {
            **self.headers,
            "X-Message-Id": quote(message.message_id, safe=_ID_SAFE),
            "X-Timestamp": str(int(message.timestamp)),
            "X-Flow-Count": str(message.count),
        }
        if "format_version" in message.headers:
            headers["X-Tstat-Format-Version"] = str(message.headers["format_version"])
        if message.headers:
            headers["X-Tstat-Headers"] = json.dumps(
                message.headers, separators=(",", ":"), sort_keys=True, default=str
            )

        def post() -> None:
            assert self._conn is not None, "publish() before open()"
            self._conn.request("POST", self.target, body=message.body, headers=headers)
            response = self._conn.getresponse()
            answer = response.read()  # all of it, or the connection cannot carry the next request
            self._answered += 1
            if 200 <= response.status < 300:
                return
            detail = f"HTTP {response.status} {response.reason}{_excerpt(answer)}"
            if response.status >= 500 or response.status in RETRY_STATUSES:
                raise _Retryable(detail)
            hint = ""
            if response.status in (401, 403):
                hint = f"; check auth_header/auth_value in [{SECTION}] of {self.config.name}"
            elif 300 <= response.status < 400:
                location = response.getheader("Location", "?").rpartition("@")[2]
                hint = f" to {location}; set [{SECTION}] url to the final address"
            raise TransportError(
                f"POST {self.url}: {detail}{hint} (message {message.message_id} not delivered)"
            )

        self._with_retries("POST", post)
        log.debug(
            "POST %s: message %s (%d flows) accepted", self.url, message.message_id, message.count
        )
        self.on_confirm(message)

    def flush(self) -> None:
        """Nothing to wait for: `publish` returns only once the message is confirmed."""

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        self._answered = 0

    def check(self) -> str:
        """Connect (and verify the TLS certificate) without sending a request."""
        self.open()
        try:
            if not self.https:
                tls = ""
            elif self.tls_verify:
                tls = ", TLS certificate verified"
            else:
                tls = ", TLS certificate NOT verified"
            return f"{self.url}: connection ok{tls}; no request sent"
        finally:
            self.close()

    def _ssl_context(self) -> ssl.SSLContext:
        if not self.tls_verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        try:
            # With a cafile, only that CA is trusted: a private archive pins its own CA.
            return ssl.create_default_context(cafile=self.ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{self.config.name}: [{SECTION}] ca_certs = {self.ca_certs!r}: "
                f"cannot load CA certificates: {exc.strerror or exc}"
            ) from None

    def _with_retries(self, what: str, attempt: Callable[[], None]) -> None:
        """Run `attempt`, retrying transient failures with exponential backoff.

        Raises TransportError at once for a failure retrying cannot mend (from `attempt`, or
        TLS), TransportUnavailable when the last retry fails too.
        """
        failures = 0
        while True:
            reused = self._answered > 0 and self._conn is not None and self._conn.sock is not None
            try:
                attempt()
                return
            except _Retryable as exc:
                failure = str(exc)
            except (OSError, http.client.HTTPException) as exc:
                self._disconnect()
                if isinstance(exc, ssl.SSLError) and not isinstance(
                    exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)
                ):
                    raise TransportError(self._tls_failure(exc)) from exc
                if reused and isinstance(exc, _CLOSED):
                    # Servers close idle keep-alive connections; that is no failure of ours.
                    log.debug("%s: reused connection lost (%s); reconnecting", self.url, exc)
                    continue
                failure = _connection_failure(exc)
            if failures >= self.retries:
                attempts = f"{failures + 1} attempt" + ("s" if failures else "")
                raise TransportUnavailable(
                    f"{what} {self.url}: {failure} ({attempts}; the next run resends "
                    "what was not confirmed)"
                )
            delay = min(self.retry_delay * 2**failures, MAX_RETRY_DELAY)
            failures += 1
            log.info(
                "%s %s: %s; retry %d/%d in %.1fs",
                what,
                self.url,
                failure,
                failures,
                self.retries,
                delay,
            )
            time.sleep(delay)

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the object stays; its next request reconnects
        self._answered = 0

    def _tls_failure(self, exc: ssl.SSLError) -> str:
        if isinstance(exc, ssl.SSLCertVerificationError):
            trusted = f"the CA in ca_certs = {self.ca_certs}" if self.ca_certs else "the system CAs"
            return (
                f"{self.url}: TLS certificate not accepted ({exc.verify_message}); it is checked "
                f"against {trusted}: set [{SECTION}] ca_certs to the CA that signed the server's "
                "certificate"
            )
        return f"{self.url}: TLS handshake failed: {exc.reason or exc}"


def _connection_failure(exc: BaseException) -> str:
    """A one-line reason for a lost or refused connection."""
    if isinstance(exc, (TimeoutError, socket.timeout)):  # distinct classes before Python 3.10
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _excerpt(answer: bytes, limit: int = 200) -> str:
    """The start of a response body, on one line, for an error message."""
    text = " ".join(answer.decode("utf-8", "replace").split())
    if not text:
        return ""
    return ": " + (text if len(text) <= limit else text[:limit] + "...")
