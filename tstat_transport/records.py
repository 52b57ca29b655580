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

import json
import re
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Callable, Sequence

from .errors import TstatError

# Column kinds: how the text is turned into a value.
INT = "int"  # counters, ports: int(text)
FLOAT = "float"  # Tstat's %f columns: round(float(text), 3), as the original did
STR = "str"  # addresses: kept as text

Converter = Callable[[Sequence[str]], list]


class Unusual(ValueError):
    """The fast path declines a row (an odd value): the reference converter decides."""


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
    convert: Converter  # the reference: row -> flow dicts
    encode: Callable[[Sequence[str]], list]  # the fast path: row -> JSON texts, or Unusual
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


def _early_exit(index: dict[str, int], volume: str) -> list[str]:
    # Most rows of a busy sensor are below the threshold in both directions: they
    # cost two int() and nothing else (their other values are not looked at).
    return [
        f"c_bits = int(f[{index['c_' + volume]}]) * 8",
        f"s_bits = int(f[{index['s_' + volume]}]) * 8",
        "if c_bits < threshold and s_bits < threshold:",
        "    return []",
    ]


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
    fast = (_tcp_fast_source if protocol == "tcp" else _udp_fast_source)(index, used)
    namespace: dict[str, Any] = {
        "threshold": options.threshold_bits,
        "sensor": options.sensor,
        "instance": options.instance,
        "SENSOR": json.dumps(options.sensor),
        "INSTANCE": json.dumps(options.instance),
        "Unusual": Unusual,
        "ints_ok": _INTS_OK,
        "text_ok": _TEXT_OK,
        "pick": itemgetter(*_passthrough(index, used)),  # ports at least: a tuple
    }
    exec(compile(source, f"<tstat {protocol} converter>", "exec"), namespace)  # noqa: S102
    exec(compile(fast, f"<tstat {protocol} encoder>", "exec"), namespace)  # noqa: S102
    return RowConverter(
        protocol, len(names), namespace["convert"], namespace["encode"], used, missing
    )


