"""Tstat rows to flow objects: the message-format contract (doc/message-format.md).

Each row of `log_tcp_complete` or `log_udp_complete` gives up to two flow objects,
direction `in` (the client's `c_` columns, src = client) and `out` (the server's
`s_` columns, src = server), each kept only if its num_bits reaches the threshold.

Columns are found by header name once per file. Two converters are built per header
from one field table: the reference (`Reference`, plain Python: a loop over the
table) gives flow dicts, and the fast encoder (generated straight-line code, as
collections.namedtuple does, with the column indices as constants) writes the same
objects directly as compact JSON text. The fast one declines any row it is not sure
of, and the reference decides. A level that lacks an optional column (core has no
RTT, window or option columns) gives objects without those keys.
"""

from __future__ import annotations

import ipaddress
import json
import linecache
import re
import zlib
from dataclasses import dataclass
from operator import itemgetter
from socket import AF_INET, AF_INET6, inet_pton
from types import CodeType
from typing import Any, Callable, Sequence

from .anonymize import Anonymizer
from .errors import TstatError

# The version of the message format (doc/message-format.md), sent with every message.
# Fields are only ever added; a change in the meaning of an existing one bumps it.
FORMAT_VERSION = 1

# Column kinds: how the text is turned into a value.
INT = "int"  # counters, ports: int(text)
FLOAT = "float"  # Tstat's %f columns: round(float(text), 3), as the original did
ADDRESS = "address"  # c_ip, s_ip: an IPv4 or IPv6 address, kept as Tstat wrote it

# How a value is made from its column(s).
SIDE = "side"  # the column of the object's direction: c_<column> (in), s_<column> (out)
MIN = "min"  # min(c_<column>, s_<column>): the same in both directions
MAX = "max"  # max(c_<column>, s_<column>)
RATIO = "ratio"  # <column> / <over> of the object's direction; integer 0 unless both non-zero


class Unusual(ValueError):
    """The fast path declines a row (an odd value): the reference converter decides."""


class LogFormatError(TstatError):
    """A header this tool cannot use (not a Tstat log, or a required column missing)."""


@dataclass(frozen=True)
class Field:
    """One key of `values`, the Tstat column(s) it comes from and how."""

    key: str
    column: str  # the name without its c_/s_ prefix
    kind: str
    how: str = SIDE
    over: str = ""  # RATIO: the denominator column


# TCP values after the five rate fields, in the contract's order. Optional: a header
# without the column(s) gives objects without the key.
TCP_EXTRA = (
    Field("tcp_rexmit_bytes", "bytes_retx", INT),
    Field("tcp_rexmit_pkts", "pkts_retx", INT),
    # Added by the original's 0.6.8 (format version 1).
    Field("tcp_rexmit_rate", "pkts_retx", INT, how=RATIO, over="pkts_data"),
    Field("tcp_syn_cnt", "syn_cnt", INT),
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
    Field("tcp_mss", "mss", INT, how=MIN),
    Field("tcp_max_seg_size", "mss_max", INT),
    Field("tcp_min_seg_size", "mss_min", INT),
    # 0.6.5 fills the two window fields from the congestion-window columns; kept so.
    Field("tcp_win_max", "cwin_max", INT),
    Field("tcp_win_min", "cwin_min", INT),
    Field("tcp_initial_cwin", "cwin_ini", INT),
    Field("tcp_sack_cnt", "sack_cnt", INT, how=MAX),
)

TCP_REQUIRED = (
    "c_ip",
    "c_port",
    "s_ip",
    "s_port",
    "first",
    "last",
    "durat",
    "c_bytes_uniq",
    "s_bytes_uniq",
    "c_pkts_data",
    "s_pkts_data",
)
UDP_REQUIRED = (
    "c_ip",
    "c_port",
    "s_ip",
    "s_port",
    "c_first_abs",
    "s_first_abs",
    "c_durat",
    "s_durat",
    "c_bytes_all",
    "s_bytes_all",
    "c_pkts_all",
    "s_pkts_all",
)

