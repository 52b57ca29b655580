"""The floor: a plain, straight-line Python version of `tstat_send -N`.

It reads each log's header once, maps column names to indices, and for every row builds the
two flow objects (`in`: client->server from the c_ columns, `out`: server->client from the s_
columns) exactly as the product's message format defines them, keeps those with
num_bits >= threshold, and writes each group of <= 100 as one compact `json.dumps` line.
No tricks: this is the speed a straightforward implementation gets, the baseline the product
is compared with.

    python bench/floor.py -T 0 -d ROOT > /dev/null

Every `*.out` directory directly under ROOT is read (the newest too), in name order,
log_tcp_complete then log_udp_complete. Nothing is written to the directories.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

CHUNK = 100
LOGS = (("tcp", "log_tcp_complete"), ("udp", "log_udp_complete"))


def ratio(retransmitted: float, sent: float) -> float:
    """tcp_rexmit_rate as the original's 0.6.8 computes it: unrounded, 0 unless both are set."""
    return retransmitted / sent if retransmitted and sent else 0


def num(text: str) -> Any:  # int, float, or the text: callers know their columns are numeric
    """A Tstat value as the message carries it: int if the text is one, else round(float, 3)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return round(float(text), 3)
    except ValueError:
        return text


def columns(header: str) -> dict[str, int]:
    """`#15#c_ip:1 c_port:2 ...` -> {"c_ip": 0, "c_port": 1, ...}"""
    items = header[header.rfind("#") + 1 :].split()
    return {item.split(":")[0]: i for i, item in enumerate(items)}


def direction(col: dict[str, int], prefix: str) -> dict[str, int]:
    """The indices of one direction's columns, without their c_/s_ prefix."""
    return {name[2:]: i for name, i in col.items() if name.startswith(prefix)}


def endpoints(f: list[str], col: dict[str, int], c: dict[str, int], s: dict[str, int]) -> tuple:
    """The two directions of a row: `in` (client->server, c_ columns) then `out`."""
    c_ip, c_port = f[col["c_ip"]], int(f[col["c_port"]])
    s_ip, s_port = f[col["s_ip"]], int(f[col["s_port"]])
    return ((c, c_ip, c_port, s_ip, s_port), (s, s_ip, s_port, c_ip, c_port))


def tcp_flows(
    f: list[str],
    col: dict[str, int],
    c: dict[str, int],
    s: dict[str, int],
    sensor: str,
    instance: int | str,
    threshold_bits: float,
) -> list[dict]:
    durat = num(f[col["durat"]])
    seconds = durat / 1000
    start = int(num(f[col["first"]]) / 1000)
    end = int(num(f[col["last"]]) / 1000)
    mss = min(num(f[col["c_mss"]]), num(f[col["s_mss"]]))
    sack = max(num(f[col["c_sack_cnt"]]), num(f[col["s_sack_cnt"]]))
    flows = []
    for d, src_ip, src_port, dst_ip, dst_port in endpoints(f, col, c, s):
        bits = num(f[d["bytes_uniq"]]) * 8
        if bits < threshold_bits:
            continue
        packets = num(f[d["pkts_data"]])
        values = {
            "duration": round(seconds, 2),
            "num_bits": bits,
            "num_packets": packets,
            "bits_per_second": round(bits / seconds, 2) if durat != 0 else 0,
            "packets_per_second": round(packets / seconds, 2) if durat != 0 else 0,
            "tcp_rexmit_bytes": num(f[d["bytes_retx"]]),
            "tcp_rexmit_pkts": num(f[d["pkts_retx"]]),
            "tcp_rexmit_rate": ratio(num(f[d["pkts_retx"]]), packets),
            "tcp_syn_cnt": num(f[d["syn_cnt"]]),
            "tcp_rtt_avg": num(f[d["rtt_avg"]]),
            "tcp_rtt_min": num(f[d["rtt_min"]]),
            "tcp_rtt_max": num(f[d["rtt_max"]]),
            "tcp_rtt_std": num(f[d["rtt_std"]]),
            "tcp_pkts_rto": num(f[d["pkts_rto"]]),
            "tcp_pkts_fs": num(f[d["pkts_fs"]]),
            "tcp_pkts_reor": num(f[d["pkts_reor"]]),
            "tcp_pkts_dup": num(f[d["pkts_dup"]]),
            "tcp_pkts_unk": num(f[d["pkts_unk"]]),
            "tcp_pkts_fc": num(f[d["pkts_fc"]]),
            "tcp_pkts_unrto": num(f[d["pkts_unrto"]]),
            "tcp_pkts_unfs": num(f[d["pkts_unfs"]]),
            "tcp_cwin_min": num(f[d["cwin_min"]]),
            "tcp_cwin_max": num(f[d["cwin_max"]]),
            "tcp_out_seq_pkts": num(f[d["pkts_ooo"]]),
            "tcp_window_scale": num(f[d["win_scl"]]),
            "tcp_mss": mss,
            "tcp_max_seg_size": num(f[d["mss_max"]]),
            "tcp_min_seg_size": num(f[d["mss_min"]]),
            "tcp_win_max": num(f[d["cwin_max"]]),
            "tcp_win_min": num(f[d["cwin_min"]]),
            "tcp_initial_cwin": num(f[d["cwin_ini"]]),
            "tcp_sack_cnt": sack,
        }
        flows.append(
            flow(values, src_ip, src_port, dst_ip, dst_port, "tcp", sensor, instance, start, end)
        )
    return flows


