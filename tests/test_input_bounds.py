"""What the outside world can put where tstat_send reads and writes: special files, planted
symlinks, over-long lines, huge objects, Tstat -Z's compressed logs, long logs that give no
message. Each bound is checked through the CLI on copies of the real data."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from broker import Proxy
from helpers import ListTransport, settle
from test_delivery import DIRS, assert_all_arrived, config, expected_flows, flows, markers, run

from tstat_transport import transports
from tstat_transport.cli import send_main
from tstat_transport.reader import (
    CHUNK_SIZE,
    MAX_LINE_BYTES,
    MAX_MESSAGE_BYTES,
    POLL_ROWS,
    LogFile,
    Position,
)
from tstat_transport.records import Options
from tstat_transport.state import LOCK_NAME, PROCESSED_NAME, STATE_NAME

REPO = Path(__file__).resolve().parents[1]
TCP = "log_tcp_complete"
UDP = "log_udp_complete"
OPTS = Options(threshold_bits=0, sensor="s1", instance=0)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`bin/tstat_send ARGS` in a subprocess: a run that hangs fails the test, not the suite."""
    return subprocess.run(
        [sys.executable, str(REPO / "bin/tstat_send"), *args],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def said(stderr: str) -> list[str]:
    """The log lines of a run, without their time, logger and level."""
    return [re.sub(r"^\S+ \S+ [A-Z]+: ", "", line) for line in stderr.splitlines()]


def printed(out: str) -> list[dict]:
    return [obj for line in out.splitlines() for obj in json.loads(line)]


def gzip_logs(root: Path) -> None:
    """Turn every flow log under `root` into the `.gz` Tstat -Z writes."""
    for path in [*root.glob(f"*/{TCP}"), *root.glob(f"*/{UDP}")]:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    settle(root)


# -- only regular files are read ----------------------------------------------------------


def test_fifo_log_is_refused_promptly_and_the_other_dirs_go(
    broker, queue_name, tstat_root, tmp_path, capsys
):
    root = tstat_root("full")
    fifo = root / DIRS[1] / UDP
    fifo.unlink()
    want = expected_flows(capsys, root)
    os.mkfifo(fifo)  # open() on it used to wait for a writer forever
    settle(root)
    cfg = config(tmp_path, broker, queue_name)
    done = cli("-c", str(cfg), "-T", "0", "-S", "s1", "-d", str(root), timeout=30)
    assert done.returncode == 1
    assert said(done.stderr) == [
        f"{fifo}: a FIFO, not a regular file: only regular files are read: file not sent"
    ]
    assert flows(broker.fetch(queue_name)) == want  # all but what the FIFO stands for
    assert markers(root) == [DIRS[0], DIRS[2]]


def test_log_linked_to_dev_zero_is_refused(tstat_root):
    root = tstat_root("full")
    log = root / DIRS[0] / TCP
    log.unlink()
    log.symlink_to("/dev/zero")  # read, it grew memory by gigabytes a second
    settle(root)
    done = cli("-N", "-T", "0", "-d", str(root), timeout=30)
    assert done.returncode == 1
    assert said(done.stderr) == [
        f"{log}: a symbolic link, not a regular file: only regular files are read: file not sent"
    ]
    assert len(printed(done.stdout)) == 490 + 634  # the other complete directories


@pytest.mark.parametrize(
    "where", [LOCK_NAME, f"{DIRS[0]}/{PROCESSED_NAME}", f"{DIRS[0]}/{STATE_NAME}"]
)
def test_planted_symlink_is_never_written_through(
    broker, queue_name, tstat_root, tmp_path, capsys, where
):
    root = tstat_root("full")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    absent = tmp_path / "absent"
    link = root / where
    # A dangling link would be created by a write through it; an existing file overwritten.
    link.symlink_to(absent if where.endswith(PROCESSED_NAME) else victim)
    assert run(config(tmp_path, broker, queue_name, window=1), root) == 1
    err = capsys.readouterr().err
    # Each file says so in its own words, and nothing else is said.
    assert (
        said(err)
        == {
            LOCK_NAME: [f"cannot open lock file {link}: it is a symbolic link (not followed)"],
            PROCESSED_NAME: [
                f"{link}: it is a symbolic link, not a marker tstat_send wrote: the "
                "directory is not sent; remove it"
            ],
            STATE_NAME: [
                f"{link}: ignoring unreadable state file (a symbolic link)",
                f"cannot write {link}: it is a symbolic link (not written through; remove "
                "it if it should not be there)",
            ],
        }[link.name]
    )
    assert victim.read_text() == "precious\n" and not absent.exists()
    assert link.is_symlink()
    assert DIRS[0] not in markers(root)


# -- bounded lines, bounded messages --------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
def test_row_with_25_mb_of_nul_bytes_is_a_bad_row_and_memory_stays_flat(tstat_root, compressed):
    root = tstat_root("full")
    log = root / DIRS[0] / TCP
    plain = cli("-N", "-T", "0", "-d", str(root))
    assert plain.returncode == 0 and len(printed(plain.stdout)) > 20, plain.stderr
    lines = log.read_bytes().split(b"\n")
    lines[10] += b"\0" * 25_000_000  # line 11, as a crash can leave it
    log.write_bytes(b"\n".join(lines))
    bad_line = len(lines[10]) + 1
    del lines
    if compressed:  # 25 KB of gzip that inflate to 25 MB
        gzip_logs(root)
        log = log.with_name(f"{TCP}.gz")
    settle(root)
    # The peak resident size of this process (VmHWM): ru_maxrss would also count the
    # test process it was forked from.
    measure = (
        "import re, sys\n"
        "from tstat_transport.cli import send_main\n"
        "code = send_main(sys.argv[1:])\n"
        "status = open('/proc/self/status').read()\n"
        "print('peak_kb', re.search(r'VmHWM:\\s+(\\d+)', status).group(1), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", measure, "-N", "-T", "0", "-d", str(root)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    *report, rss = said(done.stderr)
    assert report == [
        f"{log}:11: bad row skipped: line of {bad_line} "
        f"bytes, longer than the limit of {MAX_LINE_BYTES}"
    ]
    got, want = printed(done.stdout), printed(plain.stdout)
    assert got == want[:18] + want[20:]  # row 10 (objects 19 and 20) alone is missing
    assert int(rss.split()[1]) < 50 * 1024, rss


WIDE = ("pkts_unk", "pkts_fc", "pkts_unrto", "pkts_unfs", "pkts_rto", "pkts_fs", "pkts_reor")


def widen_rows(log: Path, rows: range) -> None:
    """Give data rows `rows` counters of 4 000 digits (Python's int takes up to 4 300), 7 a
    direction: objects of about 28 KB, from lines still under MAX_LINE_BYTES."""
    header, *lines = log.read_text().split("\n")
    names = [item.split(":")[0] for item in header.split("#")[-1].split(" ")]
    wide = [names.index(f"{side}_{name}") for side in "cs" for name in WIDE]
    for i in rows:
        fields = lines[i - 1].split(" ")
        for column in wide:
            fields[column] = str(i % 9 + 1) * 4000
        lines[i - 1] = " ".join(fields)
        assert len(lines[i - 1]) < MAX_LINE_BYTES
    log.write_text("\n".join([header, *lines]))


def test_messages_over_the_size_cap_are_split(broker, queue_name, tstat_root, tmp_path, capsys):
    root = tstat_root("full")
    log = root / DIRS[0] / TCP
    widen_rows(log, range(1, 61))
    settle(root)
    want = expected_flows(capsys, root)
    assert run(config(tmp_path, broker, queue_name), root) == 0
    messages = broker.fetch(queue_name)
    assert flows(messages) == want
    sizes = [len(body) for _, body in messages]
    assert max(sizes) <= MAX_MESSAGE_BYTES
    tcp0 = [
        p
        for p, _ in messages
        if p.headers["tstat_directory"] == DIRS[0] and p.headers["tstat_log"] == TCP
    ]
    assert len(tcp0) > -(-sum(p.headers["flows"] for p in tcp0) // CHUNK_SIZE)
    prefix = f"s1:0:{DIRS[0]}:{TCP}:"
    assert [p.message_id for p in tcp0] == [f"{prefix}{n}" for n in range(len(tcp0))]
    assert markers(root) == DIRS[:3]


def test_cut_chunks_resume_to_the_same_chunks(tstat_root):
    """Chunk boundaries, by count or by size, are the same whatever run reads them."""
    root = tstat_root("full")
    path = root / DIRS[0] / TCP
    widen_rows(path, range(1, 90, 2))
    chunks = list(LogFile(path, "tcp", OPTS).chunks())
    assert any(len(c.items) < CHUNK_SIZE for c in chunks[:-1]), "expected a cut by size"
    assert any(c.end.skip for c in chunks), "expected a cut between a row's two objects"
    for i, chunk in enumerate(chunks):
        rest = list(LogFile(path, "tcp", OPTS, chunk.end).chunks())
        assert [c.items for c in rest] == [c.items for c in chunks[i + 1 :]]


# -- compressed logs (Tstat -Z) ---------------------------------------------------------------


@pytest.mark.parametrize("variant", ["full", "core", "advanced", "inprogress"])
def test_gzipped_logs_give_the_plain_run_s_objects_and_reports(tstat_root, variant):
    root = tstat_root(variant)
    plain = cli("-N", "-T", "0", "-S", "s1", "--include-newest", "-d", str(root))
    assert printed(plain.stdout), plain.stderr  # two empty runs would compare equal
    gzip_logs(root)
    assert not [*root.glob(f"*/{TCP}"), *root.glob(f"*/{UDP}")]  # only .gz logs are left
    packed = cli("-N", "-T", "0", "-S", "s1", "--include-newest", "-d", str(root))
    assert packed.returncode == plain.returncode
    assert printed(packed.stdout) == printed(plain.stdout)
    assert said(packed.stderr) == said(
        plain.stderr.replace(TCP, f"{TCP}.gz").replace(UDP, f"{UDP}.gz")
    )


def test_gzipped_logs_resume_after_a_cut_without_loss(
    broker, queue_name, tstat_root, tmp_path, capsys
):
    root = tstat_root("full")
    want = expected_flows(capsys, root)
    assert send_main(["-N", "-T", "0", "-S", "s1", "-d", str(root)]) == 0
    sizes = [len(line) for line in capsys.readouterr().out.splitlines()]
    gzip_logs(root)
    with Proxy(cut_in_publish=11) as proxy:  # inside the 11th message: within directory 2
        assert run(config(tmp_path, broker, queue_name, port=proxy.port, window=4), root) == 75
    capsys.readouterr()
    first = broker.fetch(queue_name)
    state = json.loads((root / DIRS[1] / STATE_NAME).read_text())
    assert state["files"][TCP]["messages"] >= 1 and state["files"][TCP]["offset"] > 0
    assert run(config(tmp_path, broker, queue_name, window=4), root) == 0
    second = broker.fetch(queue_name)
    assert_all_arrived(flows(first) + flows(second), want, max_duplicates=4 * 100)
    ids = {p.message_id for p, _ in first + second}
    assert len(ids) == len(sizes)  # the plain run's messages, by id
    assert markers(root) == DIRS[:3]


def test_truncated_gz_is_never_marked_and_its_complete_rows_go(
    tstat_root, tmp_path, monkeypatch, caplog
):
    plain = tstat_root("full").rename(tmp_path / "plain")
    root = tstat_root("full")
    everything = printed(
        cli("-N", "-T", "0", "-S", "s1", "--include-newest", "-d", str(root)).stdout
    )
    gzip_logs(root)
    CliList.instances.clear()
    whole = {}
    for d in (DIRS[1], DIRS[3]):  # an older directory (a crash), and the newest (being written)
        path = root / d / f"{UDP}.gz"
        whole[path] = path.read_bytes()
        path.write_bytes(whole[path][: len(whole[path]) * 2 // 3])
    settle(root)
    monkeypatch.setitem(transports.BUILTIN, "list", f"{__name__}:CliList")
    args = ["-t", "list", "-T", "0", "-S", "s1", "--include-newest", "-d", str(root)]
    assert send_main(args) == 0
    (first,) = CliList.instances
    got = first.objects()
    for d in (DIRS[1], DIRS[3]):  # each cut file: the objects of its complete rows
        sent = [
            o
            for m in first.received
            if m.headers["tstat_directory"] == d and m.headers["tstat_log"] == UDP
            for o in json.loads(m.body)
        ]
        whole_file = [o for c in LogFile(plain / d / UDP, "udp", OPTS).chunks() for o in c.objects]
        assert 0 < len(sent) < len(whole_file) and sent == whole_file[: len(sent)]
    assert markers(root) == [DIRS[0], DIRS[2]]
    assert f"{root / DIRS[1] / UDP}.gz: the compressed data ends early" in caplog.text
    # The files are whole again (Tstat finished writing): the rest goes, nothing twice.
    for path, data in whole.items():
        path.write_bytes(data)
    settle(root)
    assert send_main(args) == 0
    key = lambda o: json.dumps(o, sort_keys=True)  # noqa: E731
    assert sorted(map(key, got + CliList.instances[-1].objects())) == sorted(map(key, everything))
    assert markers(root) == DIRS


# -- long logs that give no message -------------------------------------------------------------


class CliList(ListTransport):
    """The list transport as the CLI builds it (`-t list` once registered); counts poll()
    calls, and SIGKILLs its own process at poll number $KILL_AT_POLL."""

    instances: list[CliList] = []

    def __init__(self, settings, config) -> None:
        super().__init__(settings)
        self.polls = 0
        self.kill_at = int(os.environ.get("KILL_AT_POLL", "0"))
        CliList.instances.append(self)

    def poll(self) -> None:
        self.polls += 1
        if self.polls == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def big_quiet_log(root: Path, rows: int) -> list[int]:
    """Make DIRS[0]'s TCP log `rows` real rows long; return the byte offset after each line."""
    path = root / DIRS[0] / TCP
    header, *body = path.read_bytes().splitlines(keepends=True)
    lines = [header] + [body[i % len(body)] for i in range(rows)]
    path.write_bytes(b"".join(lines))
    settle(root)
    ends, total = [], 0
    for line in lines:
        total += len(line)
        ends.append(total)
    return ends


def test_long_log_below_the_threshold_lets_the_transport_poll(tstat_root, monkeypatch, caplog):
    root = tstat_root("full")
    rows = 2 * POLL_ROWS + 5000
    big_quiet_log(root, rows)
    monkeypatch.setitem(transports.BUILTIN, "list", f"{__name__}:CliList")
    CliList.instances.clear()
    caplog.set_level("INFO")
    assert send_main(["-t", "list", "-T", "1000000", "-d", str(root), "-v"]) == 0
    (transport,) = CliList.instances
    assert transport.received == []  # nothing above a terabit
    assert transport.polls == rows // POLL_ROWS
    assert markers(root) == DIRS[:3]


def test_run_killed_in_a_quiet_stretch_resumes_from_what_it_read(tstat_root, monkeypatch, caplog):
    root = tstat_root("full")
    ends = big_quiet_log(root, 3 * POLL_ROWS)
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from tstat_transport import transports\n"
        f"transports.BUILTIN['list'] = '{Path(__file__).stem}:CliList'\n"
        "from tstat_transport.cli import send_main\n"
        "sys.exit(send_main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "-t", "list", "-T", "1000000", "-d", str(root)],
        env={**os.environ, "PYTHONPATH": str(REPO), "KILL_AT_POLL": "2"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    state = json.loads((root / DIRS[0] / STATE_NAME).read_text())
    # Recorded at the first poll, with nothing in flight: past row POLL_ROWS (line + 1).
    recorded = state["files"][TCP]
    assert {
        k: recorded[k]
        for k in (
            "offset",
            "line",
            "skip",
            "header_offset",
            "messages",
            "objects",
            "rows",
            "bad_rows",
        )
    } == {
        "offset": ends[POLL_ROWS],
        "line": POLL_ROWS + 2,
        "skip": 0,
        "header_offset": 0,
        "messages": 0,
        "objects": 0,
        "rows": POLL_ROWS,
        "bad_rows": 0,
    }
    monkeypatch.setitem(transports.BUILTIN, "list", f"{__name__}:CliList")
    caplog.set_level("INFO")
    assert send_main(["-t", "list", "-T", "1000000", "-d", str(root), "-v"]) == 0
    summary = next(r.message for r in caplog.records if r.message.startswith("summary:"))
    dir_rows = sum(
        len(p.read_text().splitlines()) - 1
        for d in DIRS[1:3]
        for p in (root / d / TCP, root / d / UDP)
    )
    assert f" rows={2 * POLL_ROWS + dir_rows} " in summary  # the first POLL_ROWS not read again
    assert markers(root) == DIRS[:3]


def test_empty_chunk_points_at_the_first_unsent_object(tstat_root):
    root = tstat_root("full")
    path = root / DIRS[0] / TCP
    header, *body = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([header, *body[:10], b"not a row\n" * POLL_ROWS, *body[10:20]]))
    lf = LogFile(path, "tcp", OPTS)
    chunks = list(lf.chunks())
    assert [len(c.items) for c in chunks] == [0, 40]
    assert chunks[0].end == Position(len(header), 2, 0, 0)  # the 20 objects of rows 1-10
    assert lf.stats.bad_rows == POLL_ROWS
