"""The HTTP transport against a real HTTP(S) server on 127.0.0.1 that each test scripts."""

from __future__ import annotations

import base64
import datetime
import http.server
import ipaddress
import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass
from email.message import Message as HeaderMap
from pathlib import Path
from typing import Callable, Union

import pytest

from tstat_transport.config import ConfigFile, Settings
from tstat_transport.errors import ConfigError, TransportError, TransportUnavailable
from tstat_transport.transports import get_transport
from tstat_transport.transports import http as http_module
from tstat_transport.transports.base import Message
from tstat_transport.transports.http import HttpTransport

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:  # the TLS tests skip locally, fail under CI
    x509 = None

DROP = "drop"  # an answer: the receiver stores the message, then drops the connection unanswered
Answer = Union[int, tuple[int, bytes], str]


@dataclass
class Request:
    path: str
    headers: HeaderMap
    body: bytes
    client_port: int


class Receiver:
    """A real HTTP server on an ephemeral port; `answer(n, request)` scripts each answer.

    `stored` holds what a real archive would have kept: the 2xx answers and the drops.
    """

    def __init__(
        self,
        answer: Callable[[int, Request], Answer],
        tls: ssl.SSLContext | None = None,
        close_after_answer: bool = False,
    ) -> None:
        self.answer = answer
        self.close_after_answer = close_after_answer
        self.requests: list[Request] = []
        self.stored: list[Request] = []
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.receiver = self  # type: ignore[attr-defined]
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        port = self.server.server_address[1]
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{port}/ingest/flows?site=test"
        # A short poll interval so that shutdown() at teardown returns quickly.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def record(self, request: Request) -> Answer:
        with self.lock:
            answer = self.answer(len(self.requests), request)
            self.requests.append(request)
            status = answer[0] if isinstance(answer, tuple) else answer
            if answer == DROP or 200 <= status < 300:
                self.stored.append(request)
            return answer

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a production server would

    def do_POST(self) -> None:
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = receiver.record(Request(self.path, self.headers, body, self.client_address[1]))
        if answer == DROP:
            self.close_connection = True
            return
        status, reply = answer if isinstance(answer, tuple) else (answer, b"")
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
        # Without a Connection: close header: the client learns only when it reuses the socket.
        self.close_connection = receiver.close_after_answer

    def log_message(self, format: str, *args: object) -> None:
        pass  # no access log in the test output


@pytest.fixture
def receiver():
    """Factory: `receiver(answer)` starts a server, stopped at teardown."""
    started: list[Receiver] = []

    def start(answer: Callable[[int, Request], Answer] = lambda n, r: 200, **kw) -> Receiver:
        started.append(Receiver(answer, **kw))
        return started[-1]

    yield start
    for r in started:
        r.stop()


@pytest.fixture(autouse=True)
def sleeps(monkeypatch) -> list[float]:
    """The backoff delays the transport asked for; no test really waits."""
    asked: list[float] = []
    monkeypatch.setattr(http_module.time, "sleep", asked.append)
    return asked


@pytest.fixture
def messages(data_dir: Path) -> list[Message]:
    """Real flow objects (one directory of the original tool's output) in messages of 100."""
    flows = json.loads((data_dir / "expected-original/full/2026_11_24_19_20.out.json").read_bytes())
    return [
        Message(
            body=json.dumps(flows[i : i + 100]).encode(),
            count=len(flows[i : i + 100]),
            message_id=f"testsensor:0:2026_11_24_19_20.out:flows:{i // 100}",
            timestamp=flows[i]["start"],
            headers={"sensor": "testsensor", "instance": 0},
        )
        for i in range(0, len(flows), 100)
    ]


def make_transport(
    tmp_path: Path, url: str, environ: dict[str, str] | None = None, **keys: object
) -> tuple[HttpTransport, list[Message]]:
    """An HttpTransport reading `[http] url = ...` plus `keys` from a real config file,
    and the list its confirmations go to."""
    path = tmp_path / "config.ini"
    lines = ["[http]", f"url = {url}", *(f"{k} = {v}" for k, v in keys.items())]
    path.write_text("\n".join(lines) + "\n")
    settings = Settings(directory=tmp_path, transport="http", config_path=path)
    transport = HttpTransport(settings, ConfigFile(path, environ=environ or {}))
    confirmed: list[Message] = []
    transport.on_confirm = confirmed.append
    return transport, confirmed


