"""Flow objects checked against values worked out by hand from the raw Tstat columns,
following doc/message-format.md, at each log level (core #00#, full #15#, advanced #31#).

The expected values here are computed from the columns by name, independently of the
implementation's converter: a mistake shared by both would have to be made twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import CORE_TCP, by_hand_tcp, by_hand_udp, jsonl_objects, ms, raw_rows

from tstat_transport.cli import send_main

UDP = ["duration", "num_bits", "num_packets", "bits_per_second", "packets_per_second"]

# Real flows of the capture, by client address and port: an HTTP GET (IPv4), one over
# IPv6 on the far path, the 1.3 GB iperf3 upload, UDP request/response over IPv6, and
# the 10 s iperf3 UDP stream (4 bytes back, s_durat 0).
TCP_CLIENTS = [("10.10.0.1", 35438), ("fd00:10::2", 55824)]
UDP_CLIENTS = [("fd00:10::2", 40920), ("10.10.0.1", 55025)]


def sent_objects(capsys, root: Path) -> list[dict]:
    assert send_main(["-N", "-T", "0", "-S", "s1", "--include-newest", "-d", str(root)]) == 0
    return jsonl_objects(capsys.readouterr().out)


def find(objs: list[dict], protocol: str, src: tuple[str, int], dst: tuple[str, int]) -> dict:
    found = [
        o
        for o in objs
        if o["meta"]["protocol"] == protocol
        and (o["meta"]["src_ip"], o["meta"]["src_port"]) == src
        and (o["meta"]["dst_ip"], o["meta"]["dst_port"]) == dst
    ]
    assert len(found) == 1, (protocol, src, dst, len(found))
    return found[0]


@pytest.mark.parametrize("variant", ["core", "full", "advanced"])
def test_tcp_rows_by_hand_at_each_level(capsys, data_dir, variant):
    root = data_dir / variant
    objs = sent_objects(capsys, root)
    rows = raw_rows(root, "log_tcp_complete")
    big = next(k for k, r in rows.items() if r["c_bytes_uniq"] == "1363148836")
    for client in [*TCP_CLIENTS, big]:
        row = rows[client]
        server = (row["s_ip"], int(row["s_port"]))
        for d, src, dst in (("c_", client, server), ("s_", server, client)):
            obj = find(objs, "tcp", src, dst)
            want = by_hand_tcp(row, d)
            assert {k: obj["values"][k] for k in CORE_TCP} == want, (variant, src)
            assert obj["start"] == int(ms(row["first"]) / 1000)
            assert obj["end"] == int(ms(row["last"]) / 1000)
            assert obj["meta"]["sensor_id"] == "s1" and obj["meta"]["instance_id"] == 0
            # No optional column at the core level, so no optional key; the others have them.
            assert (list(obj["values"]) == CORE_TCP) == (variant == "core")


@pytest.mark.parametrize("variant", ["full", "advanced"])
def test_tcp_optional_columns_by_hand(capsys, data_dir, variant):
    root = data_dir / variant
    objs = sent_objects(capsys, root)
    rows = raw_rows(root, "log_tcp_complete")
    for client in TCP_CLIENTS:
        row = rows[client]
        server = (row["s_ip"], int(row["s_port"]))
        for d, src, dst in (("c_", client, server), ("s_", server, client)):
            values = find(objs, "tcp", src, dst)["values"]
            assert values["tcp_rtt_avg"] == ms(row[d + "rtt_avg"])
            assert values["tcp_rtt_min"] == ms(row[d + "rtt_min"])
            assert values["tcp_cwin_max"] == values["tcp_win_max"] == int(row[d + "cwin_max"])
            assert values["tcp_mss"] == min(int(row["c_mss"]), int(row["s_mss"]))
            assert values["tcp_sack_cnt"] == max(int(row["c_sack_cnt"]), int(row["s_sack_cnt"]))
            assert values["tcp_max_seg_size"] == int(row[d + "mss_max"])


@pytest.mark.parametrize("variant", ["core", "full", "advanced"])
def test_udp_rows_by_hand(capsys, data_dir, variant):
    root = data_dir / variant
    objs = sent_objects(capsys, root)
    rows = raw_rows(root, "log_udp_complete")
    for client in UDP_CLIENTS:
        row = rows[client]
        server = (row["s_ip"], int(row["s_port"]))
        for d, src, dst in (("c_", client, server), ("s_", server, client)):
            obj = find(objs, "udp", src, dst)
            want = by_hand_udp(row, d)
            assert obj["values"] == want, (variant, src)
            start = int(float(row[d + "first_abs"]) / 1000)
            assert (obj["start"], obj["end"]) == (start, int(start + want["duration"]))
    # The rows chosen do hold the case of a direction without duration (rates of 0).
    assert float(rows[UDP_CLIENTS[1]]["s_durat"]) == 0
