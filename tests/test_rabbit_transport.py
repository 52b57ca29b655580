"""The RabbitMQ transport against the real broker: what arrives, is confirmed, or fails how."""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from pathlib import Path

import pika
import pika.exceptions
import pytest
from broker import Broker, PrivateNode, Proxy, free_port, make_test_ca

from tstat_transport.config import ConfigFile, Settings
from tstat_transport.errors import ConfigError, TransportError, TransportUnavailable
from tstat_transport.transports import Message, get_transport
from tstat_transport.transports.rabbit import RabbitTransport

WRONG_PASSWORD = "Not-The-Password-7f3a"


def write_config(
    tmp_path: Path,
    rabbit: dict[str, object],
    queue_options: dict | None = None,
    ssl_options: dict | None = None,
) -> Path:
    # Tests keep retries short: the backoff is real sleeping.
    rabbit = {"connect_retries": 0, "retry_delay": 0, "timeout": 10, **rabbit}
    lines = ["[rabbit]", *(f"{k} = {v}" for k, v in rabbit.items())]
    if queue_options is not None:
        lines += ["[rabbit_queue_options]", *(f"{k} = {v}" for k, v in queue_options.items())]
    if ssl_options is not None:
        lines += ["[ssl_options]", *(f"{k} = {v}" for k, v in ssl_options.items())]
    path = tmp_path / f"config-{uuid.uuid4().hex[:6]}.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_transport(
    tmp_path: Path,
    rabbit: dict[str, object],
    queue_options: dict | None = None,
    ssl_options: dict | None = None,
) -> RabbitTransport:
    path = write_config(tmp_path, rabbit, queue_options, ssl_options)
    transport = RabbitTransport(Settings(directory=tmp_path), ConfigFile(path))
    transport.confirmed = []  # type: ignore[attr-defined]
    transport.on_confirm = transport.confirmed.append  # type: ignore[attr-defined]
    return transport


def broker_config(broker: Broker, queue: str, **extra: object) -> dict[str, object]:
    return {
        "host": broker.host,
        "port": broker.port,
        "username": broker.username,
        "password": broker.password,
        "queue": queue,
        **extra,
    }


def make_messages(n: int, flows: int = 5, pad: int = 0) -> list[Message]:
    """`n` messages, each a JSON array of small flow-like objects, as the sender makes them."""
    messages = []
    for i in range(n):
        flows_list = [
            {
                "src_ip": "192.0.2.1",
                "dst_ip": "198.51.100.7",
                "src_port": 40000 + j,
                "dst_port": 443,
                "protocol": "tcp",
                "c_bytes_all": 1000 * i + j,
                "pad": "x" * pad,
            }
            for j in range(flows)
        ]
        messages.append(
            Message(
                body=json.dumps(flows_list).encode(),
                count=flows,
                message_id=f"sensor-a/0/2026_11_24_19_18.out/log_tcp_complete/{i}",
                timestamp=1795000000 + i,
                headers={"sensor": "sensor-a", "chunk": i},
                token=i,
            )
        )
    return messages


def ids(messages: list[Message]) -> list[str]:
    return [m.message_id for m in messages]


# -- delivery ---------------------------------------------------------------------------


def test_registry_finds_rabbit() -> None:
    assert get_transport("rabbit") is RabbitTransport


def test_window_pipelines_messages_and_all_arrive(broker, queue_name, tmp_path) -> None:
    messages = make_messages(40)
    with Proxy() as proxy:
        # A short heartbeat so that a publish wrongly waiting for its ack fails in seconds.
        transport = make_transport(
            tmp_path, broker_config(broker, queue_name, window=8, port=proxy.port, heartbeat=5)
        )
        with transport:
            # With the broker's replies held back no ack can arrive, yet a whole window of
            # publishes returns: publish does not wait for each confirm.
            proxy.hold_replies()
            for message in messages[:8]:
                transport.publish(message)
            assert transport.confirmed == []
            proxy.release_replies()
            for message in messages[8:]:
                transport.publish(message)
            transport.flush()
            assert ids(transport.confirmed) == ids(messages)  # each exactly once, in order

    arrived = broker.fetch(queue_name)
    assert [body for _, body in arrived] == [m.body for m in messages]
    for (properties, _), message in zip(arrived, messages):
        assert properties.delivery_mode == 2
        assert properties.content_type == "application/json"
        assert properties.message_id == message.message_id
        assert properties.timestamp == message.timestamp
        assert properties.headers == message.headers


def test_a_body_larger_than_a_frame_arrives_whole(broker, queue_name, tmp_path) -> None:
    # The broker's frame_max is 128 KiB: such a body goes out as several body frames.
    messages = make_messages(3, flows=100, pad=3000)
    messages[2].body = b"[]"  # and a small one after them
    assert len(messages[0].body) > 2 * 131072
    transport = make_transport(tmp_path, broker_config(broker, queue_name))
    with transport:
        for message in messages:
            transport.publish(message)
        transport.flush()
    # A broker may ack a small message before a large one published earlier.
    assert sorted(ids(transport.confirmed)) == sorted(ids(messages))
    arrived = broker.fetch(queue_name)
    assert [body for _, body in arrived] == [m.body for m in messages]
    assert [props.headers for props, _ in arrived] == [m.headers for m in messages]


def test_declares_quorum_queue_from_queue_arguments(broker, queue_name, tmp_path) -> None:
    transport = make_transport(
        tmp_path, broker_config(broker, queue_name), {"durable": "true", "x-queue-type": "quorum"}
    )
    with transport:
        for message in make_messages(3):
            transport.publish(message)
        transport.flush()
    assert len(broker.fetch(queue_name)) == 3
    # The broker says what type the queue is when asked to redeclare it as another type.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="quorum") as info:
        broker.declare(queue_name, durable=True, arguments={"x-queue-type": "classic"})
    assert info.value.reply_code == 406
    broker.declare(queue_name, durable=True, arguments={"x-queue-type": "quorum"})