def udp_flows(
    f: list[str],
    col: dict[str, int],
    c: dict[str, int],
    s: dict[str, int],
    sensor: str,
    instance: int | str,
    threshold_bits: float,
) -> list[dict]:
    flows = []
    for d, src_ip, src_port, dst_ip, dst_port in endpoints(f, col, c, s):
        bits = num(f[d["bytes_all"]]) * 8
        if bits < threshold_bits:
            continue
        packets = num(f[d["pkts_all"]])
        seconds = float(f[d["durat"]])  # Tstat writes UDP durations in seconds, not ms
        duration = round(seconds, 2)
        values = {
            "duration": duration,
            "num_bits": bits,
            "num_packets": packets,
            "bits_per_second": round(bits / seconds, 2) if seconds != 0 else 0,
            "packets_per_second": round(packets / seconds, 2) if seconds != 0 else 0,
        }
        start = int(num(f[d["first_abs"]]) / 1000)
        flows.append(
            flow(
                values,
                src_ip,
                src_port,
                dst_ip,
                dst_port,
                "udp",
                sensor,
                instance,
                start,
                int(start + duration),
            )
        )
    return flows


def flow(
    values: dict,
    src_ip: str,
    src_port: int,
    dst_ip: str,
    dst_port: int,
    protocol: str,
    sensor: str,
    instance: int | str,
    start: int,
    end: int,
) -> dict:
    return {
        "type": "flow",
        "interval": 600,
        "values": values,
        "meta": {
            "src_ip": src_ip,
            "src_port": src_port,
            "dst_ip": dst_ip,
            "dst_port": dst_port,
            "protocol": protocol,
            "sensor_id": sensor,
            "instance_id": instance,
            "flow_type": "tstat",
        },
        "start": start,
        "end": end,
    }


def messages(
    root: str,
    threshold_mb: float = 1000,
    sensor: str | None = None,
    instance: int | str = 0,
    stats: dict | None = None,
) -> Iterator[tuple[str, int]]:
    """Yield (JSON text, number of flows) for each message of every directory under root."""
    sensor = sensor if sensor is not None else socket.gethostname()
    threshold_bits = threshold_mb * 8_000_000
    stats = stats if stats is not None else {}
    stats.update(rows=0, flows=0, messages=0, skipped=0)
    dirs = sorted(e.name for e in os.scandir(root) if e.is_dir() and e.name.endswith(".out"))
    for name in dirs:
        for protocol, log in LOGS:
            path = os.path.join(root, name, log)
            if not os.path.isfile(path):
                continue
            build = tcp_flows if protocol == "tcp" else udp_flows
            with open(path, encoding="utf-8", errors="replace") as lines:
                header = lines.readline()
                if not header.startswith("#"):
                    continue
                col = columns(header)
                c, s = direction(col, "c_"), direction(col, "s_")
                batch: list[dict] = []
                for line in lines:
                    fields = line.rstrip("\n").split(" ")
                    # A cut last line (file still being written) or a repeated header.
                    if len(fields) != len(col) or not line.endswith("\n") or line[0] == "#":
                        stats["skipped"] += 1
                        continue
                    stats["rows"] += 1
                    batch.extend(build(fields, col, c, s, sensor, instance, threshold_bits))
                    if len(batch) >= CHUNK:
                        yield json.dumps(batch[:CHUNK], separators=(",", ":")), CHUNK
                        stats["messages"] += 1
                        stats["flows"] += CHUNK
                        del batch[:CHUNK]
                if batch:
                    yield json.dumps(batch, separators=(",", ":")), len(batch)
                    stats["messages"] += 1
                    stats["flows"] += len(batch)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-d", "--directory", required=True, help="Tstat root")
    p.add_argument("-T", "--threshold", type=float, default=1000, metavar="MBYTES")
    p.add_argument("-S", "--sensor", default=None)
    p.add_argument("-I", "--instance", default=0)
    p.add_argument(
        "--summary",
        action="store_true",
        help="print rows=, flows=, messages=, skipped= to stderr at the end",
    )
    a = p.parse_args(argv)
    stats: dict = {}
    out = sys.stdout
    for text, _ in messages(a.directory, a.threshold, a.sensor, a.instance, stats):
        out.write(text)
        out.write("\n")
    out.flush()
    if a.summary:
        print(" ".join(f"{k}={v}" for k, v in stats.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
