"""Test support for the real RabbitMQ broker: fixtures, a TCP proxy that can be cut, a test CA.

The fixtures are re-exported by conftest.py, so any test module can ask for `broker`
or `queue_name`. Locally a broker that does not answer skips the tests that need it,
saying how to start one; under CI conftest turns every skip into a failure.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import selectors
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

BROKER_HOST = os.environ.get("TSTAT_TEST_BROKER_HOST", "127.0.0.1")
BROKER_PORT = int(os.environ.get("TSTAT_TEST_BROKER_PORT", "5672"))
BROKER_USER = "guest"
BROKER_PASSWORD = "guest"


class Broker:
    """Administrative access to the test broker, for setting up and checking queues."""

    host = BROKER_HOST
    port = BROKER_PORT
    username = BROKER_USER
    password = BROKER_PASSWORD

    def connect(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(
            pika.ConnectionParameters(
                self.host,
                self.port,
                credentials=pika.PlainCredentials(self.username, self.password),
                connection_attempts=1,
                socket_timeout=10,
                blocked_connection_timeout=60,
            )
        )

    def declare(self, queue: str, **kwargs: Any) -> None:
        """Declare `queue` (queue_declare keyword arguments); raises pika's errors."""
        with self.connect() as conn:
            conn.channel().queue_declare(queue, **kwargs)

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        with self.connect() as conn:
            conn.channel().queue_bind(queue, exchange, routing_key)

    def delete(self, queue: str) -> None:
        with self.connect() as conn:
            conn.channel().queue_delete(queue)

    def fetch(self, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
        """Every message now in `queue`, taken off it in order."""
        got = []
        with self.connect() as conn:
            channel = conn.channel()
            while True:
                method, properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    return got
                got.append((properties, body))


def _reachable() -> str | None:
    try:
        Broker().connect().close()
    except pika.exceptions.AMQPError as exc:
        return repr(exc)
    return None


@pytest.fixture(scope="session")
def broker() -> Broker:
    """The real broker at 127.0.0.1:5672 (guest/guest)."""
    problem = _reachable()
    if problem is not None:
        message = (
            f"RabbitMQ not reachable at {BROKER_HOST}:{BROKER_PORT} ({problem}); start "
            "it with `service rabbitmq-server start` (or `docker run -p 5672:5672 "
            "rabbitmq:3`)"
        )
        pytest.skip(message)  # a failure under CI (conftest)
    return Broker()


@pytest.fixture
def queue_name(broker: Broker) -> Iterator[str]:
    """A fresh queue name, deleted (if it was created) when the test ends."""
    name = f"tstat-test-{uuid.uuid4().hex[:12]}"
    yield name
    broker.delete(name)


@dataclass
class BrokerUser:
    """A user made for one test with rabbitmqctl; no permissions until `permit()`."""

    name: str
    password: str

    def permit(self, configure: str = ".*", write: str = ".*", read: str = ".*") -> None:
        rabbitmqctl("set_permissions", "-p", "/", self.name, configure, write, read)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def broker_user(broker: Broker) -> Iterator[BrokerUser]:
    """A fresh user with a password nobody else uses, deleted at teardown."""
    if shutil.which("rabbitmqctl") is None or os.geteuid() != 0:
        message = "creating a broker user needs rabbitmqctl, run as root"
        pytest.skip(message)  # a failure under CI (conftest)
    user = BrokerUser(f"tstat-test-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}")
    rabbitmqctl("add_user", user.name, user.password)
    try:
        yield user
    finally:
        rabbitmqctl("delete_user", user.name)


def free_port() -> int:
    """A local TCP port with nothing listening on it (as far as anyone can tell)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """A TCP proxy in front of the broker, optionally terminating TLS.

    `cut_after`: after that many bytes from client to broker (all connections
    together), it forwards exactly up to that byte and then closes every connection,
    as a network failure would mid-stream. `cut_in_publish=N` cuts in the middle of the
    body of the N-th message published (counted in AMQP frames, so the cut does not
    depend on protocol overhead). `cut()` does it at once. `hold_replies()` stops
    forwarding from broker to client (acks pile up at the broker side) until
    `release_replies()`; `hold_after_publish=N` does it once the N-th message is
    published, so that the client is left with messages in flight. `coalesce_acks`: the
    broker's acks are held a moment and passed on as one ack with `multiple` set, as a
    broker may send them; `multiple_acks` counts those that covered more than one message.
    `withhold_confirms()` keeps forwarding everything from the broker (heartbeats too)
    except its publisher confirms (basic.ack and basic.nack), which it drops and counts
    in `dropped_confirms`: a broker that takes messages and never confirms them.
    """

    def __init__(
        self,
        upstream: tuple[str, int] = (BROKER_HOST, BROKER_PORT),
        server_context: ssl.SSLContext | None = None,
        cut_after: int | None = None,
        cut_in_publish: int | None = None,
        hold_after_publish: int | None = None,
        coalesce_acks: bool = False,
    ) -> None:
        self.upstream = upstream
        self.server_context = server_context
        self.cut_after = cut_after
        self.cut_in_publish = cut_in_publish
        self.hold_after_publish = hold_after_publish
        self.coalesce_acks = coalesce_acks
        self.publishes = 0
        self.multiple_acks = 0
        self._last_ack = 0  # one connection at a time is counted
        self.forwarded = 0
        self.errors: list[BaseException] = []
        self._cut = threading.Event()
        self._replies = threading.Event()
        self._replies.set()
        self._drop_confirms = threading.Event()
        self.dropped_confirms = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._start(self._accept_loop)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # listener closed
            self._start(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        try:
            if self.server_context is not None:
                client = self.server_context.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(self.upstream)
        except (OSError, ssl.SSLError) as exc:
            # A client that rejects our certificate ends up here: expected in TLS tests.
            self.errors.append(exc)
            client.close()
            return
        with self._lock:
            self._sockets += [client, upstream]
        try:
            self._pump(client, upstream)
        except OSError:
            pass
        finally:
            self._close_pair(client, upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        # One thread moves both directions: an SSLSocket must not be read and written
        # from two threads at once.
        framed = self.coalesce_acks or any(
            n is not None for n in (self.cut_in_publish, self.hold_after_publish)
        )
        up_frames, down_frames = AmqpFrames(header=True), AmqpFrames()
        acks: list[bytes] = []  # the broker's ack frames, not yet passed on
        with selectors.DefaultSelector() as sel:
            sel.register(client, selectors.EVENT_READ, "up")
            while not self._cut.is_set():
                registered = upstream in sel.get_map()
                if self._replies.is_set() and not registered:
                    sel.register(upstream, selectors.EVENT_READ, "down")
                elif not self._replies.is_set() and registered:
                    sel.unregister(upstream)
                pending = isinstance(client, ssl.SSLSocket) and client.pending()
                ready = (
                    [("up", None)]
                    if pending
                    else [(key.data, key) for key, _ in sel.select(timeout=0.05)]
                )
                for direction, _ in ready:
                    if direction == "up":
                        data = client.recv(65536)
                        if not data:
                            return
                        if framed:
                            if not self._forward_frames_up(upstream, up_frames.feed(data)):
                                return
                        elif not self._forward_up(upstream, data):
                            return
                    else:
                        data = upstream.recv(65536)
                        if not data:
                            return
                        # Always cut into frames: confirms may be withheld from any
                        # point on, and the cut must fall between two frames.
                        for frame in down_frames.feed(data):
                            if self._drop_confirms.is_set() and _is_confirm(frame):
                                self.dropped_confirms += 1
                                continue
                            if not self.coalesce_acks:
                                client.sendall(frame)
                                continue
                            if _is_ack(frame) and not frame[19] & 1:
                                acks.append(frame)
                                continue
                            # anything else keeps its place after the acks before it
                            self._pass_acks(client, acks)
                            if _is_ack(frame):  # the broker's own multiple ack
                                self._count_ack(frame)
                            client.sendall(frame)
                if not ready:  # the broker paused: pass the acks held so far on as one
                    self._pass_acks(client, acks)

    def _pass_acks(self, client: socket.socket, acks: list[bytes]) -> None:
        if not acks:
            return
        # One ack for the highest tag, `multiple` set: it covers every message before it,
        # which the broker acked too (one queue acks in publish order).
        last = acks[-1][:19] + b"\x01" + acks[-1][20:]
        self._count_ack(last)
        client.sendall(last)
        acks.clear()

    def _count_ack(self, frame: bytes) -> None:
        tag = int.from_bytes(frame[11:19], "big")
        if tag - self._last_ack > 1:
            self.multiple_acks += 1  # it confirms more than one message
        self._last_ack = max(self._last_ack, tag)

    def _forward_frames_up(self, upstream: socket.socket, frames: list[bytes]) -> bool:
        for frame in frames:
            kind = frame[0]
            if kind == 1 and frame[7:11] == b"\x00\x3c\x00\x28":  # basic.publish
                self.publishes += 1
                if self.publishes == self.hold_after_publish:
                    self.hold_replies()
            elif kind == 3 and self.publishes == self.cut_in_publish:  # its body
                upstream.sendall(frame[: len(frame) // 2])
                self.cut()
                return False
            upstream.sendall(frame)
        return True

    def _forward_up(self, upstream: socket.socket, data: bytes) -> bool:
        with self._lock:
            room = None if self.cut_after is None else self.cut_after - self.forwarded
            if room is not None and len(data) >= room:
                data = data[:room]
            self.forwarded += len(data)
        upstream.sendall(data)
        if room is not None and self.forwarded >= self.cut_after:  # type: ignore[operator]
            self.cut()
            return False
        return True

    def hold_replies(self) -> None:
        self._replies.clear()

    def release_replies(self) -> None:
        self._replies.set()

    def withhold_confirms(self) -> None:
        self._drop_confirms.set()

    def reopen(self) -> None:
        """After a cut, let new connections through again."""
        self._cut.clear()

    def cut(self) -> None:
        """Drop every connection through the proxy now (new ones are still accepted)."""
        self._cut.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    def _close_pair(self, *socks: socket.socket) -> None:
        for sock in socks:
            _shut(sock)

    def close(self) -> None:
        self.cut()
        _shut(self._listener)  # shutdown() is what wakes a thread blocked in accept()
        for thread in self._threads:
            thread.join(timeout=10)


class AmqpFrames:
    """Splits an AMQP 0-9-1 byte stream into whole frames (the client's opens with a header)."""

    def __init__(self, header: bool = False) -> None:
        self.buffer = b""
        self.header = header

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        frames = []
        if self.header:
            if len(self.buffer) < 8:
                return frames
            frames.append(self.buffer[:8])  # b"AMQP\0\0\x09\x01", passed on as is
            self.buffer, self.header = self.buffer[8:], False
        while len(self.buffer) >= 7:
            size = int.from_bytes(self.buffer[3:7], "big")
            if len(self.buffer) < 7 + size + 1:
                break
            frames.append(self.buffer[: 7 + size + 1])
            self.buffer = self.buffer[7 + size + 1 :]
        return frames


def _is_ack(frame: bytes) -> bool:
    """A basic.ack method frame (payload: class 60, method 80, delivery tag, `multiple` bit)."""
    return frame[0] == 1 and frame[7:11] == b"\x00\x3c\x00\x50"


def _is_confirm(frame: bytes) -> bool:
    """A basic.ack or basic.nack method frame (class 60, method 80 or 120)."""
    return frame[0] == 1 and frame[7:11] in (b"\x00\x3c\x00\x50", b"\x00\x3c\x00\x78")


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@dataclass
class TestCA:
    """A certificate authority made for one test session, and a server certificate it signed."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    ca_cert: Path
    server_cert: Path
    server_key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server_cert, self.server_key)
        return context


def make_test_ca(directory: Path, name: str, backend: str | None = None) -> TestCA:
    """A CA called `name` in `directory` and a server certificate for localhost and 127.0.0.1.

    Uses the `cryptography` package when it is installed, else the `openssl` command.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if backend is None:
        try:
            import cryptography  # noqa: F401

            backend = "cryptography"
        except ImportError:
            backend = "openssl"
    if backend == "cryptography":
        return _ca_with_cryptography(directory, name)
    if shutil.which("openssl") is None:
        pytest.fail("making a test CA needs the cryptography package or the openssl command")
    return _ca_with_openssl(directory, name)


def _ca_with_cryptography(directory: Path, name: str) -> TestCA:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = TestCA(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.server_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _ca_with_openssl(directory: Path, name: str) -> TestCA:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run(
        "req",
        "-x509",
        *ec_key,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,digitalSignature,keyCertSign,cRLSign",
    )
    run("req", *ec_key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (directory / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    )
    return TestCA(directory / "ca.pem", directory / "server.pem", directory / "server.key")


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_test_ca(tmp_path_factory.mktemp("ca"), "tstat test CA")


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A second CA the broker's certificate does not come from."""
    return make_test_ca(tmp_path_factory.mktemp("other-ca"), "some other CA")


class PrivateNode:
    """A RabbitMQ node of its own, started by the tests on free ports, for what cannot be
    done to the shared broker: stopping it mid-run.

    Its data and logs live in `directory`; it shares the machine's epmd and Erlang cookie
    (rabbitmq-server and rabbitmqctl switch to the rabbitmq user when run as root).
    """

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = f"{name}@localhost"
        self.host = "127.0.0.1"
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        # Its own config file: the system's may pin the listener to the shared port.
        (directory / "node.conf").write_text(f"listeners.tcp.local = {self.host}:{self.port}\n")
        (directory / "plugins").write_text("[].\n")  # no plugins: starts faster
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": str(directory / "node.conf"),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "plugins"),
            "RABBITMQ_PID_FILE": str(directory / "pid"),
        }
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(directory)], check=False)

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["rabbitmqctl", "-q", "-n", self.name, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self) -> None:
        subprocess.run(
            ["rabbitmq-server", "-detached"], env=self.env, capture_output=True, timeout=60
        )
        self.await_startup()

    def await_startup(self, seconds: float = 120) -> None:
        # await_startup fails at once while the node is not even registered yet.
        deadline = time.monotonic() + seconds
        while True:
            done = self.ctl("await_startup", "--timeout", "10", timeout=30)
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if done.returncode != 0:
            log = self.directory / "log" / f"{self.name}.log"
            tail = log.read_text()[-2000:] if log.exists() else "(no log)"
            raise RuntimeError(f"private RabbitMQ node {self.name} did not start: {tail}")

    def stop(self) -> None:
        self.ctl("stop", timeout=120)

    def connect(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(
            pika.ConnectionParameters(self.host, self.port, connection_attempts=1)
        )

    def drain(self, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
        """Every message left in `queue` (with its properties); the queue is deleted."""
        with self.connect() as conn:
            channel = conn.channel()
            arrived = []
            while True:
                method, props, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    break
                arrived.append((props, body))
            channel.queue_delete(queue)
        return arrived


@pytest.fixture(scope="session")
def private_node() -> Iterator[PrivateNode]:
    """One private node for the session (starting one takes seconds), stopped at the end."""
    _needs_rabbitmq_server()
    # Not under pytest's tmp_path: its parents are private to root, and the node runs as
    # the rabbitmq user.
    directory = Path(tempfile.mkdtemp(prefix="tstat-test-node-"))
    node = PrivateNode(directory, f"tstat-test-{uuid.uuid4().hex[:6]}")
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(directory, ignore_errors=True)


class Cluster:
    """Three private nodes joined into one RabbitMQ cluster, for what needs a majority to
    survive a node: losing a quorum queue's leader mid-run."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        tag = uuid.uuid4().hex[:6]
        self.nodes = [
            PrivateNode(directory / f"n{i}", f"tstat-test-{tag}-{i}") for i in range(size)
        ]
        for node in self.nodes:
            # Idle schedulers that do not spin: three VMs share 2 cores with the suite.
            node.env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = (
                "+sbwt none +sbwtdcpu none +sbwtdio none"
            )

    def start(self) -> None:
        # All at once: each node takes seconds to boot, mostly waiting.
        for process in [_detached(node) for node in self.nodes]:
            process.wait(timeout=60)
        for node in self.nodes:
            node.await_startup()
        seed = self.nodes[0].name
        for node in self.nodes[1:]:  # one at a time: joins to one seed do not overlap
            for args in (("stop_app",), ("join_cluster", seed), ("start_app",)):
                done = node.ctl(*args)
                if done.returncode != 0:
                    raise RuntimeError(f"{node.name}: rabbitmqctl {' '.join(args)}: {done.stderr}")

    def node(self, name: str) -> PrivateNode:
        return next(node for node in self.nodes if node.name == name)

    def running(self) -> list[PrivateNode]:
        return [node for node in self.nodes if node.ctl("ping", timeout=30).returncode == 0]

    def leader(self, queue: str) -> PrivateNode:
        """The node that holds the quorum queue's leader, asked of a running node."""
        listing = self.running()[0].ctl("list_queues", "name", "leader", "--no-table-headers")
        for line in listing.stdout.splitlines():
            name, _, leader = line.partition("\t")
            if name == queue:
                return self.node(leader.strip())
        raise RuntimeError(f"queue {queue} not found: {listing.stdout!r} {listing.stderr!r}")

    def stop(self) -> None:
        stopping = [
            subprocess.Popen(["rabbitmqctl", "-q", "-n", node.name, "stop"], env=node.env)
            for node in self.nodes
        ]
        for process in stopping:
            process.wait(timeout=120)


def _detached(node: PrivateNode) -> subprocess.Popen:
    return subprocess.Popen(
        ["rabbitmq-server", "-detached"],
        env=node.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _needs_rabbitmq_server() -> None:
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        message = "private RabbitMQ nodes need rabbitmq-server (apt install rabbitmq-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A 3-node cluster for the session (about 15 s to start on 2 cores), stopped at the
    end, even when starting it failed half way."""
    _needs_rabbitmq_server()
    # Readable by the rabbitmq user, as for private_node.
    directory = Path(tempfile.mkdtemp(prefix="tstat-test-cluster-"))
    directory.chmod(0o755)
    nodes = Cluster(directory)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
        shutil.rmtree(directory, ignore_errors=True)