def test_declared_queue_is_bound_to_a_named_exchange(broker, queue_name, tmp_path) -> None:
    key = f"key-{queue_name}"
    transport = make_transport(
        tmp_path, broker_config(broker, queue_name, exchange="amq.direct", routing_key=key)
    )
    with transport:
        transport.publish(make_messages(1)[0])
        transport.flush()
    assert len(broker.fetch(queue_name)) == 1


def test_passive_publishes_to_an_archive_queue_as_it_is(broker, queue_name, tmp_path) -> None:
    # As NetSage's archive: a durable queue with arguments, bound to amq.direct.
    broker.declare(queue_name, durable=True, arguments={"x-max-length": 100000})
    broker.bind(queue_name, "amq.direct", queue_name)
    transport = make_transport(
        tmp_path, broker_config(broker, queue_name, exchange="amq.direct"), {"passive": "true"}
    )
    with transport:
        for message in make_messages(2):
            transport.publish(message)
        transport.flush()
    assert len(transport.confirmed) == 2
    assert len(broker.fetch(queue_name)) == 2

    redeclare = make_transport(tmp_path, broker_config(broker, queue_name), {"durable": "false"})
    with pytest.raises(TransportError) as info:
        redeclare.open()
    text = str(info.value)
    assert "406" in text and queue_name in text and "passive = true" in text
    assert not isinstance(info.value, TransportUnavailable)


def test_passive_missing_queue_is_an_error(broker, queue_name, tmp_path) -> None:
    transport = make_transport(tmp_path, broker_config(broker, queue_name), {"passive": "yes"})
    with pytest.raises(TransportError) as info:
        transport.open()
    assert "404" in str(info.value) and queue_name in str(info.value)
    assert not isinstance(info.value, TransportUnavailable)


def test_unroutable_message_fails_and_is_never_confirmed(broker, tmp_path) -> None:
    transport = make_transport(
        tmp_path,
        {
            **broker_config(broker, ""),
            "exchange": "amq.direct",
            "routing_key": f"nobody-{uuid.uuid4().hex}",
        },
    )
    with transport:
        transport.publish(make_messages(1)[0])
        with pytest.raises(TransportError, match="returned unroutable") as info:
            transport.flush()
    assert "NO_ROUTE" in str(info.value)
    assert transport.confirmed == []


def test_queue_deleted_mid_run_fails_only_the_returned_messages(
    broker, queue_name, tmp_path
) -> None:
    messages = make_messages(5)
    transport = make_transport(tmp_path, broker_config(broker, queue_name, window=4))
    with transport:
        for message in messages[:3]:
            transport.publish(message)
        transport.flush()
        broker.delete(queue_name)
        with pytest.raises(TransportError, match="returned unroutable"):
            for message in messages[3:]:
                transport.publish(message)
            transport.flush()
    assert ids(transport.confirmed) == ids(messages[:3])


def test_nack_fails_and_reports_only_accepted_messages(broker, queue_name, tmp_path) -> None:
    messages = make_messages(5)
    transport = make_transport(
        tmp_path,
        broker_config(broker, queue_name, window=8),
        {"x-max-length": 2, "x-overflow": "reject-publish"},
    )
    with transport:
        with pytest.raises(TransportError, match="nacked") as info:
            for message in messages:
                transport.publish(message)
            transport.flush()
    assert not isinstance(info.value, TransportUnavailable)
    assert ids(transport.confirmed) == ids(messages[:2])
    assert [body for _, body in broker.fetch(queue_name)] == [m.body for m in messages[:2]]


def test_exception_from_on_confirm_propagates_and_close_still_works(
    broker, queue_name, tmp_path
) -> None:
    transport = make_transport(tmp_path, broker_config(broker, queue_name))

    def full_disk(message: Message) -> None:
        raise OSError(28, "No space left on device")

    transport.on_confirm = full_disk
    with pytest.raises(OSError, match="No space"):
        with transport:
            transport.publish(make_messages(1)[0])
            transport.flush()
    assert transport._conn is None


# -- connection failures -------------------------------------------------------------------