def send_all(transport: HttpTransport, messages: list[Message]) -> None:
    with transport:
        for message in messages:
            transport.publish(message)
        transport.flush()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_registered_as_http():
    assert get_transport("http") is HttpTransport
    assert HttpTransport.window == 1 and HttpTransport.marks_processed


def test_messages_arrive_intact_with_headers(tmp_path, receiver, messages, sleeps):
    server = receiver()
    transport, confirmed = make_transport(tmp_path, server.url)

    send_all(transport, messages)

    assert [r.body for r in server.requests] == [m.body for m in messages]
    for request, message in zip(server.requests, messages):
        assert request.path == "/ingest/flows?site=test"
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["X-Message-Id"] == message.message_id
        assert request.headers["X-Timestamp"] == str(message.timestamp)
        assert request.headers["X-Flow-Count"] == str(message.count)
        assert json.loads(request.headers["X-Tstat-Headers"]) == message.headers
        assert "Authorization" not in request.headers
    assert len(json.loads(server.requests[0].body)) == 100
    assert confirmed == messages
    assert len({r.client_port for r in server.requests}) == 1  # one keep-alive connection
    assert sleeps == []


def test_auth_value_from_environment_is_sent_and_never_logged(tmp_path, receiver, messages, caplog):
    token = "Bearer s3cr3t-token"
    server = receiver(lambda n, r: 200 if n == 0 else (401, b"token expired"))
    transport, confirmed = make_transport(
        tmp_path,
        server.url,
        environ={"TSTAT_HTTP_TOKEN": token},
        auth_header="X-Archive-Token",
        auth_value="${TSTAT_HTTP_TOKEN}",
    )
    caplog.set_level("DEBUG")

    with pytest.raises(TransportError) as failed:
        send_all(transport, messages)

    assert [r.headers["X-Archive-Token"] for r in server.requests] == [token, token]
    assert confirmed == messages[:1]
    assert "s3cr3t" not in str(failed.value) + caplog.text + transport.describe()
    assert "HTTP 401 Unauthorized: token expired" in str(failed.value)
    assert "check auth_header/auth_value in [http]" in str(failed.value)


def test_credentials_in_url_go_as_basic_auth_and_are_hidden(tmp_path, receiver, messages):
    server = receiver()
    url = server.url.replace("://", "://archiver:pa%40ss@")
    transport, _ = make_transport(tmp_path, url)

    send_all(transport, messages[:1])

    expected = "Basic " + base64.b64encode(b"archiver:pa@ss").decode()
    assert server.requests[0].headers["Authorization"] == expected
    assert transport.describe() == server.url


@pytest.mark.parametrize("failure", [503, DROP], ids=["503", "stored-then-dropped"])
def test_receiver_failing_every_other_request_gets_everything(
    tmp_path, receiver, messages, failure
):
    server = receiver(lambda n, r: failure if n % 2 == 0 else 200)
    transport, confirmed = make_transport(tmp_path, server.url, retries=1)

    send_all(transport, messages)

    assert confirmed == messages
    assert len(server.requests) == 2 * len(messages)
    # At least once: after deduplication by X-Message-Id the archive holds each message once.
    by_id = {r.headers["X-Message-Id"]: r.body for r in server.stored}
    assert by_id == {m.message_id: m.body for m in messages}
    assert len(server.stored) == (2 * len(messages) if failure == DROP else len(messages))


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_temporary_answers_are_retried(tmp_path, receiver, messages, status, sleeps):
    server = receiver(lambda n, r: status if n < 2 else 200)
    transport, confirmed = make_transport(tmp_path, server.url, retries=2, retry_delay=0.25)

    send_all(transport, messages[:1])

    assert confirmed == messages[:1]
    assert sleeps == [0.25, 0.5]


