"""Anonymised addresses: ipcrypt-pfx's published vectors, truncation, and runs that leak none."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from pathlib import Path

import pytest
from broker import Broker
from helpers import ListTransport, jsonl_objects, settings
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tstat_transport.anonymize import IpcryptPfx, Truncate, parse_key
from tstat_transport.cli import send_main
from tstat_transport.errors import TransportUnavailable
from tstat_transport.reader import parse_header
from tstat_transport.sender import Sender

KEY_A = "0123456789abcdeffedcba98765432101032547698badcfeefcdab8967452301"
KEY_B = "2b7e151628aed2a6abf7158809cf4f3ca9f5ba40db214c3798f2e1c23456789a"

# The ipcrypt-pfx test vectors published with the IETF draft (draft-denis-ipcrypt).
VECTORS = [
    (KEY_A, "0.0.0.0", "151.82.155.134"),
    (KEY_A, "255.255.255.255", "94.185.169.89"),
    (KEY_A, "192.0.2.1", "100.115.72.131"),
    (KEY_A, "2001:db8::1", "c180:5dd4:2587:3524:30ab:fa65:6ab6:f88"),
    (KEY_B, "10.0.0.47", "19.214.210.244"),
    (KEY_B, "10.0.0.129", "19.214.210.80"),
    (KEY_B, "10.0.0.234", "19.214.210.30"),
    (KEY_B, "172.16.5.193", "210.78.229.136"),
    (KEY_B, "172.16.97.42", "210.78.179.241"),
    (KEY_B, "172.16.248.177", "210.78.121.215"),
    (KEY_B, "2001:db8::a5c9:4e2f:bb91:5a7d", "7cec:702c:1243:f70:1956:125:b9bd:1aba"),
    (KEY_B, "2001:db8::7234:d8f1:3c6e:9a52", "7cec:702c:1243:f70:a3ef:c8e:95c1:cd0d"),
    (KEY_B, "2001:db8::f1e0:937b:26d4:8c1a", "7cec:702c:1243:f70:443c:c8e:6a62:b64d"),
    (KEY_B, "2001:db8:3a5c:0:e7d1:4b9f:2c8a:f673", "7cec:702c:3503:bef:e616:96bd:be33:a9b9"),
    (KEY_B, "2001:db8:9f27:0:b4e2:7a3d:5f91:c8e6", "7cec:702c:a504:b74e:194a:3d90:b047:2d1a"),
    (KEY_B, "2001:db8:d8b4:0:193c:a5e7:8b2f:46d1", "7cec:702c:f840:aa67:1b8:e84f:ac9d:77fb"),
]


@pytest.mark.parametrize(("key", "address", "expected"), VECTORS)
def test_ipcrypt_pfx_gives_the_published_vectors(key, address, expected):
    assert IpcryptPfx(bytes.fromhex(key)).apply(address) == expected


def test_truncate_both_families():
    t = Truncate(24, 48)
    assert t.label == "truncate/24/48"
    assert t.apply("10.10.0.1") == "10.10.0.0"
    assert t.apply("192.0.2.255") == "192.0.2.0"
    assert t.apply("fd00:20:1::1") == "fd00:20:1::"
    assert t.apply("2001:db8:85a3:1234::8a2e:370:7334") == "2001:db8:85a3::"
    assert t.apply("fe80::1%eth0") == "fe80::"  # the scope goes with the host part
    t = Truncate(16, 64)
    assert (t.apply("10.10.0.1"), t.apply("fd00:20:1:2:3::1")) == ("10.10.0.0", "fd00:20:1:2::")
    assert Truncate(0, 0).apply("8.8.8.8") == "0.0.0.0"
    assert Truncate(32, 128).apply("fd00::1") == "fd00::1"
    with pytest.raises(ValueError):
        t.apply("not an address")


def _prefix_bits(a: str, b: str) -> int:
    x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    bits = x.max_prefixlen
    return bits - (int(x) ^ int(y)).bit_length()


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32).filter(lambda k: k[:16] != k[16:]),
    pair=st.one_of(
        st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)),
        st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=6)),
    ),
)
def test_ipcrypt_pfx_preserves_prefixes_exactly(key, pair):
    """Two addresses sharing n leading bits share exactly n after the mapping, and the
    family stays: subnets can be aggregated, nothing more is learnt."""
    a, b = (str(x) for x in pair)
    pfx = IpcryptPfx(key)
    ea, eb = pfx.apply(a), pfx.apply(b)
    assert ipaddress.ip_address(ea).version == ipaddress.ip_address(a).version
    assert _prefix_bits(ea, eb) == _prefix_bits(a, b)
    assert (ea == eb) == (a == b)
    # The same key on another sensor (a new instance) gives the same mapping.
    assert IpcryptPfx(key).apply(a) == ea


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    v4=st.integers(0, 32),
    v6=st.integers(0, 128),
    address=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
)
def test_truncate_is_the_network_of_the_prefix(v4, v6, address):
    bits = v4 if address.version == 4 else v6
    network = ipaddress.ip_network(f"{address}/{bits}", strict=False)
    assert Truncate(v4, v6).apply(str(address)) == str(network.network_address)


def test_another_key_gives_another_mapping():
    a = IpcryptPfx(bytes.fromhex(KEY_A)).apply("10.10.0.1")
    b = IpcryptPfx(bytes.fromhex(KEY_B)).apply("10.10.0.1")
    assert a != b


def test_keys_as_hex_text_or_raw_bytes():
    raw = bytes.fromhex(KEY_A)
    assert parse_key(KEY_A.encode() + b"\n") == raw
    assert parse_key(KEY_A.upper().encode()) == raw
    assert parse_key(raw) == raw
    for bad in (b"", b"abc", KEY_A[:-2].encode(), raw + b"x"):
        with pytest.raises(ValueError):
            parse_key(bad)


# -- through tstat_send ---------------------------------------------------------------------


def input_addresses(root: Path) -> set[str]:
    """Every c_ip and s_ip of every log under `root`."""
    found = set()
    logs = [*root.glob("*.out/log_tcp_complete"), *root.glob("*.out/log_udp_complete")]
    for log in logs:
        lines = log.read_text().splitlines()
        names = parse_header(lines[0])
        c_ip, s_ip = names.index("c_ip"), names.index("s_ip")
        for text in lines[1:]:
            fields = text.split(" ")
            if len(fields) == len(names):
                found.update((fields[c_ip], fields[s_ip]))
    return found


def write_config(tmp_path: Path, anonymize: dict[str, str], before: str = "") -> Path:
    path = tmp_path / "anonymize.ini"
    keys = "".join(f"{k} = {v}\n" for k, v in anonymize.items())
    path.write_text(before + "[anonymize]\n" + keys)
    return path


def run_n(capsys, root: Path, *args: str) -> tuple[int, str, str]:
    code = send_main(["-N", "-T", "0", "-S", "s1", "--include-newest", "-d", str(root), *args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_no_real_address(text: str, real: set[str]) -> None:
    leaked = {a for a in real if json.dumps(a) in text}
    assert not leaked, f"real addresses in the output: {sorted(leaked)[:5]}"


@pytest.mark.parametrize(
    ("anonymize", "label"),
    [
        ({"method": "truncate"}, "truncate/24/48"),
        ({"method": "truncate", "ipv4_prefix": "16", "ipv6_prefix": "64"}, "truncate/16/64"),
        ({"method": "pseudonymize", "key": "${TSTAT_TEST_ANON_KEY}"}, "ipcrypt-pfx"),
    ],
)
@pytest.mark.parametrize("level", ["full", "core"])
def test_a_run_leaves_no_real_address_in_any_message(
    capsys, data_dir, tmp_path, monkeypatch, anonymize, label, level
):
    monkeypatch.setenv("TSTAT_TEST_ANON_KEY", KEY_B)
    root = data_dir / level
    code, plain, _ = run_n(capsys, root)
    assert code == 0
    cfg = write_config(tmp_path, anonymize)
    code, out, err = run_n(capsys, root, "-c", str(cfg), "-D")
    assert code == 0
    real = input_addresses(root)
    assert any(":" in a for a in real) and any("." in a for a in real)  # both families
    assert_no_real_address(out, real)
    assert KEY_B not in out + err and KEY_B not in out.upper() + err.upper()
    mine, theirs = jsonl_objects(out), jsonl_objects(plain)
    assert len(mine) == len(theirs) == 1998
    mapping: dict[str, str] = {}
    for m, t in zip(mine, theirs):
        assert m["meta"].pop("anonymization") == label
        for key in ("src_ip", "dst_ip"):
            real_ip, sent = t["meta"].pop(key), m["meta"].pop(key)
            # One address, one replacement, of the same family, all run long.
            assert mapping.setdefault(real_ip, sent) == sent
            assert ipaddress.ip_address(sent).version == ipaddress.ip_address(real_ip).version
        assert m == t  # nothing else changes
    if label == "ipcrypt-pfx":
        assert mapping == {a: IpcryptPfx(bytes.fromhex(KEY_B)).apply(a) for a in mapping}
    else:
        v4, v6 = (int(n) for n in label.split("/")[1:])
        assert mapping == {a: Truncate(v4, v6).apply(a) for a in mapping}


def test_off_by_default_and_with_method_none(capsys, data_dir, tmp_path):
    cfg = write_config(tmp_path, {"method": "none"})
    for extra in ([], ["-c", str(cfg)]):
        code, out, _ = run_n(capsys, data_dir / "full", *extra)
        assert code == 0 and "anonymization" not in out
        assert '"src_ip":"10.10.0.1"' in out


@pytest.mark.parametrize(
    ("anonymize", "message"),
    [
        (
            {"method": "scramble"},
            "[anonymize] method = 'scramble': expected one of none, truncate, pseudonymize",
        ),
        (
            {"method": "truncate", "ipv4_prefix": "33"},
            "[anonymize] ipv4_prefix = '33': expected an integer 0-32",
        ),
        (
            {"method": "truncate", "ipv6_prefix": "/48"},
            "[anonymize] ipv6_prefix = '/48': expected an integer 0-128",
        ),
        (
            {"method": "pseudonymize"},
            "[anonymize] method = pseudonymize needs exactly one of key_file, key",
        ),
        (
            {"method": "pseudonymize", "key": KEY_A, "key_file": "/k"},
            "[anonymize] method = pseudonymize needs exactly one of key_file, key",
        ),
        (
            {"method": "pseudonymize", "key": KEY_A[:40]},
            "[anonymize] key: expected 64 hex digits or 32 raw bytes",
        ),
        (
            {"method": "pseudonymize", "key": KEY_A[:32] * 2},
            "[anonymize] key: the two halves of the key must differ",
        ),
        (
            {"method": "pseudonymize", "key_file": "/nonexistent/anon.key"},
            "[anonymize] key_file = '/nonexistent/anon.key': No such file or directory",
        ),
        (
            {"method": "pseudonymize", "key_file": "/dev/zero"},
            "[anonymize] key_file = '/dev/zero': not a regular file",
        ),
    ],
)
def test_config_errors_name_the_key_never_its_value(capsys, data_dir, tmp_path, anonymize, message):
    cfg = write_config(tmp_path, anonymize)
    code, out, err = run_n(capsys, data_dir / "full", "-c", str(cfg))
    assert code == 2 and out == ""
    assert err.strip().endswith(f"{cfg}: {message}")
    assert len(err.strip().splitlines()) == 1
    assert KEY_A[:32] not in err


def test_a_fifo_as_key_file_is_refused_without_hanging(capsys, data_dir, tmp_path):
    fifo = tmp_path / "anon.key"
    os.mkfifo(fifo)
    cfg = write_config(tmp_path, {"method": "pseudonymize", "key_file": str(fifo)})
    code, out, err = run_n(capsys, data_dir / "full", "-c", str(cfg))
    assert code == 2 and out == ""
    assert err.strip().endswith(f"{cfg}: [anonymize] key_file = '{fifo}': not a regular file")


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o400, False), (0o644, True)])
def test_key_from_a_file(capsys, data_dir, tmp_path, mode, warned):
    key_file = tmp_path / "anon.key"
    key_file.write_text(KEY_A + "\n")
    key_file.chmod(mode)
    cfg = write_config(tmp_path, {"method": "pseudonymize", "key_file": str(key_file)})
    code, out, err = run_n(capsys, data_dir / "full", "-c", str(cfg))
    assert code == 0
    expected = IpcryptPfx(bytes.fromhex(KEY_A)).apply("10.10.0.1")
    assert f'"src_ip":"{expected}"' in out
    warning = f"{cfg}: [anonymize] key_file {key_file} can be read by other users than its owner"
    assert (warning in err) is warned
    assert KEY_A[:32] not in err


def test_without_cryptography_pseudonymize_is_a_config_error(
    capsys, data_dir, tmp_path, monkeypatch
):
    # What an install without the [anonymize] extra sees.
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers", None)
    cfg = write_config(tmp_path, {"method": "pseudonymize", "key": KEY_A})
    code, out, err = run_n(capsys, data_dir / "full", "-c", str(cfg))
    assert code == 2 and out == ""
    assert (
        "[anonymize] method = pseudonymize needs the cryptography package: "
        "pip install 'tstat_transport[anonymize]'" in err
    )


def test_unknown_key_in_the_section_is_named(capsys, data_dir, tmp_path):
    cfg = write_config(tmp_path, {"method": "truncate", "ipv4_prefx": "16"})
    code, out, err = run_n(capsys, data_dir / "full", "-c", str(cfg))
    assert f"{cfg}: [anonymize] ipv4_prefx" in err


def test_a_directory_finished_with_older_options_stays_anonymised(tstat_root):
    """The state records threshold, sensor and instance, never the anonymisation: a
    directory finished "with the options it was started with" must not lose it."""
    root = tstat_root("full")
    truncate = Truncate(24, 48)
    first = ListTransport(settings(root, anonymize=truncate), window=1, fail_after=8)
    with pytest.raises(TransportUnavailable), first:
        Sender(settings(root, anonymize=truncate), first).run(root)
    renamed = settings(root, sensor="renamed", anonymize=truncate)
    second = ListTransport(renamed, window=1)
    with second:
        Sender(renamed, second).run(root)
    objects = first.objects() + second.objects()
    assert {o["meta"]["sensor_id"] for o in second.objects()} == {"testsensor", "renamed"}
    assert {o["meta"].get("anonymization") for o in objects} == {"truncate/24/48"}
    text = json.dumps(objects)
    assert_no_real_address(text, input_addresses(root))


# -- what arrives in the archive: the format version and anonymised flows -----------------


def test_rabbit_messages_carry_the_format_version_and_no_real_address(
    capsys, broker: Broker, queue_name, tstat_root, tmp_path
):
    root = tstat_root("full")
    rabbit = (
        f"[rabbit]\nhost = {broker.host}\nport = {broker.port}\nusername = {broker.username}\n"
        f"password = {broker.password}\nqueue = {queue_name}\nconnect_retries = 0\n"
        "retry_delay = 0\ntimeout = 10\n"
    )
    cfg = write_config(tmp_path, {"method": "pseudonymize", "key": KEY_B}, before=rabbit)
    assert send_main(["-c", str(cfg), "-T", "0", "-S", "s1", "-d", str(root)]) == 0
    messages = broker.fetch(queue_name)
    assert len(messages) == 6 + 6 + 7  # the three complete directories
    assert {p.headers["format_version"] for p, _ in messages} == {1}
    bodies = b"".join(body for _, body in messages).decode()
    assert_no_real_address(bodies, input_addresses(root))
    objects = [o for _, body in messages for o in json.loads(body)]
    assert {o["meta"]["anonymization"] for o in objects} == {"ipcrypt-pfx"}
    assert KEY_B not in capsys.readouterr().err


def test_http_requests_carry_the_format_version(tstat_root, tmp_path):
    import http.server
    import threading

    seen: list[tuple[str, str]] = []

    class Archive(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            seen.append((self.headers.get("X-Tstat-Format-Version", ""), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Archive)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        root = tstat_root("full")
        url = f"http://127.0.0.1:{server.server_address[1]}/flows"
        cfg = write_config(tmp_path, {"method": "truncate"}, before=f"[http]\nurl = {url}\n")
        assert send_main(["-t", "http", "-c", str(cfg), "-T", "0", "-d", str(root)]) == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert len(seen) == 19
    assert {version for version, _ in seen} == {"1"}
    assert_no_real_address("".join(body for _, body in seen), input_addresses(root))


def test_every_key_of_the_section_is_in_the_example():
    from tstat_transport.anonymize import CONFIG_SECTIONS

    example = (Path(__file__).resolve().parents[1] / "config.ini.example").read_text()
    body = example.split("\n[anonymize]\n", 1)[1].split("\n[", 1)[0]
    for key in CONFIG_SECTIONS["anonymize"]:
        assert f"\n{key} =" in body or f"\n#{key} =" in body, key


@hypothesis_settings(max_examples=500, deadline=None)
@given(
    n=st.one_of(
        st.integers(0, (1 << 128) - 1),
        # Runs of zero groups, where the ways of writing an address differ.
        st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0x0A0B]), min_size=8, max_size=8).map(
            lambda groups: int("".join(f"{g:04x}" for g in groups), 16)
        ),
    )
)
def test_ipv6_text_is_what_ipaddress_writes(n):
    from tstat_transport.anonymize import ipv6_text

    assert ipv6_text(n) == str(ipaddress.IPv6Address(n))


@pytest.mark.parametrize(
    "anonymizer", [Truncate(24, 48), IpcryptPfx(bytes.fromhex(KEY_B))], ids=["truncate", "pfx"]
)
def test_fast_path_equals_reference_with_anonymisation(data_dir, anonymizer):
    from tstat_transport.records import Options, compile_converter

    options = Options(0, "s1", 0, anonymizer)
    checked = 0
    for level in ("full", "core", "advanced"):
        for path, protocol in [
            *((p, "tcp") for p in sorted((data_dir / level).glob("*.out/log_tcp_complete"))),
            *((p, "udp") for p in sorted((data_dir / level).glob("*.out/log_udp_complete"))),
        ]:
            lines = path.read_text().splitlines()
            conv = compile_converter(protocol, parse_header(lines[0]), options)
            for text in lines[1:]:
                fields = text.split(" ")
                reference = [json.dumps(o, separators=(",", ":")) for o in conv.convert(fields)]
                try:
                    fast = conv.encode(fields)
                except ValueError:
                    continue
                assert fast == reference
                checked += 1
    assert checked > 2000