def test_wrong_password_is_an_error_naming_the_broker_not_the_password(
    broker, queue_name, tmp_path, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    transport = make_transport(
        tmp_path, broker_config(broker, queue_name, password=WRONG_PASSWORD, connect_retries=3)
    )
    with pytest.raises(TransportError) as info:
        transport.open()
    text = str(info.value)
    assert not isinstance(info.value, TransportUnavailable)
    assert f"{broker.host}:{broker.port}" in text and "'guest'" in text and "vhost '/'" in text
    assert "login refused" in text
    assert WRONG_PASSWORD not in text
    assert WRONG_PASSWORD not in caplog.text  # not even pika's protocol detail
    assert "retry" not in caplog.text  # a refused login is not retried
    assert WRONG_PASSWORD not in transport.describe()
    assert isinstance(info.value.__cause__, pika.exceptions.AMQPError)


def user_config(broker, user, queue) -> dict[str, object]:
    return broker_config(broker, queue, username=user.name, password=user.password)


def test_password_never_logged_even_with_protocol_detail(
    broker, broker_user, queue_name, tmp_path, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="pika")  # whatever an earlier CLI run set
    broker_user.permit()
    transport = make_transport(tmp_path, user_config(broker, broker_user, queue_name))
    with transport:
        transport.publish(make_messages(1)[0])
        transport.flush()
    assert len(transport.confirmed) == 1
    assert any(r.name.startswith("pika") for r in caplog.records)  # pika did log its detail
    assert broker_user.password not in caplog.text
    assert broker_user.password not in transport.describe()


def test_user_without_access_to_the_vhost_is_refused(
    broker, broker_user, queue_name, tmp_path
) -> None:
    transport = make_transport(tmp_path, user_config(broker, broker_user, queue_name))
    with pytest.raises(TransportError, match="may not use it") as info:
        transport.open()
    assert not isinstance(info.value, TransportUnavailable)
    assert broker_user.name in str(info.value)


def test_user_not_allowed_to_declare_the_queue_is_refused(
    broker, broker_user, queue_name, tmp_path
) -> None:
    broker_user.permit(configure="^$")
    transport = make_transport(tmp_path, user_config(broker, broker_user, queue_name))
    with pytest.raises(TransportError, match="403 ACCESS_REFUSED.*lacks this permission") as info:
        transport.open()
    assert not isinstance(info.value, TransportUnavailable)


def test_nothing_listening_is_unavailable_after_bounded_retries(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO)  # the retries are logged for -v only
    port = free_port()
    transport = make_transport(
        tmp_path,
        {"host": "127.0.0.1", "port": port, "queue": "q", "connect_retries": 2, "retry_delay": 0},
    )
    with pytest.raises(TransportUnavailable) as info:
        transport.open()
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text and "connection refused" in text and "3 round(s)" in text
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == 2
    transport.close()  # again: harmless


def test_host_name_that_does_not_exist_is_a_config_error(tmp_path, caplog) -> None:
    # `.invalid` never resolves (RFC 2606): DNS answers "no such name", not "try later".
    transport = make_transport(
        tmp_path, {"host": "no-such-host.invalid", "queue": "q", "connect_retries": 3}
    )
    caplog.set_level(logging.INFO)
    with pytest.raises(ConfigError) as info:
        transport.open()
    text = str(info.value)
    assert "[rabbit] host" in text and "'no-such-host.invalid'" in text
    assert "does not exist" in text
    assert "retry" not in caplog.text  # a name that does not exist is not tried again


def test_host_list_with_a_name_that_does_not_exist_warns_and_delivers(
    broker, queue_name, tmp_path, caplog
) -> None:
    transport = make_transport(
        tmp_path, broker_config(broker, queue_name, host=f"rmq-typo.invalid, {broker.host}")
    )
    with transport:
        transport.publish(make_messages(1)[0])
        transport.flush()
    assert len(transport.confirmed) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'rmq-typo.invalid' does not exist" in warnings[0]


def test_resolver_failing_for_a_moment_is_temporary(tmp_path, monkeypatch) -> None:
    # A resolver that cannot answer now (no network, DNS server down) is EAI_AGAIN,
    # which the system gives only when DNS is broken: make getaddrinfo say it.
    import socket

    real = socket.getaddrinfo

    def flaky(host, *args, **kwargs):
        if host == "archive.example.net":
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", flaky)
    transport = make_transport(tmp_path, {"host": "archive.example.net", "queue": "q"})
    with pytest.raises(TransportUnavailable, match="cannot resolve host name.*Temporary"):
        transport.open()


def test_second_node_is_used_when_the_first_is_down(broker, queue_name, tmp_path) -> None:
    transport = make_transport(
        tmp_path,
        broker_config(
            broker, queue_name, host=f"127.0.0.1:{free_port()}, {broker.host}:{broker.port}"
        ),
    )
    with transport:
        transport.publish(make_messages(1)[0])
        transport.flush()
    assert len(transport.confirmed) == 1
    assert len(broker.fetch(queue_name)) == 1


def test_missing_vhost_is_an_error(broker, queue_name, tmp_path) -> None:
    vhost = f"no-such-vhost-{uuid.uuid4().hex[:6]}"
    transport = make_transport(tmp_path, broker_config(broker, queue_name, vhost=vhost))
    with pytest.raises(TransportError, match=f"vhost '{vhost}' does not exist") as info:
        transport.open()
    assert not isinstance(info.value, TransportUnavailable)


def test_connection_cut_mid_stream_loses_no_confirmed_message(broker, queue_name, tmp_path) -> None:
    messages = make_messages(200, pad=200)  # about 2.5 kB each
    with Proxy(cut_in_publish=60) as proxy:
        transport = make_transport(
            tmp_path, broker_config(broker, queue_name, window=8, port=proxy.port)
        )
        with pytest.raises(TransportUnavailable) as info:
            with transport:
                for message in messages:
                    transport.publish(message)
                transport.flush()
    assert f"127.0.0.1:{proxy.port}" in str(info.value)
    confirmed = ids(transport.confirmed)
    in_queue = [props.message_id for props, _ in broker.fetch(queue_name)]
    # At most a window's worth was unconfirmed when the cut came, long after the start.
    assert 0 < len(confirmed) < len(messages)
    assert set(confirmed) <= set(in_queue)
    assert set(in_queue) <= set(ids(messages))
    assert len(confirmed) == len(set(confirmed))


def test_publish_after_failure_keeps_failing(broker, queue_name, tmp_path) -> None:
    with Proxy() as proxy:
        transport = make_transport(tmp_path, broker_config(broker, queue_name, port=proxy.port))
        with transport:
            transport.publish(make_messages(1)[0])
            transport.flush()
            proxy.cut()
            with pytest.raises(TransportUnavailable, match="connection lost"):
                for message in make_messages(50):
                    transport.publish(message)
                transport.flush()
            with pytest.raises(TransportUnavailable):
                transport.publish(make_messages(1)[0])


def test_broker_silent_mid_run_ends_on_missed_heartbeats(broker, queue_name, tmp_path) -> None:
    # The proxy stops passing the broker's bytes on, as a half-dead network path would;
    # pika's heartbeat check (heartbeat + 5 s) ends the wait instead of cron hanging; the
    # reconnection that follows meets the same silence and gives up after `timeout`.
    with Proxy() as proxy:
        transport = make_transport(
            tmp_path, broker_config(broker, queue_name, port=proxy.port, heartbeat=1, timeout=1)
        )
        with transport:
            proxy.hold_replies()
            transport.publish(make_messages(1)[0])
            with pytest.raises(TransportUnavailable, match="no heartbeat"):
                transport.flush()
    assert transport.confirmed == []


def test_broker_silent_during_handshake_times_out(broker, queue_name, tmp_path) -> None:
    with Proxy() as proxy:
        proxy.hold_replies()
        transport = make_transport(
            tmp_path, broker_config(broker, queue_name, port=proxy.port, timeout=0.5)
        )
        with pytest.raises(TransportUnavailable, match=r"no answer within 0\.5s"):
            transport.open()


# -- TLS ---------------------------------------------------------------------------------


def tls_transport(tmp_path, broker, queue_name, proxy, **ssl_options) -> RabbitTransport:
    return make_transport(
        tmp_path,
        broker_config(broker, queue_name, host="localhost", port=proxy.port, use_ssl="true"),
        ssl_options=ssl_options,
    )


def test_tls_with_the_right_ca_works(broker, queue_name, tmp_path, test_ca) -> None:
    with Proxy(server_context=test_ca.server_context()) as proxy:
        transport = tls_transport(tmp_path, broker, queue_name, proxy, ca_certs=test_ca.ca_cert)
        with transport:
            transport.publish(make_messages(1)[0])
            transport.flush()
    assert len(broker.fetch(queue_name)) == 1


def test_tls_ca_made_with_openssl_command_works(broker, queue_name, tmp_path) -> None:
    ca = make_test_ca(tmp_path / "openssl-ca", "openssl test CA", backend="openssl")
    with Proxy(server_context=ca.server_context()) as proxy:
        transport = tls_transport(tmp_path, broker, queue_name, proxy, ca_certs=ca.ca_cert)
        assert "exists" in transport.check() or "does not exist yet" in transport.check()


def test_tls_with_another_ca_is_refused(broker, queue_name, tmp_path, test_ca, other_ca) -> None:
    with Proxy(server_context=test_ca.server_context()) as proxy:
        transport = tls_transport(tmp_path, broker, queue_name, proxy, ca_certs=other_ca.ca_cert)
        with pytest.raises(TransportError, match="certificate does not verify") as info:
            transport.open()
    assert not isinstance(info.value, TransportUnavailable)
    assert f"localhost:{proxy.port}" in str(info.value)


def test_tls_with_the_wrong_host_name_is_refused(broker, queue_name, tmp_path, test_ca) -> None:
    with Proxy(server_context=test_ca.server_context()) as proxy:
        transport = tls_transport(
            tmp_path,
            broker,
            queue_name,
            proxy,
            ca_certs=test_ca.ca_cert,
            server_hostname="archive.example.org",
        )
        with pytest.raises(TransportError, match="certificate does not verify.*[Hh]ostname"):
            transport.open()


@pytest.mark.parametrize("off", [{"verify": "false"}, {"cert_reqs": "CERT_NONE"}])
def test_tls_verification_off_works_with_a_warning(
    broker, queue_name, tmp_path, test_ca, caplog, off
) -> None:
    with Proxy(server_context=test_ca.server_context()) as proxy:
        transport = tls_transport(tmp_path, broker, queue_name, proxy, **off)
        with transport:
            transport.publish(make_messages(1)[0])
            transport.flush()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("verification is off" in r.getMessage() for r in warnings)
    assert len(broker.fetch(queue_name)) == 1


def test_tls_against_a_plain_port_is_an_error(broker, queue_name, tmp_path) -> None:
    transport = make_transport(
        tmp_path, broker_config(broker, queue_name, use_ssl="true"), ssl_options={"verify": "false"}
    )
    with pytest.raises(TransportError, match="TLS") as info:
        transport.open()
    assert not isinstance(info.value, TransportUnavailable)


# -- check and describe ------------------------------------------------------------------


def test_check_sends_nothing_and_reports_the_queue(broker, queue_name, tmp_path) -> None:
    broker.declare(queue_name)
    transport = make_transport(tmp_path, broker_config(broker, queue_name))
    line = transport.check()
    assert line.startswith(f"amqp://guest@{broker.host}:{broker.port}/%2F queue={queue_name}")
    assert f"queue '{queue_name}' has 0 message(s)" in line
    assert broker.fetch(queue_name) == []


def test_check_of_a_queue_the_first_run_will_declare(broker, queue_name, tmp_path) -> None:
    transport = make_transport(tmp_path, broker_config(broker, queue_name))
    assert "does not exist yet" in transport.check()
    broker.declare(queue_name, passive=False)  # check() did not create it with its options


def test_check_of_a_missing_exchange_is_an_error(broker, queue_name, tmp_path) -> None:
    transport = make_transport(tmp_path, broker_config(broker, queue_name, exchange="no-such-x"))
    with pytest.raises(TransportError, match="exchange 'no-such-x'.*404"):
        transport.check()


def test_describe_names_everything_but_the_password(tmp_path) -> None:
    transport = make_transport(
        tmp_path,
        {
            "host": "a.example, b.example:5673",
            "username": "sensor",
            "password": WRONG_PASSWORD,
            "vhost": "netsage",
            "queue": "tstat",
            "use_ssl": "true",
        },
        ssl_options={"verify": "false"},
    )
    assert transport.describe() == (
        "amqps://sensor@a.example:5671,b.example:5673/netsage queue=tstat exchange=(default)"
    )


# -- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("rabbit", "port", "56x", "expected an integer 1-65535"),
        ("rabbit", "port", "70000", "expected an integer 1-65535"),
        ("rabbit", "use_ssl", "maybe", "expected true or false"),
        ("rabbit", "window", "0", "expected an integer 1-65535"),
        ("rabbit", "timeout", "soon", "expected a number"),
        ("rabbit", "host", "a.example:99999", "port must be an integer 1-65535"),
        ("rabbit_queue_options", "durable", "perhaps", "expected true or false"),
        ("rabbit_queue_options", "passive", "2", "expected true or false"),
        ("ssl_options", "ca_certs", "/nonexistent/ca.pem", "cannot load CA certificates"),
        ("ssl_options", "cert_reqs", "CERT_MAYBE", "expected CERT_REQUIRED or CERT_NONE"),
    ],
)
def test_config_errors_name_file_section_and_key(tmp_path, section, key, value, expected) -> None:
    sections: dict[str, dict[str, object]] = {
        "rabbit": {"host": "localhost", "queue": "q", "use_ssl": "true"},
        "rabbit_queue_options": {},
        "ssl_options": {},
    }
    sections[section][key] = value
    path = write_config(
        tmp_path, sections["rabbit"], sections["rabbit_queue_options"], sections["ssl_options"]
    )
    with pytest.raises(ConfigError) as info:
        RabbitTransport(Settings(directory=tmp_path), ConfigFile(path))
    text = str(info.value)
    assert text.startswith(f"{path}: [{section}] {key}")
    assert expected in text