def test_backoff_doubles_up_to_a_bound_then_gives_up(tmp_path, receiver, messages, sleeps):
    server = receiver(lambda n, r: (503, b"<h1>Service\nUnavailable</h1>"))
    transport, confirmed = make_transport(tmp_path, server.url, retries=4, retry_delay=20)

    with pytest.raises(TransportUnavailable) as failed:
        send_all(transport, messages)

    assert sleeps == [20, 40, 60, 60]
    assert len(server.requests) == 5
    assert confirmed == []
    assert str(failed.value) == (
        f"POST {server.url}: HTTP 503 Service Unavailable: <h1>Service Unavailable</h1> "
        "(5 attempts; the next run resends what was not confirmed)"
    )
    assert failed.value.exit_code == 75


@pytest.mark.parametrize(
    "answer, shown",
    [
        (
            (400, b"body is not a list of flows"),
            "HTTP 400 Bad Request: body is not a list of flows",
        ),
        (404, "HTTP 404 Not Found"),
        (413, "HTTP 413 Request Entity Too Large"),
    ],
)
def test_client_error_fails_at_once(tmp_path, receiver, messages, sleeps, answer, shown):
    server = receiver(lambda n, r: answer)
    transport, confirmed = make_transport(tmp_path, server.url, retries=5)

    with pytest.raises(TransportError) as failed:
        send_all(transport, messages)

    assert not isinstance(failed.value, TransportUnavailable)
    assert failed.value.exit_code == 1
    assert str(failed.value) == (
        f"POST {server.url}: {shown} (message {messages[0].message_id} not delivered)"
    )
    assert len(server.requests) == 1
    assert confirmed == []
    assert sleeps == []


def test_redirect_is_not_followed(tmp_path, receiver, messages):
    def moved(n: int, request: Request) -> Answer:
        return 308

    server = receiver(moved)
    transport, confirmed = make_transport(tmp_path, server.url)

    with pytest.raises(
        TransportError, match="HTTP 308 Permanent Redirect to \\?; set \\[http\\] url"
    ):
        send_all(transport, messages)
    assert confirmed == []


def test_nothing_listening_is_unavailable(tmp_path, messages, sleeps):
    url = f"http://127.0.0.1:{free_port()}/ingest"
    transport, confirmed = make_transport(tmp_path, url, retries=2, retry_delay=0.5)

    with pytest.raises(TransportUnavailable) as failed:
        send_all(transport, messages)

    assert str(failed.value) == (
        f"connect to {url}: Connection refused "
        "(3 attempts; the next run resends what was not confirmed)"
    )
    assert failed.value.exit_code == 75
    assert sleeps == [0.5, 1.0]
    assert confirmed == []


def test_receiver_that_never_answers_times_out(tmp_path, receiver, messages, sleeps):
    answered = threading.Event()

    def stall(n: int, request: Request) -> Answer:
        answered.wait(5)  # released at the end of the test; the client gave up long before
        return DROP  # nobody is left to answer

    server = receiver(stall)
    transport, confirmed = make_transport(tmp_path, server.url, retries=1, timeout=0.1)
    try:
        with pytest.raises(TransportUnavailable, match=r": timed out \(2 attempts;"):
            send_all(transport, messages)
    finally:
        answered.set()
    assert confirmed == []
    assert len(sleeps) == 1


def test_message_id_outside_printable_ascii_is_percent_encoded(tmp_path, receiver, messages):
    server = receiver()
    transport, _ = make_transport(tmp_path, server.url)
    message = messages[0]
    message.message_id = "capteur-é:0:100%:0"

    send_all(transport, [message])

    assert server.requests[0].headers["X-Message-Id"] == "capteur-%C3%A9:0:100%25:0"


def test_server_closing_idle_connection_costs_no_retry(tmp_path, receiver, messages, sleeps):
    server = receiver(close_after_answer=True)
    transport, confirmed = make_transport(tmp_path, server.url, retries=0)

    send_all(transport, messages)

    assert confirmed == messages
    assert [r.body for r in server.requests] == [m.body for m in messages]
    assert sleeps == []