def _tcp_source(index: dict[str, int]) -> tuple[str, dict[str, int], tuple[str, ...]]:
    used = {c: index[c] for c in TCP_REQUIRED}
    missing = []
    pre = [
        *_early_exit(index, "bytes_uniq"),
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
            f"    bits = {prefix}bits",
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
        *("    " + line for line in _early_exit(index, "bytes_all")),
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
            f"    bits = {prefix}bits",
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


# -- The fast path -------------------------------------------------------------------
# The same objects as the reference converter, written straight to compact JSON text:
# no dicts, no json.dumps, integer columns copied as text once checked canonical.
# It must give, byte for byte, `json.dumps(obj, separators=(",", ":"))` of the
# reference's objects (tests/test_records.py checks every real row and generated
# ones); for any value it is not sure of it raises Unusual and the reference decides.

# Integers as printf writes them, so the text is its own JSON (no "007", "+5", "-0").
_INTS_OK = re.compile(r"(?:0|-?[1-9][0-9]*)(?: (?:0|-?[1-9][0-9]*))*").fullmatch
# Addresses needing no JSON escaping.
_TEXT_OK = re.compile(r"[0-9A-Za-z.:%_-]+").fullmatch


def _passthrough(index: dict[str, int], used: dict[str, int]) -> list[int]:
    """Columns copied as text into the JSON: ports and the plain integer TCP values."""
    cols = ["c_port", "s_port"]
    cols += [c for c in used if kind_of(c) == INT and c[2:] in _PLAIN_TCP_INTS]
    return [index[c] for c in dict.fromkeys(cols)]


_PLAIN_TCP_INTS = {f.column for f in TCP_EXTRA if f.directional and f.kind == INT}


def _round3(var: str, expr: str, limit: str = "1e9") -> list[str]:
    # round(x, 3) is slow (it goes through decimal strings). Away from a tie, the
    # integer nearest to x*1000 is exact here, and n / 1000 is then the very double
    # round(x, 3) returns (both are the double nearest to n/1000). Ties, negatives,
    # NaN and large values are left to the reference.
    return [
        f"x = {expr}",
        "y = x * 1000.0 + 0.5",
        "n = int(y)",
        "d = y - n",
        f"if not (0.001 < d < 0.999 and 0.0 <= x < {limit}):",
        "    raise Unusual",
        f"{var} = n / 1000 if n else x * 0.0",  # keeps the sign of a zero, as round does
    ]


def _round2(var: str, expr: str) -> list[str]:
    # The same for rates (computed values, not text); below 1e10 the error of v*100
    # is far smaller than the 0.001 kept from a tie.
    return [
        f"v = {expr}",
        "y = v * 100.0 + 0.5",
        "n = int(y)",
        "d = y - n",
        f"{var} = n / 100 if 0.001 < d < 0.999 and v < 1e10 else round(v, 2)",
    ]


def _seconds(var: str, expr: str) -> list[str]:
    # int(round(ms, 3) / 1000) is int(ms / 1000) unless rounding the milliseconds
    # reaches the next second; Unix ms below 4e12 (year 2096) keep 0.001 ms precision.
    return [
        f"x = {expr}",
        "if not (0.0 <= x < 4e12 and x % 1000.0 <= 999.999):",
        "    raise Unusual",
        f"{var} = int(x / 1000)",
    ]


def _indent(lines: list[str], depth: int) -> list[str]:
    return [" " * (4 * depth) + line for line in lines]


def _fast_meta(src: str, dst: str, protocol: str) -> str:
    return (
        f'"meta":{{{{"src_ip":"{{{src}_ip}}","src_port":{{{src}_port}},'
        f'"dst_ip":"{{{dst}_ip}}","dst_port":{{{dst}_port}},"protocol":"{protocol}",'
        '"sensor_id":{SENSOR},"instance_id":{INSTANCE},"flow_type":"tstat"}}'
    )


def _fast_head(index: dict[str, int], volume: str) -> list[str]:
    return [
        "def encode(f):",
        *_indent(_early_exit(index, volume), 1),
        '    if not ints_ok(" ".join(pick(f))):',
        "        raise Unusual",
        f"    c_ip = f[{index['c_ip']}]",
        f"    s_ip = f[{index['s_ip']}]",
        "    if not (text_ok(c_ip) and text_ok(s_ip)):",
        "        raise Unusual",
        f"    c_port = f[{index['c_port']}]",
        f"    s_port = f[{index['s_port']}]",
    ]


def _tcp_fast_source(index: dict[str, int], used: dict[str, int]) -> str:
    body = _fast_head(index, "bytes_uniq")
    body += _indent(_round3("durat", f"float(f[{index['durat']}])"), 1)
    body += [
        "    seconds = durat / 1000",
        "    duration = repr(round(seconds, 2))",
    ]
    body += _indent(_seconds("start", f"float(f[{index['first']}])"), 1)
    body += _indent(_seconds("end", f"float(f[{index['last']}])"), 1)
    for name, op in (("mss", "<"), ("sack_cnt", ">")):
        if f"c_{name}" in used and f"s_{name}" in used:
            body += [
                f"    a = int(f[{index[f'c_{name}']}])",
                f"    b = int(f[{index[f's_{name}']}])",
                f"    {name} = a if a {op} b else b",
            ]
    body.append("    out = []")
    for prefix, src, dst in (("c_", "c", "s"), ("s_", "s", "c")):
        values = [
            '"duration":{duration}',
            '"num_bits":{bits}',
            '"num_packets":{packets}',
            '"bits_per_second":{bps!r}',
            '"packets_per_second":{pps!r}',
        ]
        floats = []
        for fld in TCP_EXTRA:
            if not fld.directional:
                if f"c_{fld.column}" in used and f"s_{fld.column}" in used:
                    values.append(f'"{fld.key}":{{{fld.column}}}')
                continue
            col = prefix + fld.column
            if col not in used:
                continue
            if fld.kind == FLOAT:
                floats += _round3(fld.column, f"float(f[{index[col]}])")
                values.append(f'"{fld.key}":{{{fld.column}!r}}')
            else:
                values.append(f'"{fld.key}":{{f[{index[col]}]}}')
        text = (
            '{{"type":"flow","interval":600,"values":{{' + ",".join(values) + "}},"
            + _fast_meta(src, dst, "tcp") + ',"start":{start},"end":{end}}}'
        )
        body += [
            f"    bits = {prefix}bits",
            "    if bits >= threshold:",
            f"        packets = int(f[{index[prefix + 'pkts_data']}])",
            *_indent(floats, 2),
            "        if durat != 0:",
            *_indent(_round2("bps", "bits / seconds"), 3),
            *_indent(_round2("pps", "packets / seconds"), 3),
            "        else:",
            "            bps = pps = 0",
            f"        out.append(f'{text}')",
        ]
    body.append("    return out")
    return "\n".join(body) + "\n"


def _udp_fast_source(index: dict[str, int], used: dict[str, int]) -> str:
    body = _fast_head(index, "bytes_all")
    body.append("    out = []")
    for prefix, src, dst in (("c_", "c", "s"), ("s_", "s", "c")):
        text = (
            '{{"type":"flow","interval":600,"values":{{"duration":{duration!r},'
            '"num_bits":{bits},"num_packets":{packets},"bits_per_second":{bps!r},'
            '"packets_per_second":{pps!r}}},'
            + _fast_meta(src, dst, "udp") + ',"start":{start},"end":{end}}}'
        )
        body += [
            f"    bits = {prefix}bits",
            "    if bits >= threshold:",
            f"        packets = int(f[{index[prefix + 'pkts_all']}])",
            f"        seconds = float(f[{index[prefix + 'durat']}])",
            "        if not 0.0 <= seconds < 1e9:",
            "            raise Unusual",
            "        duration = round(seconds, 2)",
            *_indent(_seconds("start", f"float(f[{index[prefix + 'first_abs']}])"), 2),
            "        end = int(start + duration)",
            "        if seconds != 0:",
            *_indent(_round2("bps", "bits / seconds"), 3),
            *_indent(_round2("pps", "packets / seconds"), 3),
            "        else:",
            "            bps = pps = 0",
            f"        out.append(f'{text}')",
        ]
    body.append("    return out")
    return "\n".join(body) + "\n"