def test_queue_arguments_are_typed(tmp_path) -> None:
    transport = make_transport(
        tmp_path,
        {"queue": "q"},
        {
            "durable": "true",
            "x-queue-type": "quorum",
            "x-max-length": "10000",
            "x-message-ttl": "3600000",
            "x-single-active-consumer": "false",
        },
    )
    assert transport.rabbit.queue_flags == {
        "durable": True,
        "exclusive": False,
        "auto_delete": False,
    }
    assert transport.rabbit.queue_arguments == {
        "x-queue-type": "quorum",
        "x-max-length": 10000,
        "x-message-ttl": 3600000,
        "x-single-active-consumer": False,
    }


def test_password_from_the_environment_is_not_in_errors(tmp_path) -> None:
    path = write_config(tmp_path, {"queue": "q", "password": "${NO_SUCH_VARIABLE_FOR_TSTAT}"})
    with pytest.raises(ConfigError, match=r"\[rabbit\] password.*NO_SUCH_VARIABLE_FOR_TSTAT"):
        RabbitTransport(Settings(directory=tmp_path), ConfigFile(path))


def test_config_sections_cover_every_key_read(tmp_path, caplog) -> None:
    path = write_config(
        tmp_path,
        {
            "queue": "q",
            "heartbeat": 30,
            "blocked_connection_timeout": 60,
            "window": 16,
            "exchange": "amq.direct",
            "routing_key": "k",
            "vhost": "v",
            "username": "u",
            "password": "p",
            "use_ssl": "true",
        },
        {"x-queue-type": "quorum"},
        {"ca_certs": "", "certfile": "", "keyfile": "", "server_hostname": "h"},
    )
    config = ConfigFile(path)
    RabbitTransport(Settings(directory=tmp_path), config)
    assert config.check_unknown(RabbitTransport.config_sections) == []