def test_check_connects_without_sending(tmp_path, receiver):
    server = receiver()
    transport, _ = make_transport(tmp_path, server.url)

    assert transport.check() == f"{server.url}: connection ok; no request sent"
    assert server.requests == []


def test_constructing_does_no_io(tmp_path):
    transport, _ = make_transport(
        tmp_path, f"https://127.0.0.1:{free_port()}/x", ca_certs=tmp_path / "absent.pem"
    )
    assert transport.describe() == f"https://127.0.0.1:{transport.port}/x"


@pytest.mark.parametrize(
    "keys, error",
    [
        ({"url": "ftp://archive/x"}, "[http] url = 'ftp://archive/x': expected http://host"),
        ({"url": "https://u:pw@/x"}, "[http] url = 'https:///x': expected http://host"),
        ({"url": "http://archive:99999/x"}, "[http] url = 'http://archive:99999/x': expected"),
        ({"url": "http://archive/a b"}, "[http] url = 'http://archive/a b': expected"),
        ({"retries": "-1"}, "[http] retries = '-1': expected an integer 0-100"),
        ({"retry_delay": "soon"}, "[http] retry_delay = 'soon': expected a number >= 0"),
        ({"timeout": "0"}, "[http] timeout = 0.0: expected a number of seconds > 0"),
        ({"tls_verify": "maybe"}, "[http] tls_verify = 'maybe': expected true or false"),
        ({"auth_header": "X-Token"}, "[http] auth_header = 'X-Token': needs auth_value"),
        ({"auth_value": "${UNSET_TOKEN}"}, "[http] auth_value: environment variable UNSET_TOKEN"),
        ({"auth_value": "${EMPTY_TOKEN:}"}, "[http] auth_value: is empty"),
        ({"auth_value": "${BAD_TOKEN}"}, "[http] auth_value: holds a line break"),
        (
            {"auth_header": "X Token", "auth_value": "t"},
            "[http] auth_header = 'X Token': not an HTTP header name",
        ),
        (
            {"url": "http://u:p@archive/", "auth_value": "t"},
            "[http] auth_header = 'Authorization': already set",
        ),
    ],
)
def test_bad_config_names_file_section_key(tmp_path, keys, error):
    keys = {"url": "https://archive.example.net/ingest", **keys}
    environ = {"BAD_TOKEN": "abc\r\nX-Injected: 1"}
    with pytest.raises(ConfigError) as failed:
        make_transport(tmp_path, environ=environ, **keys)
    assert str(failed.value).startswith(f"{tmp_path / 'config.ini'}: ")
    assert error in str(failed.value)
    assert "abc" not in str(failed.value)


def test_missing_url_is_a_config_error(tmp_path):
    path = tmp_path / "config.ini"
    path.write_text("[http]\nretries = 1\n")
    with pytest.raises(ConfigError, match=r"\[http\] url: required key is missing"):
        HttpTransport(Settings(directory=tmp_path), ConfigFile(path))


