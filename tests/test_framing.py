"""The publish frames built by hand are the bytes pika builds, and decode back to the message."""

from __future__ import annotations

import datetime

import pika
import pika.frame
import pika.spec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tstat_transport.transports import framing


def pika_header(channel: int, size: int, message_id: str, timestamp: int, headers: dict) -> bytes:
    properties = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=message_id,
        timestamp=timestamp,
        headers=headers or None,
    )
    return pika.frame.Header(channel, size, properties).marshal()


SENDER_HEADERS = {
    "tstat_directory": "instance-a/2026_11_24_19_18.out",
    "tstat_log": "log_tcp_complete",
    "chunk": 7,
    "flows": 100,
    "format_version": 2,
}


@pytest.mark.parametrize(
    "headers",
    [
        SENDER_HEADERS,
        {},
        {"big": 2**31, "small": -(2**31), "edge": 2**31 - 1, "neg": -(2**31) - 1},
        {"flag": True, "off": False, "raw": b"\x00\xff", "none": None},
        {"nested": {"a": 1, "b": "x"}, "list": [1, "two"], "when": datetime.datetime(2026, 1, 1)},
        {"ünïcode": "répertoire/ß", "empty": ""},
    ],
    ids=["sender", "none", "int-edges", "other-types", "nested", "utf8"],
)
def test_content_header_is_pikas_bytes(headers: dict) -> None:
    args = (1, 81_234, "sensor:0:2026_11_24_19_18.out:log_tcp_complete:7", 1_795_547_929)
    assert framing.content_header(*args, headers) == pika_header(*args, headers)


@given(
    channel=st.integers(1, 65535),
    size=st.integers(0, 2**40),
    message_id=st.text(max_size=60),
    timestamp=st.integers(0, 2**63),
    headers=st.dictionaries(
        st.text(min_size=1, max_size=20),
        st.one_of(st.text(max_size=40), st.integers(-(2**63), 2**63 - 1), st.booleans()),
        max_size=6,
    ),
)
def test_content_header_matches_pika_for_any_values(
    channel: int, size: int, message_id: str, timestamp: int, headers: dict
) -> None:
    args = (channel, size, message_id, timestamp, headers)
    assert framing.content_header(*args) == pika_header(*args)


def test_content_header_decodes_to_the_message_properties() -> None:
    raw = framing.content_header(3, 42, "m-1", 1_700_000_000, SENDER_HEADERS)
    consumed, frame = pika.frame.decode_frame(raw)
    assert consumed == len(raw)
    assert (frame.channel_number, frame.body_size) == (3, 42)
    props = frame.properties
    assert props.content_type == "application/json"
    assert props.delivery_mode == 2  # persistent: the queue's promise needs it
    assert (props.message_id, props.timestamp) == ("m-1", 1_700_000_000)
    assert props.headers == SENDER_HEADERS


def test_an_id_over_255_bytes_is_refused_as_pika_refuses_it() -> None:
    with pytest.raises(pika.exceptions.ShortStringTooLong):
        framing.content_header(1, 0, "é" * 128, 0, {})


@pytest.mark.parametrize(
    "size,frame_max", [(0, 10), (1, 10), (10, 10), (25, 10), (200_000, 131_064)]
)
def test_body_frames_cut_the_body_at_the_frame_size(size: int, frame_max: int) -> None:
    body = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    raw = b"".join(framing.body_frames(5, body, frame_max))
    parts, offset = [], 0
    while offset < len(raw):
        consumed, frame = pika.frame.decode_frame(raw[offset:])
        assert isinstance(frame, pika.frame.Body) and frame.channel_number == 5
        assert len(frame.fragment) <= frame_max
        parts.append(frame.fragment)
        offset += consumed
    assert b"".join(parts) == body
    assert len(parts) == -(-size // frame_max)