def test_every_config_key_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[1] / "doc" / "rabbitmq.md").read_text()
    for section, keys in RabbitTransport.config_sections.items():
        assert f"[{section}]" in doc
        for key in sorted(keys or ()):
            assert f"`{key}`" in doc, f"[{section}] {key} is not in doc/rabbitmq.md"


def test_a_lost_connection_is_one_line_in_the_cron_mail(
    broker, queue_name, tmp_path, capsys
) -> None:
    from tstat_transport.logsetup import setup_logging

    root, pika_logger = logging.getLogger(), logging.getLogger("pika")
    saved = root.level, pika_logger.level, list(root.handlers)
    setup_logging()  # as tstat_send without -v/-D, writing to the captured stderr
    try:
        with Proxy(cut_in_publish=12) as proxy:
            transport = make_transport(tmp_path, broker_config(broker, queue_name, port=proxy.port))
            with pytest.raises(TransportUnavailable):
                with transport:
                    for message in make_messages(50, pad=200):
                        transport.publish(message)
                    transport.flush()
    finally:
        root.handlers[:] = saved[2]
        root.setLevel(saved[0])
        pika_logger.setLevel(saved[1])
    assert capsys.readouterr().err == ""  # the error itself is the CLI's one line


# -- bounded waits (issue 11.1, 11.2) -----------------------------------------------------


def test_broker_that_never_confirms_ends_on_confirm_timeout(broker, queue_name, tmp_path) -> None:
    messages = make_messages(6)
    with Proxy() as proxy:
        # A short heartbeat, kept alive by the proxy: only the missing confirms can end it.
        transport = make_transport(
            tmp_path,
            broker_config(broker, queue_name, port=proxy.port, heartbeat=1, confirm_timeout=3),
        )
        with transport:
            for message in messages[:3]:
                transport.publish(message)
            transport.flush()
            proxy.withhold_confirms()
            for message in messages[3:]:
                transport.publish(message)
            started = time.monotonic()
            with pytest.raises(TransportUnavailable, match=r"no confirm .* for 3s") as info:
                transport.flush()
            waited = time.monotonic() - started
    assert 2.5 < waited < 8
    assert "3 message(s) unconfirmed" in str(info.value)
    assert proxy.dropped_confirms >= 1
    assert ids(transport.confirmed) == ids(messages[:3])  # confirmed progress kept
    # The broker did take them: the next run's resend is the duplicate message_id allows for.
    assert len(broker.fetch(queue_name)) == 6


def test_poll_keeps_an_idle_connection_alive(broker, queue_name, tmp_path, caplog) -> None:
    # RabbitMQ drops a connection that sends nothing for two heartbeats (2 s here): the
    # sender reading a long log below the threshold calls poll() instead of publishing.
    caplog.set_level(logging.INFO)
    transport = make_transport(tmp_path, broker_config(broker, queue_name, heartbeat=1))
    with transport:
        until = time.monotonic() + 4
        while time.monotonic() < until:
            transport.poll()
            time.sleep(0.2)
        transport.publish(make_messages(1)[0])
        transport.flush()
    assert len(transport.confirmed) == 1
    assert len(broker.fetch(queue_name)) == 1
    assert "connecting again" not in caplog.text  # the first connection lived throughout