# Which columns a converter reads, with their kind: used to explain a bad row.
_KINDS = {
    "c_ip": ADDRESS,
    "s_ip": ADDRESS,
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


def address(text: str) -> str:
    """`text` itself if it is an IPv4 or IPv6 address; ValueError otherwise."""
    ipaddress.ip_address(text)
    return text


def _cast(kind: str, text: str) -> Any:
    if kind == INT:
        return int(text)
    if kind == FLOAT:
        return round(float(text), 3)
    return address(text)


@dataclass(frozen=True)
class Options:
    """What shapes the objects: recorded in the progress state of each directory."""

    threshold_bits: float
    sensor: str
    instance: str | int
    # Applied to every address when set (meta.anonymization says which); never recorded
    # in the state, which must not hold a key.
    anonymize: Anonymizer | None = None


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


def _field_columns(fld: Field, prefix: str) -> list[str]:
    """The columns `fld` reads for the direction of `prefix` (c_ or s_)."""
    if fld.how in (MIN, MAX):
        return [f"c_{fld.column}", f"s_{fld.column}"]
    if fld.how == RATIO:
        return [prefix + fld.column, prefix + fld.over]
    return [prefix + fld.column]


def tcp_fields(index: dict[str, int]) -> list[Field]:
    """The fields of TCP_EXTRA this header has every column of."""
    return [
        fld
        for fld in TCP_EXTRA
        if all(c in index for p in ("c_", "s_") for c in _field_columns(fld, p))
    ]


class Reference:
    """The reference converter: a row (its fields) to its flow dicts.

    Plain Python over the field table; raises ValueError (or IndexError,
    ZeroDivisionError, OverflowError) for a row it cannot convert.
    """

    def __init__(self, protocol: str, index: dict[str, int], options: Options) -> None:
        self.protocol = protocol
        self.threshold = options.threshold_bits
        self.sensor, self.instance = options.sensor, options.instance
        self.anonymize = options.anonymize
        self.ip = index["c_ip"], index["s_ip"]
        self.port = index["c_port"], index["s_port"]
        volume = "bytes_uniq" if protocol == "tcp" else "bytes_all"
        self.volume = index["c_" + volume], index["s_" + volume]
        if protocol == "tcp":
            self.durat, self.first, self.last = index["durat"], index["first"], index["last"]
            self.packets = index["c_pkts_data"], index["s_pkts_data"]
            # Per direction: (key, how, kind, column indices) for each field present.
            self.extra = tuple(
                tuple(
                    (fld.key, fld.how, fld.kind, [index[c] for c in _field_columns(fld, p)])
                    for fld in tcp_fields(index)
                )
                for p in ("c_", "s_")
            )
        else:
            self.packets = index["c_pkts_all"], index["s_pkts_all"]
            self.udp_durat = index["c_durat"], index["s_durat"]
            self.first_abs = index["c_first_abs"], index["s_first_abs"]

    def __call__(self, f: Sequence[str]) -> list[dict[str, Any]]:
        bits = int(f[self.volume[0]]) * 8, int(f[self.volume[1]]) * 8
        # Most rows of a busy sensor are below the threshold in both directions: they
        # cost two int() and nothing else (their other values are not looked at).
        if bits[0] < self.threshold and bits[1] < self.threshold:
            return []
        ips = [address(f[self.ip[0]]), address(f[self.ip[1]])]
        if self.anonymize is not None:
            ips = [self.anonymize.apply(ip) for ip in ips]
        ports = int(f[self.port[0]]), int(f[self.port[1]])
        if self.protocol == "tcp":
            durat = round(float(f[self.durat]), 3)
            start = int(round(float(f[self.first]), 3) / 1000)
            end = int(round(float(f[self.last]), 3) / 1000)
        out = []
        for d in (0, 1):
            if bits[d] < self.threshold:
                continue
            packets = int(f[self.packets[d]])
            if self.protocol == "tcp":
                values = self._rates(durat / 1000, bits[d], packets, durat != 0)
                values.update(self._tcp_extra(f, d))
            else:
                # Tstat writes UDP c_durat/s_durat in seconds with 6 decimals (TCP durat
                # is in ms); 0.6.5 divided them by 1000 anyway. Here duration is in
                # seconds like TCP's, and the rates use the full microsecond precision.
                seconds = float(f[self.udp_durat[d]])
                values = self._rates(seconds, bits[d], packets, seconds != 0)
                start = int(round(float(f[self.first_abs[d]]), 3) / 1000)
                end = int(start + values["duration"])
            out.append(
                {
                    "type": "flow",
                    "interval": 600,
                    "values": values,
                    "meta": self._meta(ips, ports, d),
                    "start": start,
                    "end": end,
                }
            )
        return out

    @staticmethod
    def _rates(seconds: float, bits: int, packets: int, timed: bool) -> dict[str, Any]:
        return {
            "duration": round(seconds, 2),
            "num_bits": bits,
            "num_packets": packets,
            "bits_per_second": round(bits / seconds, 2) if timed else 0,
            "packets_per_second": round(packets / seconds, 2) if timed else 0,
        }

    def _tcp_extra(self, f: Sequence[str], d: int) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, how, kind, cols in self.extra[d]:
            if how == SIDE:
                values[key] = _cast(kind, f[cols[0]])
                continue
            a, b = _cast(kind, f[cols[0]]), _cast(kind, f[cols[1]])
            if how == MIN:
                values[key] = a if a < b else b
            elif how == MAX:
                values[key] = a if a > b else b
            else:  # RATIO, as the original's 0.6.8: unrounded, and 0 without both
                values[key] = a / b if a and b else 0
        return values

    def _meta(self, ips: list[str], ports: tuple[int, int], d: int) -> dict[str, Any]:
        meta = {
            "src_ip": ips[d],
            "src_port": ports[d],
            "dst_ip": ips[1 - d],
            "dst_port": ports[1 - d],
            "protocol": self.protocol,
            "sensor_id": self.sensor,
            "instance_id": self.instance,
            "flow_type": "tstat",
        }
        if self.anonymize is not None:
            meta["anonymization"] = self.anonymize.label
        return meta


@dataclass(frozen=True)
class RowConverter:
    """The converters for one header, and the columns they read (name -> index)."""

    protocol: str
    ncols: int
    convert: Callable[[Sequence[str]], list]  # the reference: row -> flow dicts
    encode: Callable[[Sequence[str]], list]  # the fast path: row -> JSON texts, or Unusual
    columns: dict[str, int]

    def split_plan(self) -> tuple[int, int, int]:
        """How a row is split for `encode`: (maxsplit, parts, spaces).

        Neither converter reads a column past the last one of `columns`, so the ones
        after it can stay one unsplit rest: row.split(" ", maxsplit) gives `parts`
        items, the last holding `spaces` spaces, exactly when the row has ncols
        columns. (-1, ncols, 0) when there is no rest worth keeping whole.
        """
        last = max(self.columns.values())
        if last + 2 >= self.ncols:
            return -1, self.ncols, 0
        return last + 1, last + 2, self.ncols - last - 2

    def explain(self, fields: Sequence[str]) -> str:
        """Why `fields` could not be converted: the first column with a bad value."""
        if len(fields) != self.ncols:
            return f"expected {self.ncols} fields, found {len(fields)}"
        for name, idx in self.columns.items():
            text = fields[idx]
            kind = kind_of(name)
            try:
                if kind == ADDRESS:
                    address(text)
                elif kind == INT:
                    int(text)
                elif float(text) != float(text):  # nan
                    raise ValueError
            except ValueError:
                want = {ADDRESS: "an IP address", INT: "an integer"}.get(kind, "a number")
                return f"column {name} = {text[:40]!r} is not {want}"
        return "cannot convert row"


def _used_columns(protocol: str, index: dict[str, int]) -> dict[str, int]:
    """Every column the converters read, in the order a bad row is explained."""
    names = list(TCP_REQUIRED if protocol == "tcp" else UDP_REQUIRED)
    if protocol == "tcp":
        for fld in tcp_fields(index):
            for prefix in ("c_", "s_"):
                names += _field_columns(fld, prefix)
    return {name: index[name] for name in dict.fromkeys(names)}


# Encoders compiled in this process, by their source: every log of a root usually has
# the same header, and compiling one costs a few ms (24 logs: ~50 ms of a run's CPU).
_COMPILED: dict[str, CodeType] = {}
_COMPILED_MAX = 64  # headers a run meets: a few; past this many, compile each time


def compile_converter(protocol: str, names: Sequence[str], options: Options) -> RowConverter:
    """Build the row converters for a header (cleaned column names, in file order).

    Raises LogFormatError when a required column is missing.
    """
    index = _index(names)
    if protocol not in ("tcp", "udp"):
        raise ValueError(protocol)
    _require(index, TCP_REQUIRED if protocol == "tcp" else UDP_REQUIRED, protocol)
    used = _used_columns(protocol, index)
    anonymize = options.anonymize
    label = "" if anonymize is None else ',"anonymization":' + json.dumps(anonymize.label)
    source_of = _tcp_fast_source if protocol == "tcp" else _udp_fast_source
    fast = source_of(index, used, anonymize is not None)
    namespace: dict[str, Any] = {
        "threshold": options.threshold_bits,
        "SENSOR": json.dumps(options.sensor),
        "INSTANCE": json.dumps(options.instance),
        "ANONYMIZATION": label,
        "anonymize": None if anonymize is None else anonymize.apply,
        "Unusual": Unusual,
        "digits": _DIGITS,
        "ints_ok": _INTS_OK,
        "inet_pton": inet_pton,
        "AF_INET": AF_INET,
        "AF_INET6": AF_INET6,
        "pick": itemgetter(*_passthrough(index, used)),  # ports at least: a tuple
    }
    # A real file name, so a traceback through the encoder shows its source lines.
    # crc32, not hashlib: importing hashlib maps OpenSSL, ~4 MB of RSS for a name.
    code = _COMPILED.get(fast)
    if code is None:
        digest = f"{zlib.crc32(fast.encode()):08x}"
        filename = f"<tstat {protocol} encoder {digest}>"
        _remember_source(filename, fast)
        code = compile(fast, filename, "exec")
        if len(_COMPILED) < _COMPILED_MAX:
            _COMPILED[fast] = code
    exec(code, namespace)  # noqa: S102
    return RowConverter(
        protocol, len(names), Reference(protocol, index, options), namespace["encode"], used
    )


# -- The fast path -------------------------------------------------------------------
# The same objects as the reference converter, written straight to compact JSON text:
# no dicts, no json.dumps, integer columns copied as text once checked canonical.
# It must give, byte for byte, `json.dumps(obj, separators=(",", ":"))` of the
# reference's objects (tests/test_records.py checks every real row and generated
# ones); for any value it is not sure of it raises Unusual and the reference decides.

# One check per row of the integer columns copied as text, joined as
# "  port  port  int  ...  " (two spaces around each): integers as printf writes
# them, so the text is its own JSON (no "007", "+5", "-0", ""). The usual row passes
# three cheap tests: only digits and spaces; no empty column (three spaces); each
# column that starts with 0 is "0" (as many " 0" as " 0 ": the two spaces keep the
# matches apart). Any other row (a negative count, say) gets the full regex.
_DIGITS = re.compile(r"[0-9 ]*").fullmatch
_INT = r"(?:0|-?[1-9][0-9]*)"
_INTS_OK = re.compile(rf"(?:  {_INT})+  ").fullmatch
# The addresses, copied as text too, are checked by inet_pton (the family chosen by a
# colon): what it accepts ipaddress accepts too, and it needs no JSON escaping. IPv4:
# four decimal octets of 0-255, without leading zeros. IPv6: only hex digits, colons
# and dots, no scope (%eth0). It costs a tenth of ipaddress; anything it refuses goes
# to the reference.


def _remember_source(filename: str, source: str) -> None:
    """Let tracebacks through generated code show its lines."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def _passthrough(index: dict[str, int], used: dict[str, int]) -> list[int]:
    """Integer columns copied as text into the JSON: ports, plain integer TCP values."""
    cols = ["c_port", "s_port"]
    cols += [c for c in used if kind_of(c) == INT and c[2:] in _PLAIN_TCP_INTS]
    return [index[c] for c in dict.fromkeys(cols)]


_PLAIN_TCP_INTS = {f.column for f in TCP_EXTRA if f.how in (SIDE, RATIO) and f.kind == INT}


def _round3(var: str, expr: str, limit: str = "1e9") -> list[str]:
    # round(x, 3) is slow (it goes through decimal strings). Away from a tie, the
    # integer nearest to x*1000 is exact here, and n / 1000 is then the very double
    # round(x, 3) returns (both are the double nearest to n/1000); near a tie, round()
    # itself decides. Negatives, NaN and large values are left to the reference.
    return [
        f"x = {expr}",
        f"if not 0.0 <= x < {limit}:",
        "    raise Unusual",
        "y = x * 1000.0 + 0.5",
        "n = int(y)",
        "d = y - n",
        # n / 1000, or x * 0.0 for n == 0: keeps the sign of a zero, as round does.
        f"{var} = (n / 1000 if n else x * 0.0) if 0.001 < d < 0.999 else round(x, 3)",
    ]


def _round2(var: str, expr: str) -> list[str]:
    # The same for rates (computed values, not text); below 1e10 the error of v*100
    # is far smaller than the 0.001 kept from a tie. A negative rate (a negative count
    # in a corrupt row) goes to round(): between -0.005 and 0 it is -0.0, where n / 100
    # would give 0.0.
    return [
        f"v = {expr}",
        "y = v * 100.0 + 0.5",
        "n = int(y)",
        "d = y - n",
        f"{var} = n / 100 if 0.001 < d < 0.999 and 0.0 <= v < 1e10 else round(v, 2)",
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


def _fast_meta(src: str, dst: str, protocol: str, anonymized: bool) -> str:
    return (
        f'"meta":{{{{"src_ip":"{{{src}_ip}}","src_port":{{{src}_port}},'
        f'"dst_ip":"{{{dst}_ip}}","dst_port":{{{dst}_port}},"protocol":"{protocol}",'
        '"sensor_id":{SENSOR},"instance_id":{INSTANCE},"flow_type":"tstat"'
        + ("{ANONYMIZATION}}}" if anonymized else "}}")
    )


def _early_exit(index: dict[str, int], volume: str) -> list[str]:
    # As the reference: a row below the threshold in both directions costs two int().
    return [
        f"c_bits = int(f[{index['c_' + volume]}]) * 8",
        f"s_bits = int(f[{index['s_' + volume]}]) * 8",
        "if c_bits < threshold and s_bits < threshold:",
        "    return []",
    ]


def _fast_head(index: dict[str, int], volume: str, anonymized: bool) -> list[str]:
    return [
        "def encode(f):",
        *_indent(_early_exit(index, volume), 1),
        "    u = f\"  {'  '.join(pick(f))}  \"",
        '    if (digits(u) is None or u.count(" 0") != u.count(" 0 ") or "   " in u) and (',
        "        ints_ok(u) is None",
        "    ):",
        "        raise Unusual",
        f"    c_ip = f[{index['c_ip']}]",
        f"    s_ip = f[{index['s_ip']}]",
        "    try:",
        '        inet_pton(AF_INET6 if ":" in c_ip else AF_INET, c_ip)',
        '        inet_pton(AF_INET6 if ":" in s_ip else AF_INET, s_ip)',
        "    except (OSError, ValueError):",
        "        raise Unusual from None",
        *(["    c_ip = anonymize(c_ip)", "    s_ip = anonymize(s_ip)"] if anonymized else []),
        f"    c_port = f[{index['c_port']}]",
        f"    s_port = f[{index['s_port']}]",
    ]


def _tcp_fast_extra(
    fields: list[Field], index: dict[str, int], prefix: str
) -> tuple[list[str], list[str]]:
    """For one direction: the JSON members of the TCP_EXTRA fields, and the lines
    computing the values they format."""
    members, computed = [], []
    for fld in fields:
        cols = [index[c] for c in _field_columns(fld, prefix)]
        if fld.how in (MIN, MAX):
            members.append(f'"{fld.key}":{{{fld.column}}}')
        elif fld.how == RATIO:
            # The numerator is a passthrough column (canonical text, so "0" is zero);
            # the denominator is often the packets already converted.
            den = "packets" if cols[1] == index[prefix + "pkts_data"] else f"int(f[{cols[1]}])"
            computed.append(
                f"{fld.key} = repr(int(f[{cols[0]}]) / {den}) "
                f"if f[{cols[0]}] != '0' and {den} else '0'"
            )
            members.append(f'"{fld.key}":{{{fld.key}}}')
        elif fld.kind == FLOAT:
            computed += _round3(fld.column, f"float(f[{cols[0]}])")
            members.append(f'"{fld.key}":{{{fld.column}!r}}')
        else:
            members.append(f'"{fld.key}":{{f[{cols[0]}]}}')
    return members, computed


def _tcp_fast_source(index: dict[str, int], used: dict[str, int], anonymized: bool) -> str:
    body = _fast_head(index, "bytes_uniq", anonymized)
    body += _indent(_round3("durat", f"float(f[{index['durat']}])"), 1)
    body += [
        "    seconds = durat / 1000",
        "    duration = repr(round(seconds, 2))",
    ]
    body += _indent(_seconds("start", f"float(f[{index['first']}])"), 1)
    body += _indent(_seconds("end", f"float(f[{index['last']}])"), 1)
    fields = tcp_fields(index)
    for fld in fields:
        if fld.how in (MIN, MAX):  # the same in both directions: once per row
            body += [
                f"    a = int(f[{index[f'c_{fld.column}']}])",
                f"    b = int(f[{index[f's_{fld.column}']}])",
                f"    {fld.column} = a if a {'<' if fld.how == MIN else '>'} b else b",
            ]
    body.append("    out = []")
    for prefix, src, dst in (("c_", "c", "s"), ("s_", "s", "c")):
        members, computed = _tcp_fast_extra(fields, index, prefix)
        values = [
            '"duration":{duration}',
            '"num_bits":{bits}',
            '"num_packets":{packets}',
            '"bits_per_second":{bps!r}',
            '"packets_per_second":{pps!r}',
            *members,
        ]
        text = (
            '{{"type":"flow","interval":600,"values":{{'
            + ",".join(values)
            + "}},"
            + _fast_meta(src, dst, "tcp", anonymized)
            + ',"start":{start},"end":{end}}}'
        )
        body += [
            f"    bits = {prefix}bits",
            "    if bits >= threshold:",
            f"        packets = int(f[{index[prefix + 'pkts_data']}])",
            *_indent(computed, 2),
            "        if durat != 0:",
            *_indent(_round2("bps", "bits / seconds"), 3),
            *_indent(_round2("pps", "packets / seconds"), 3),
            "        else:",
            "            bps = pps = 0",
            f"        out.append(f'{text}')",
        ]
    body.append("    return out")
    return "\n".join(body) + "\n"


def _udp_fast_source(index: dict[str, int], used: dict[str, int], anonymized: bool) -> str:
    body = _fast_head(index, "bytes_all", anonymized)
    body.append("    out = []")
    for prefix, src, dst in (("c_", "c", "s"), ("s_", "s", "c")):
        text = (
            '{{"type":"flow","interval":600,"values":{{"duration":{duration!r},'
            '"num_bits":{bits},"num_packets":{packets},"bits_per_second":{bps!r},'
            '"packets_per_second":{pps!r}}},'
            + _fast_meta(src, dst, "udp", anonymized)
            + ',"start":{start},"end":{end}}}'
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