# --- TLS ----------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path  # signed the server's certificate
    other_ca: Path  # signed nothing we talk to
    server: ssl.SSLContext


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, subject_key, issuer, issuer_key, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        usage = dict.fromkeys(
            [
                "digital_signature",
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "encipher_only",
                "decipher_only",
            ],
            False,
        )
        builder = builder.add_extension(
            x509.KeyUsage(key_cert_sign=True, crl_sign=True, **usage), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    """Two test CAs and a server certificate for 127.0.0.1 signed by the first."""
    if x509 is None:
        pytest.skip("cryptography not installed: pip install -e '.[test]'")  # fails under CI
    out = tmp_path_factory.mktemp("pki")
    pem = serialization.Encoding.PEM
    paths = {}
    ca_keys = {}
    for label in ("ca", "other_ca"):
        key = ec.generate_private_key(ec.SECP256R1())
        ca_keys[label] = key
        cert = _certificate(
            _name(f"tstat test {label}"), key, _name(f"tstat test {label}"), key, True
        )
        paths[label] = out / f"{label}.pem"
        paths[label].write_bytes(cert.public_bytes(pem))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate(
        _name("127.0.0.1"), server_key, _name("tstat test ca"), ca_keys["ca"], False
    )
    (out / "server.pem").write_bytes(server_cert.public_bytes(pem))
    (out / "server.key").write_bytes(
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(out / "server.pem", out / "server.key")
    return Pki(paths["ca"], paths["other_ca"], context)


def test_https_with_the_right_ca(tmp_path, receiver, messages, pki):
    server = receiver(tls=pki.server)
    transport, confirmed = make_transport(tmp_path, server.url, ca_certs=pki.ca)

    assert (
        transport.check()
        == f"{server.url}: connection ok, TLS certificate verified; no request sent"
    )
    send_all(transport, messages)

    assert [r.body for r in server.requests] == [m.body for m in messages]
    assert confirmed == messages


@pytest.mark.parametrize("ca", ["other_ca", None], ids=["wrong-ca", "system-cas"])
def test_https_with_an_untrusted_certificate_is_refused(
    tmp_path, receiver, messages, pki, sleeps, ca
):
    server = receiver(tls=pki.server)
    keys = {"ca_certs": getattr(pki, ca)} if ca else {}
    transport, confirmed = make_transport(tmp_path, server.url, retries=3, **keys)

    with pytest.raises(TransportError) as failed:
        send_all(transport, messages)

    assert not isinstance(failed.value, TransportUnavailable)  # an operator must act
    trusted = f"the CA in ca_certs = {pki.other_ca}" if ca else "the system CAs"
    assert str(failed.value) == (
        f"{server.url}: TLS certificate not accepted (unable to get local issuer certificate); "
        f"it is checked against {trusted}: set [http] ca_certs to the CA that signed the "
        "server's certificate"
    )
    assert sleeps == []
    assert server.requests == [] and confirmed == []


def test_https_without_verification_warns(tmp_path, receiver, messages, pki, caplog):
    server = receiver(tls=pki.server)
    transport, confirmed = make_transport(
        tmp_path, server.url, ca_certs=pki.other_ca, tls_verify="false"
    )

    send_all(transport, messages[:1])

    assert confirmed == messages[:1]
    [warning] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert warning.getMessage() == (
        f"{server.url}: TLS certificate verification is off ([http] tls_verify = false in "
        f"{tmp_path / 'config.ini'}): anyone on the path can read and alter the flows; "
        "ca_certs is not used"
    )


def test_unreadable_ca_file_is_a_config_error_on_open(tmp_path):
    transport, _ = make_transport(
        tmp_path, "https://127.0.0.1:1/x", ca_certs=tmp_path / "absent.pem"
    )
    with pytest.raises(ConfigError) as failed:
        transport.open()
    assert str(failed.value) == (
        f"{tmp_path / 'config.ini'}: [http] ca_certs = '{tmp_path / 'absent.pem'}': "
        "cannot load CA certificates: No such file or directory"
    )


# -- through tstat_send: the same marker and resume rules as rabbit --------------------


def _send_http(tmp_path: Path, url: str, root: Path, **keys: object) -> int:
    from tstat_transport.cli import send_main

    cfg = tmp_path / "http.ini"
    cfg.write_text(f"[http]\nurl = {url}\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()))
    return send_main(["-t", "http", "-c", str(cfg), "-T", "0", "-S", "s1", "-d", str(root)])


def test_tstat_send_over_http_with_a_receiver_failing_half_the_time(
    tmp_path, receiver, tstat_root, capsys
):
    from tstat_transport.cli import send_main

    root = tstat_root("full")
    assert send_main(["-N", "-T", "0", "-S", "s1", "-d", str(root)]) == 0
    want = [o for line in capsys.readouterr().out.splitlines() for o in json.loads(line)]
    server = receiver(lambda n, r: 503 if n % 2 == 0 else 200)
    assert _send_http(tmp_path, server.url, root, retries=2) == 0
    got = [o for r in server.stored for o in json.loads(r.body)]
    assert got == want
    done = sorted(d.name for d in root.glob("*.out") if (d / ".processed").exists())
    assert done == ["2026_11_24_19_18.out", "2026_11_24_19_20.out", "2026_11_24_19_22.out"]


def test_tstat_send_over_http_stops_on_a_client_error_and_resumes(
    tmp_path, receiver, tstat_root, capsys
):
    root = tstat_root("full")
    # The archive accepts 8 messages, then refuses (a revoked token, say).
    server = receiver(lambda n, r: 200 if n < 8 else (403, b"token revoked"))
    assert _send_http(tmp_path, server.url, root) == 1
    err = capsys.readouterr().err
    assert "403" in err and "127.0.0.1" in err
    assert (root / "2026_11_24_19_18.out/.processed").exists()
    state = json.loads((root / "2026_11_24_19_20.out/.tstat_send.state").read_text())
    assert state["files"]["log_tcp_complete"]["messages"] == 2  # 6 + 2 accepted
    fixed = receiver()
    assert _send_http(tmp_path, fixed.url, root) == 0
    ids = [r.headers["X-Message-Id"] for r in server.stored + fixed.stored]
    assert len(ids) == len(set(ids)) == 19  # window 1: nothing sent twice
    assert ids[8] == "s1:0:2026_11_24_19_20.out:log_tcp_complete:2"


class _CountingHandler(_Handler):
    """Counts each request as it arrives, before the receiver (under its lock) answers."""

    def do_POST(self) -> None:
        self.server.arrived.append(self.client_address)  # type: ignore[attr-defined]
        super().do_POST()


def test_tstat_send_over_http_has_one_message_in_flight_and_a_kill_resends_only_it(
    tmp_path, receiver, tstat_root, capsys
):
    """Window 1: the receiver never sees a request before the one before it was answered,
    and a run killed (kill -9) while one request waits for its answer resends that one
    message and nothing else (the progress is recorded after every answer)."""
    from tstat_transport.cli import send_main

    root = tstat_root("full")
    assert send_main(["-N", "-T", "0", "-S", "s1", "-d", str(root)]) == 0
    reference = capsys.readouterr().out.splitlines()
    held, release = threading.Event(), threading.Event()
    held_at = 9  # the 4th message of the second directory (the first is marked by then)

    def answer(n: int, request: Request) -> Answer:
        if n == held_at:
            held.set()
            release.wait(30)
            return DROP  # stored, its answer never sent: the sender was killed meanwhile
        return 200

    server = receiver(answer)
    server.server.RequestHandlerClass = _CountingHandler
    server.server.arrived = arrived = []  # type: ignore[attr-defined]
    cfg = tmp_path / "http.ini"
    cfg.write_text(f"[http]\nurl = {server.url}\n")
    command = [sys.executable, str(Path(__file__).parent.parent / "bin" / "tstat_send")]
    command += ["-t", "http", "-c", str(cfg), "-T", "0", "-S", "s1", "-d", str(root)]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert held.wait(30), run.stderr.read() if run.poll() is not None else "no request"
        threading.Event().wait(0.5)  # a wider window sends its next request now (time.sleep
        # is the `sleeps` fixture's here)
        assert len(arrived) == held_at + 1, "a request sent before the one before was answered"
        run.kill()
        run.wait()
    finally:
        release.set()
        if run.poll() is None:
            run.kill()
            run.wait()
        run.stderr.close()  # type: ignore[union-attr]
    assert run.returncode == -signal.SIGKILL
    # The next run sends the rest, starting again with the unanswered message.
    assert subprocess.run(command, capture_output=True, timeout=60).returncode == 0
    ids = [r.headers["X-Message-Id"] for r in server.stored]
    in_flight = "s1:0:2026_11_24_19_20.out:log_tcp_complete:3"
    assert ids[held_at] == ids[held_at + 1] == in_flight
    assert len(ids) == len(reference) + 1 and len(set(ids)) == len(reference) == 19
    assert sorted(r.body for r in server.stored[: held_at + 1] + server.stored[held_at + 2 :]) == (
        sorted(line.encode() for line in reference)
    )