def test_without_poll_an_idle_connection_is_lost(broker, queue_name, tmp_path, caplog) -> None:
    # The control for the test above: the same idle time without poll() loses the
    # connection, so poll() is what kept it. The transport then connects again.
    caplog.set_level(logging.INFO)
    transport = make_transport(tmp_path, broker_config(broker, queue_name, heartbeat=1))
    with transport:
        time.sleep(4)
        transport.publish(make_messages(1)[0])
        transport.flush()
    assert "connecting again" in caplog.text
    assert len(transport.confirmed) == 1


# -- failover within a run (issue 11.3) ----------------------------------------------------


def test_connection_lost_mid_run_fails_over_to_the_next_node(
    broker, queue_name, tmp_path, caplog
) -> None:
    caplog.set_level(logging.INFO)
    messages = make_messages(200, pad=200)  # about 2.5 kB each
    # Two nodes of a "cluster": two proxies in front of the same broker; the first is cut
    # mid-stream and stays down (it closes every later connection at once).
    with Proxy(cut_after=150_000) as first, Proxy() as second:
        hosts = f"127.0.0.1:{first.port}, 127.0.0.1:{second.port}"
        transport = make_transport(
            tmp_path, broker_config(broker, queue_name, host=hosts, window=8)
        )
        with transport:
            for message in messages:
                transport.publish(message)
            transport.flush()
        assert second.forwarded > 0
    assert sorted(ids(transport.confirmed)) == sorted(ids(messages))  # each exactly once
    arrived = [props.message_id for props, _ in broker.fetch(queue_name)]
    assert set(arrived) == set(ids(messages))
    # Only what was in flight at the cut went twice, with the same id.
    assert len(arrived) - len(messages) <= 8
    assert f"127.0.0.1:{first.port}" in caplog.text and "connecting again" in caplog.text
    assert f"through rabbit 127.0.0.1:{second.port}" in caplog.text


def test_reconnections_are_bounded_per_run(broker, queue_name, tmp_path) -> None:
    # A node that accepts connections and drops each one mid-stream: the run gives up
    # after 1 + connect_retries reconnections instead of looping.
    messages = make_messages(60, pad=2000)
    with Proxy() as proxy:
        transport = make_transport(
            tmp_path, broker_config(broker, queue_name, port=proxy.port, connect_retries=1)
        )
        with pytest.raises(TransportUnavailable, match=r"again \(2 reconnection\(s\)") as info:
            with transport:
                for i, message in enumerate(messages):
                    if i % 20 == 19:
                        proxy.cut()
                        proxy.reopen()
                    transport.publish(message)
                transport.flush()
    assert "connect_retries" in str(info.value)
    confirmed = ids(transport.confirmed)
    assert confirmed == ids(messages)[: len(confirmed)]


# -- nacks: a moment's refusal or a full queue (issue 11.4) --------------------------------


def test_nacks_that_pass_are_retried_and_the_run_goes_on(
    broker, queue_name, tmp_path, caplog
) -> None:
    # A real refusal that passes: the queue is full (x-max-length 2, reject-publish) and a
    # consumer empties it while the transport waits to publish the nacked ones again.
    import threading

    caplog.set_level(logging.INFO)
    messages = make_messages(5)
    transport = make_transport(
        tmp_path,
        broker_config(broker, queue_name, window=8, retry_delay=0.5, nack_retries=4),
        {"x-max-length": 2, "x-overflow": "reject-publish"},
    )
    drained: list[str] = []
    stop = threading.Event()

    def consumer() -> None:
        time.sleep(0.3)  # after the first nacks
        while not stop.is_set() and len(drained) < len(messages):
            drained.extend(props.message_id for props, _ in broker.fetch(queue_name))
            time.sleep(0.2)

    thread = threading.Thread(target=consumer)
    with transport:
        thread.start()
        try:
            for message in messages:
                transport.publish(message)
            transport.flush()
        finally:
            stop.set()
            thread.join()
    drained.extend(props.message_id for props, _ in broker.fetch(queue_name))
    assert "nacked; publishing it again in 0.5s (retry 1 of 4)" in caplog.text
    assert sorted(ids(transport.confirmed)) == sorted(ids(messages))
    assert sorted(drained) == sorted(ids(messages))  # each arrived exactly once


