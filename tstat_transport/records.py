"""Tstat rows to flow objects: the message-format contract (doc/message-format.md).

Each row of `log_tcp_complete` or `log_udp_complete` gives up to two flow objects,
direction `in` (the client's `c_` columns, src = client) and `out` (the server's
`s_` columns, src = server), each kept only if its num_bits reaches the threshold.

Columns are found by header name once per file. For each header a converter is
generated as straight-line Python (the technique collections.namedtuple uses): the
column indices are constants in its code, only the columns it uses are converted,
and both directions come from one split. A level that lacks an optional column
(core has no RTT, window or option columns) gives objects without those keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .errors import TstatError

# Column kinds: how the text is turned into a value.
INT = "int"  # counters, ports: int(text)
FLOAT = "float"  # Tstat's %f columns: round(float(text), 3), as the original did
STR = "str"  # addresses: kept as text

Converter = Callable[[Sequence[str]], list]


class LogFormatError(TstatError):
    """A header this tool cannot use (not a Tstat log, or a required column missing)."""


@dataclass(frozen=True)
class Field:
    """One key of `values`, the Tstat column it comes from and how."""

    key: str
    column: str  # for directional fields, the name without its c_/s_ prefix
    kind: str
    directional: bool = True


# TCP values after the five rate fields, in the original's order. Optional: a header
# without the column gives objects without the key.
TCP_EXTRA = (
    Field("tcp_rexmit_bytes", "bytes_retx", INT),
    Field("tcp_rexmit_pkts", "pkts_retx", INT),
    Field("tcp_rtt_avg", "rtt_avg", FLOAT),
    Field("tcp_rtt_min", "rtt_min", FLOAT),
    Field("tcp_rtt_max", "rtt_max", FLOAT),
    Field("tcp_rtt_std", "rtt_std", FLOAT),
    Field("tcp_pkts_rto", "pkts_rto", INT),
    Field("tcp_pkts_fs", "pkts_fs", INT),
    Field("tcp_pkts_reor", "pkts_reor", INT),
    Field("tcp_pkts_dup", "pkts_dup", INT),
    Field("tcp_pkts_unk", "pkts_unk", INT),
    Field("tcp_pkts_fc", "pkts_fc", INT),
    Field("tcp_pkts_unrto", "pkts_unrto", INT),
    Field("tcp_pkts_unfs", "pkts_unfs", INT),
    Field("tcp_cwin_min", "cwin_min", INT),
    Field("tcp_cwin_max", "cwin_max", INT),
    Field("tcp_out_seq_pkts", "pkts_ooo", INT),
    Field("tcp_window_scale", "win_scl", INT),
    Field("tcp_mss", "mss", INT, directional=False),  # min(c_mss, s_mss)
    Field("tcp_max_seg_size", "mss_max", INT),
    Field("tcp_min_seg_size", "mss_min", INT),
    # 0.6.5 fills the two window fields from the congestion-window columns; kept so.
    Field("tcp_win_max", "cwin_max", INT),
    Field("tcp_win_min", "cwin_min", INT),
    Field("tcp_initial_cwin", "cwin_ini", INT),
    Field("tcp_sack_cnt", "sack_cnt", INT, directional=False),  # max(c_sack_cnt, s_sack_cnt)
)

TCP_REQUIRED = (
    "c_ip", "c_port", "s_ip", "s_port", "first", "last", "durat",
    "c_bytes_uniq", "s_bytes_uniq", "c_pkts_data", "s_pkts_data",
)  # fmt: skip
UDP_REQUIRED = (
    "c_ip", "c_port", "s_ip", "s_port", "c_first_abs", "s_first_abs", "c_durat", "s_durat",
    "c_bytes_all", "s_bytes_all", "c_pkts_all", "s_pkts_all",
)  # fmt: skip

# Which columns a converter reads, with their kind: used to explain a bad row.
_KINDS = {
    "c_ip": STR,
    "s_ip": STR,
    "first": FLOAT,
    "last": FLOAT,
    "durat": FLOAT,
    "c_first_abs": FLOAT,
    "s_first_abs": FLOAT,
    "c_durat": FLOAT,
    "s_durat": FLOAT,
}


def kind_of(column: str) -> str:
    base = column[2:] if column[:2] in ("c_", "s_") else column
    if column in _KINDS:
        return _KINDS[column]
    if base.startswith("rtt_"):
        return FLOAT
    return INT


@dataclass(frozen=True)
class Options:
    """What shapes the objects: recorded in the progress state of each directory."""

    threshold_bits: float
    sensor: str
    instance: str | int


@dataclass(frozen=True)
class RowConverter:
    """A compiled converter for one header, and the columns it reads (name -> index)."""

    protocol: str
    ncols: int
    convert: Converter
    columns: dict[str, int]
    missing: tuple[str, ...]  # optional columns this level does not have

    def explain(self, fields: Sequence[str]) -> str:
        """Why `fields` could not be converted: the first column with a bad value."""
        if len(fields) != self.ncols:
            return f"expected {self.ncols} fields, found {len(fields)}"
        for name, idx in self.columns.items():
            text = fields[idx]
            kind = kind_of(name)
            try:
                if kind == INT:
                    int(text)
                elif kind == FLOAT:
                    if float(text) != float(text):  # nan
                        raise ValueError
            except ValueError:
                want = "an integer" if kind == INT else "a number"
                return f"column {name} = {text[:40]!r} is not {want}"
        return "cannot convert row"


def _index(names: Sequence[str]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        index.setdefault(name, i)  # a repeated name (advanced level) keeps its first column
    return index


def _require(index: dict[str, int], required: Sequence[str], protocol: str) -> None:
    absent = [c for c in required if c not in index]
    if absent:
        raise LogFormatError(
            f"header lacks column(s) {', '.join(absent)} needed for {protocol} flows"
        )


def _conv(kind: str, idx: int) -> str:
    if kind == INT:
        return f"int(f[{idx}])"
    if kind == FLOAT:
        return f"round(float(f[{idx}]), 3)"
    return f"f[{idx}]"


_META = (
    '"meta": {{"src_ip": {src_ip}, "src_port": {src_port}, "dst_ip": {dst_ip}, '
    '"dst_port": {dst_port}, "protocol": "{protocol}", "sensor_id": sensor, '
    '"instance_id": instance, "flow_type": "tstat"}}'
)


def compile_converter(protocol: str, names: Sequence[str], options: Options) -> RowConverter:
    """Build the row converter for a header (cleaned column names, in file order).

    Raises LogFormatError when a required column is missing.
    """
    index = _index(names)
    if protocol == "tcp":
        _require(index, TCP_REQUIRED, protocol)
        source, used, missing = _tcp_source(index)
    elif protocol == "udp":
        _require(index, UDP_REQUIRED, protocol)
        source, used, missing = _udp_source(index)
    else:
        raise ValueError(protocol)
    namespace: dict[str, Any] = {
        "threshold": options.threshold_bits,
        "sensor": options.sensor,
        "instance": options.instance,
    }
    exec(compile(source, f"<tstat {protocol} converter>", "exec"), namespace)  # noqa: S102
    return RowConverter(protocol, len(names), namespace["convert"], used, missing)


def _tcp_source(index: dict[str, int]) -> tuple[str, dict[str, int], tuple[str, ...]]:
    used = {c: index[c] for c in TCP_REQUIRED}
    missing = []
    pre = [
        f"durat = round(float(f[{index['durat']}]), 3)",
        "seconds = durat / 1000",
        "duration = round(seconds, 2)",
        f"start = int(round(float(f[{index['first']}]), 3) / 1000)",
        f"end = int(round(float(f[{index['last']}]), 3) / 1000)",
        f"c_ip = f[{index['c_ip']}]",
        f"c_port = int(f[{index['c_port']}])",
        f"s_ip = f[{index['s_ip']}]",
        f"s_port = int(f[{index['s_port']}])",
    ]
    # Values that do not depend on direction, computed once per row.
    shared: dict[str, str] = {}
    pairs = (("mss", "{a} if {a} < {b} else {b}"), ("sack_cnt", "{a} if {a} > {b} else {b}"))
    for name, expr_of in pairs:
        c_col, s_col = f"c_{name}", f"s_{name}"
        if c_col in index and s_col in index:
            used[c_col], used[s_col] = index[c_col], index[s_col]
            pre.append(f"{name}_c = int(f[{index[c_col]}])")
            pre.append(f"{name}_s = int(f[{index[s_col]}])")
            pre.append(f"{name} = " + expr_of.format(a=f"{name}_c", b=f"{name}_s"))
            shared[name] = name
        else:
            missing.append(name)

    body = ["def convert(f):", *("    " + line for line in pre), "    out = []"]
    for direction, prefix, src, dst in (("in", "c_", "c", "s"), ("out", "s_", "s", "c")):
        extra = []
        for fld in TCP_EXTRA:
            if not fld.directional:
                if fld.column in shared:
                    extra.append(f'"{fld.key}": {shared[fld.column]}')
                continue
            col = prefix + fld.column
            if col in index:
                used[col] = index[col]
                extra.append(f'"{fld.key}": {_conv(fld.kind, index[col])}')
            elif direction == "in":
                missing.append(fld.column)
        values = ", ".join(
            [
                '"duration": duration',
                '"num_bits": bits',
                '"num_packets": packets',
                '"bits_per_second": round(bits / seconds, 2) if durat != 0 else 0',
                '"packets_per_second": round(packets / seconds, 2) if durat != 0 else 0',
                *extra,
            ]
        )
        meta = _META.format(
            src_ip=f"{src}_ip", src_port=f"{src}_port", dst_ip=f"{dst}_ip",
            dst_port=f"{dst}_port", protocol="tcp",
        )  # fmt: skip
        body += [
            f"    bits = int(f[{index[prefix + 'bytes_uniq']}]) * 8",
            "    if bits >= threshold:",
            f"        packets = int(f[{index[prefix + 'pkts_data']}])",
            '        out.append({"type": "flow", "interval": 600, '
            f'"values": {{{values}}}, {meta}, "start": start, "end": end}})',
        ]
    body.append("    return out")
    return "\n".join(body) + "\n", used, tuple(dict.fromkeys(missing))


def _udp_source(index: dict[str, int]) -> tuple[str, dict[str, int], tuple[str, ...]]:
    used = {c: index[c] for c in UDP_REQUIRED}
    body = [
        "def convert(f):",
        f"    c_ip = f[{index['c_ip']}]",
        f"    c_port = int(f[{index['c_port']}])",
        f"    s_ip = f[{index['s_ip']}]",
        f"    s_port = int(f[{index['s_port']}])",
        "    out = []",
    ]
    for prefix, src, dst in (("c_", "c", "s"), ("s_", "s", "c")):
        meta = _META.format(
            src_ip=f"{src}_ip", src_port=f"{src}_port", dst_ip=f"{dst}_ip",
            dst_port=f"{dst}_port", protocol="udp",
        )  # fmt: skip
        # Tstat writes UDP c_durat/s_durat in seconds with 6 decimals (TCP durat is
        # in ms); 0.6.5 divided them by 1000 anyway. Here duration is in seconds like
        # TCP's, and the rates use the full microsecond precision, as TCP's do.
        body += [
            f"    bits = int(f[{index[prefix + 'bytes_all']}]) * 8",
            "    if bits >= threshold:",
            f"        packets = int(f[{index[prefix + 'pkts_all']}])",
            f"        seconds = float(f[{index[prefix + 'durat']}])",
            "        duration = round(seconds, 2)",
            f"        start = int(round(float(f[{index[prefix + 'first_abs']}]), 3) / 1000)",
            '        out.append({"type": "flow", "interval": 600, "values": {'
            '"duration": duration, "num_bits": bits, "num_packets": packets, '
            '"bits_per_second": round(bits / seconds, 2) if seconds != 0 else 0, '
            '"packets_per_second": round(packets / seconds, 2) if seconds != 0 else 0}, '
            f'{meta}, "start": start, "end": int(start + duration)}})',
        ]
    body.append("    return out")
    return "\n".join(body) + "\n", used, ()