def test_nack_that_persists_without_a_length_limit_we_know_of_is_temporary(
    broker, queue_name, tmp_path
) -> None:
    # passive: the archive owns the queue, so its arguments are unknown here.
    broker.declare(queue_name, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    messages = make_messages(3)
    transport = make_transport(
        tmp_path, broker_config(broker, queue_name, nack_retries=2), {"passive": "true"}
    )
    with transport:
        with pytest.raises(TransportUnavailable, match="refused .nacked. message") as info:
            for message in messages:
                transport.publish(message)
            transport.flush()
    assert "3 times" in str(info.value) and "x-overflow = reject-publish" in str(info.value)
    assert ids(transport.confirmed) == ids(messages[:1])


def cli_config(tmp_path: Path, rabbit: dict[str, object], queue_options: dict | None = None):
    return write_config(tmp_path, rabbit, queue_options)


def run_cli(cfg: Path, root: Path, *extra: str) -> int:
    from tstat_transport.cli import send_main

    return send_main(["-c", str(cfg), "-T", "0", "-S", "s1", "-d", str(root), *extra])


def processed(root: Path) -> list[str]:
    return sorted(p.parent.name for p in root.glob("*/.processed"))


def test_cli_full_queue_is_exit_1_with_the_hint(
    broker, queue_name, tstat_root, tmp_path, capsys
) -> None:
    root = tstat_root("full")
    cfg = cli_config(
        tmp_path,
        broker_config(broker, queue_name, window=4),
        {"x-max-length": 3, "x-overflow": "reject-publish"},
    )
    assert run_cli(cfg, root) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "nacked" in err[0] and "the queue is full" in err[0] and "x-max-length" in err[0]
    assert "4 times" in err[0]  # 1 + nack_retries (default 3)
    assert processed(root) == []
    assert len(broker.fetch(queue_name)) == 3


def test_cli_nacks_that_pass_are_retried_and_the_run_delivers_everything_once(
    broker, queue_name, tstat_root, tmp_path, capsys
) -> None:
    # Issue 11.4 through the command line: the broker refuses (nacks) what does not fit
    # a queue of 3 (reject-publish) while a consumer empties it; each refusal passes, so
    # the run retries, ends 0 and every message arrives once.
    import threading

    root = tstat_root("full")
    want = run_cli_stdout(root, capsys)
    cfg = cli_config(
        tmp_path,
        broker_config(broker, queue_name, window=4, retry_delay=0.1, nack_retries=30),
        {"x-max-length": 3, "x-overflow": "reject-publish"},
    )
    arrived: list[tuple[pika.BasicProperties, bytes]] = []
    stop = threading.Event()

    def consumer() -> None:
        while not stop.is_set():
            try:
                arrived.extend(broker.fetch(queue_name))
            except pika.exceptions.ChannelClosedByBroker:  # not declared by the run yet
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=consumer)
    thread.start()
    try:
        code = run_cli(cfg, root, "-v")
    finally:
        stop.set()
        thread.join()
    arrived.extend(broker.fetch(queue_name))
    err = capsys.readouterr().err
    assert code == 0, err
    assert "nacked; publishing it again" in err  # refusals happened, and were retried
    assert processed(root) == sorted(p.name for p in root.glob("*.out"))[:3]
    ids = [props.message_id for props, _ in arrived]
    assert len(ids) == len(set(ids)) == 19  # each message of the complete dirs once
    got = sorted(json.dumps(o, sort_keys=True) for _, body in arrived for o in json.loads(body))
    assert got == sorted(json.dumps(o, sort_keys=True) for o in want)


def test_cli_broker_that_never_confirms_is_exit_75_and_keeps_progress(
    broker, queue_name, tstat_root, tmp_path, capsys
) -> None:
    root = tstat_root("full")
    with Proxy() as proxy:
        cfg = cli_config(
            tmp_path,
            broker_config(broker, queue_name, port=proxy.port, heartbeat=1, confirm_timeout=2),
        )
        proxy.withhold_confirms()
        assert run_cli(cfg, root) == 75
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no confirm from the broker for 2s" in err[0], err
    assert processed(root) == []


def test_cli_failover_mid_run_delivers_everything_in_one_run(
    broker, queue_name, tstat_root, tmp_path, capsys
) -> None:
    root = tstat_root("full")
    send_expected = run_cli_stdout(root, capsys)
    with Proxy(cut_after=60_000) as first, Proxy() as second:
        hosts = f"127.0.0.1:{first.port}, 127.0.0.1:{second.port}"
        cfg = cli_config(tmp_path, broker_config(broker, queue_name, host=hosts, window=4))
        assert run_cli(cfg, root) == 0
    assert capsys.readouterr().err == ""  # a failover that worked is not worth a mail
    assert len(processed(root)) == 3  # the three complete directories
    arrived = broker.fetch(queue_name)
    got = [json.dumps(o, sort_keys=True) for _, body in arrived for o in json.loads(body)]
    want = [json.dumps(o, sort_keys=True) for o in send_expected]
    assert set(got) == set(want)
    assert len(got) - len(want) <= 4 * 100  # at most the window went twice
    bodies: dict[str, bytes] = {}
    for props, body in arrived:  # a message sent twice is the same message
        assert bodies.setdefault(props.message_id, body) == body


def run_cli_stdout(root: Path, capsys, *extra: str) -> list[dict]:
    from tstat_transport.cli import send_main

    send_main(["-N", "-T", "0", "-S", "s1", "-d", str(root), *extra])
    return [o for line in capsys.readouterr().out.splitlines() for o in json.loads(line)]


def test_cli_broker_unreachable_is_one_line_without_v(tmp_path, tstat_root, capsys) -> None:
    root = tstat_root("full")
    port = free_port()
    cfg = cli_config(
        tmp_path, {"host": "127.0.0.1", "port": port, "queue": "q", "connect_retries": 2}
    )
    assert run_cli(cfg, root) == 75
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 round(s)" in err[0] and f"127.0.0.1:{port}" in err[0]
    assert run_cli(cfg, root, "-v") == 75
    assert len([line for line in capsys.readouterr().err.splitlines() if "retry" in line]) == 2


def test_cli_host_that_does_not_exist_is_exit_2(tmp_path, tstat_root, capsys) -> None:
    root = tstat_root("full")
    cfg = cli_config(tmp_path, {"host": "rmq-typo.invalid", "queue": "q", "connect_retries": 2})
    assert run_cli(cfg, root) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such host name 'rmq-typo.invalid'" in err[0], err
    assert "fix [rabbit] host" in err[0]
    assert processed(root) == []


def write_long_quiet_log(directory: Path, data_dir: Path, members: int) -> None:
    """A log_tcp_complete.gz of real rows: 1600 * `members` rows below 1 MB in both
    directions, then every row of a real log (a few above it). Written as repeated gzip
    members, so that the file stays small however long it takes to read."""
    import gzip

    real = data_dir / "full" / "2026_11_24_19_18.out" / "log_tcp_complete"
    header, *rows = real.read_text().splitlines(keepends=True)
    names = [column.split(":")[0] for column in header.lstrip("#0123456789").split()]
    volume = [
        names.index(n) for n in ("c_bytes_all", "s_bytes_all", "c_bytes_uniq", "s_bytes_uniq")
    ]
    quiet = [r for r in rows if all(int(r.split()[i]) < 1_000_000 for i in volume)][:40]
    member = gzip.compress("".join(quiet).encode() * 40)
    directory.mkdir(parents=True)
    with open(directory / "log_tcp_complete.gz", "wb") as f:
        f.write(gzip.compress(header.encode()))
        f.write(member * members)
        f.write(gzip.compress("".join(rows).encode()))


def test_cli_heartbeat_1_survives_a_long_log_below_the_threshold(
    broker, queue_name, data_dir, tmp_path, capsys
) -> None:
    # About 960 000 rows that give no message, read for longer than the two heartbeats
    # (2 s) after which RabbitMQ drops a silent connection; then the rows that do.
    root = tmp_path / "root"
    write_long_quiet_log(root / "2026_11_24_19_18.out", data_dir, members=600)
    # What must arrive: what the real rows alone give (the quiet ones give nothing).
    alone = tmp_path / "alone" / "2026_11_24_19_18.out"
    alone.mkdir(parents=True)
    shutil.copy(data_dir / "full" / alone.name / "log_tcp_complete", alone)
    want = run_cli_stdout(alone.parent, capsys, "-T", "1", "--include-newest")
    cfg = cli_config(tmp_path, broker_config(broker, queue_name, heartbeat=1))
    started = time.monotonic()
    assert run_cli(cfg, root, "-T", "1", "--include-newest", "-v") == 0
    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert "connecting again" not in err  # the one connection lived throughout
    assert processed(root) == ["2026_11_24_19_18.out"]
    arrived = [o for _, body in broker.fetch(queue_name) for o in json.loads(body)]
    assert arrived == want and len(want) > 0
    assert took > 2.5, f"the log was read in {took:.1f}s: too fast to show anything"


def test_a_node_restarted_mid_run_is_ridden_through(private_node: PrivateNode, tmp_path, caplog):
    # A real restart of the node's RabbitMQ application: it closes our connection (320
    # CONNECTION_FORCED, or a reset while we write), refuses connections for a few
    # seconds, then takes them again.
    import threading

    caplog.set_level(logging.INFO)
    queue = f"tstat-test-{uuid.uuid4().hex[:12]}"
    messages = make_messages(300, pad=100)
    transport = make_transport(
        tmp_path,
        {
            "host": private_node.host,
            "port": private_node.port,
            "queue": queue,
            "window": 8,
            "connect_retries": 4,
            "retry_delay": 1,  # rounds 1, 2, 4, 8 s apart: enough for the restart
        },
    )
    restarted = threading.Event()

    def restart() -> None:
        assert private_node.ctl("stop_app").returncode == 0
        assert private_node.ctl("start_app").returncode == 0
        restarted.set()

    restarter = threading.Thread(target=restart)
    with transport:
        for i, message in enumerate(messages):
            if i == 100:
                restarter.start()
            if restarter.is_alive():
                time.sleep(0.05)  # keep publishing while the node goes away and back
            transport.publish(message)
        transport.flush()
    restarter.join()
    assert restarted.is_set()
    assert "connecting again" in caplog.text
    assert sorted(ids(transport.confirmed)) == sorted(ids(messages))
    arrived = [props.message_id for props, _ in private_node.drain(queue)]
    assert set(arrived) == set(ids(messages))  # the durable queue kept them through it
    assert len(arrived) - len(messages) <= 8


def test_a_refusal_when_connecting_again_keeps_exit_1(broker, queue_name, tmp_path) -> None:
    # The archive's queue is gone when the lost connection is opened again: that needs an
    # operator (exit 1), not another try next run (75).
    broker.declare(queue_name)
    with Proxy() as proxy:
        transport = make_transport(
            tmp_path, broker_config(broker, queue_name, port=proxy.port), {"passive": "true"}
        )
        with transport:
            for message in make_messages(3):
                transport.publish(message)
            transport.flush()
            broker.delete(queue_name)
            proxy.cut()
            proxy.reopen()
            with pytest.raises(TransportError) as info:
                for message in make_messages(10):
                    transport.publish(message)
                transport.flush()
    assert not isinstance(info.value, TransportUnavailable)
    text = str(info.value)
    assert "connecting again failed" in text and "404" in text and queue_name in text
    assert len(transport.confirmed) == 3


def test_a_broker_blocking_publishers_is_bounded_by_blocked_connection_timeout(
    private_node: PrivateNode, tmp_path
) -> None:
    # A memory alarm for real: the node blocks publishing connections. The confirm clock
    # does not run meanwhile (confirm_timeout 1 s would fire first otherwise); the run
    # ends on blocked_connection_timeout, with what was confirmed before kept.
    queue = f"tstat-test-{uuid.uuid4().hex[:12]}"
    messages = make_messages(4)
    transport = make_transport(
        tmp_path,
        {
            "host": private_node.host,
            "port": private_node.port,
            "queue": queue,
            "confirm_timeout": 1,
            "blocked_connection_timeout": 3,
        },
    )
    try:
        with transport:
            transport.publish(messages[0])
            transport.flush()
            assert private_node.ctl("set_vm_memory_high_watermark", "0.000001").returncode == 0
            time.sleep(1)  # the alarm reaches the connection
            started = time.monotonic()
            with pytest.raises(TransportUnavailable, match="blocked publishing for more than 3s"):
                for message in messages[1:]:
                    transport.publish(message)
                transport.flush()
            assert 2.5 < time.monotonic() - started < 10
    finally:
        private_node.ctl("set_vm_memory_high_watermark", "0.4")
        with private_node.connect() as conn:
            conn.channel().queue_delete(queue)
    assert ids(transport.confirmed) == ids(messages[:1])
