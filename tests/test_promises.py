"""One test (at least) for each promise of README.md and doc/delivery.md that no other
test pins down: each one fails when the code that keeps the promise is broken, which
tests/mutation/run.py checks by breaking it.

The receivers that misbehave are real in-process transports (helpers.FaultyTransport,
driven through the CLI under `-t faulty`), or the real broker behind a proxy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter
from itertools import takewhile
from pathlib import Path

import pika.exceptions
import pytest
from broker import Proxy
from helpers import FaultyTransport, jsonl_objects, register, settle
from test_delivery import config as rabbit_config

from tstat_transport.cli import cull_main, send_main
from tstat_transport.state import PROCESSED_NAME, STATE_NAME
from tstat_transport.transports import Message

REPO = Path(__file__).resolve().parents[1]
DIRS = ["2026_11_24_19_18.out", "2026_11_24_19_20.out", "2026_11_24_19_22.out"]  # complete


def send(root: Path, *extra: str) -> int:
    return send_main(["-t", "faulty", "-T", "0", "-S", "s1", "-d", str(root), *extra])


def reference(capsys, root: Path) -> list[dict]:
    """What -N prints for the complete directories: every flow that must arrive."""
    assert send_main(["-N", "-T", "0", "-S", "s1", "-d", str(root)]) == 0
    return jsonl_objects(capsys.readouterr().out)


def markers(root: Path) -> list[str]:
    return [d for d in DIRS if (root / d / PROCESSED_NAME).exists()]


def state_messages(root: Path, directory: str) -> dict[str, int]:
    """Per log file, how many messages the directory's state file records as confirmed."""
    files = json.loads((root / directory / STATE_NAME).read_text())["files"]
    return {log: entry["messages"] for log, entry in files.items() if entry["messages"]}


def in_order(transport: FaultyTransport, directory: str) -> list[Message]:
    """The messages of `directory` confirmed together with every one before them."""
    sent = [m for m in transport.received if m.headers["tstat_directory"] == directory]
    done = {id(m) for m in transport.confirmed}
    return list(takewhile(lambda m: id(m) in done, sent))


def confirmed_in_order(transport: FaultyTransport, directory: str) -> dict[str, int]:
    """Per log file of `directory`, how many messages `in_order` holds."""
    return dict(Counter(m.headers["tstat_log"] for m in in_order(transport, directory)))


def objects(transports: list[FaultyTransport]) -> Counter:
    return Counter(json.dumps(o, sort_keys=True) for t in transports for o in t.objects())


def assert_rerun_completes(
    monkeypatch, capsys, root: Path, want: list[dict], first: FaultyTransport
) -> FaultyTransport:
    """A clean rerun marks every complete directory; nothing is lost, and nothing
    the failed run had confirmed in order is sent again."""
    clean = register(monkeypatch)
    assert send(root) == 0, capsys.readouterr().err
    second = clean.instances[0]
    assert markers(root) == DIRS
    got, wanted = objects([first, second]), Counter(json.dumps(o, sort_keys=True) for o in want)
    assert not wanted - got, f"{sum((wanted - got).values())} flows lost"
    kept = {m.message_id for d in DIRS for m in in_order(first, d)}
    assert not kept & {m.message_id for m in second.received}, "confirmed, yet sent again"
    return second


# -- the directory is marked only after every message is confirmed --------------------


def test_failed_final_flush_leaves_the_directory_unmarked(monkeypatch, tstat_root, capsys):
    root = tstat_root("full")
    want = reference(capsys, root)
    faulty = register(monkeypatch, fail_flush_at=1)
    assert send(root) == 75
    assert "connection lost in flush" in capsys.readouterr().err
    first = faulty.instances[0]
    assert markers(root) == []
    # Half of the last window was confirmed in the flush: that much is recorded.
    assert 0 < len(first.confirmed) < len(first.received)
    assert state_messages(root, DIRS[0]) == confirmed_in_order(first, DIRS[0])
    assert_rerun_completes(monkeypatch, capsys, root, want, first)


def test_a_flush_that_leaves_a_message_unconfirmed_marks_nothing(monkeypatch, tstat_root, capsys):
    root = tstat_root("full")
    want = reference(capsys, root)
    faulty = register(monkeypatch, flush_leaves=1)
    assert send(root) == 1
    err = capsys.readouterr().err
    assert (
        f"{root / DIRS[0]}: the faulty transport returned from flush with 1 message(s) "
        "unconfirmed: not marked processed"
    ) in err
    first = faulty.instances[0]
    assert markers(root) == []
    assert len(first.confirmed) == len(first.received) - 1
    assert state_messages(root, DIRS[0]) == confirmed_in_order(first, DIRS[0])
    assert_rerun_completes(monkeypatch, capsys, root, want, first)


def test_nack_fails_the_run_and_keeps_what_was_confirmed(monkeypatch, tstat_root, capsys):
    root = tstat_root("full")
    want = reference(capsys, root)
    faulty = register(monkeypatch, nack_at=8)  # the third message of the second directory
    assert send(root) == 1  # refused: an operator must look, not a retry
    err = capsys.readouterr().err
    assert "s1:0:2026_11_24_19_20.out:log_tcp_complete:2 nacked" in err
    first = faulty.instances[0]
    assert markers(root) == DIRS[:1]
    assert state_messages(root, DIRS[1]) == {"log_tcp_complete": 2}
    assert_rerun_completes(monkeypatch, capsys, root, want, first)


def test_confirms_out_of_order_record_only_the_in_order_part(monkeypatch, tstat_root, capsys):
    root = tstat_root("full")
    want = reference(capsys, root)
    faulty = register(monkeypatch, reverse=True, window=3, fail_after=11, collect=False)
    assert send(root) == 75
    first = faulty.instances[0]
    sent = [m for m in first.received if m.headers["tstat_directory"] == DIRS[1]]
    done = {id(m) for m in first.confirmed}
    # The case under test did happen: a message is unconfirmed while a later one is.
    assert any(
        id(m) not in done and id(n) in done for i, m in enumerate(sent) for n in sent[i + 1 :]
    )
    assert state_messages(root, DIRS[1]) == confirmed_in_order(first, DIRS[1])
    assert_rerun_completes(monkeypatch, capsys, root, want, first)


def test_a_window_confirmed_at_once_is_recorded_whole(monkeypatch, tstat_root, capsys):
    # As one ack with `multiple` set: a whole window reported confirmed in one go.
    root = tstat_root("full")
    want = reference(capsys, root)
    faulty = register(monkeypatch, batch=True, window=3, fail_after=10, collect=False)
    assert send(root) == 75
    first = faulty.instances[0]
    assert state_messages(root, DIRS[1]) == confirmed_in_order(first, DIRS[1]) != {}
    assert_rerun_completes(monkeypatch, capsys, root, want, first)


def test_progress_confirmed_before_a_failure_is_saved(monkeypatch, tstat_root, capsys):
    # With a window of 16 the state is written every 2 confirmed messages, and a window
    # that never fills confirms nothing until the failure: only the save made when the
    # run fails can record the four messages confirmed then.
    root = tstat_root("full")
    want = reference(capsys, root)
    faulty = register(monkeypatch, window=16, fail_after=11)
    assert send(root) == 75
    first = faulty.instances[0]
    assert markers(root) == DIRS[:1]
    assert confirmed_in_order(first, DIRS[1]) == {"log_tcp_complete": 4}
    assert state_messages(root, DIRS[1]) == {"log_tcp_complete": 4}
    second = assert_rerun_completes(monkeypatch, capsys, root, want, first)
    assert second.received[0].message_id == "s1:0:2026_11_24_19_20.out:log_tcp_complete:4"


# Unsaved confirmed messages at most: window/2 - 1, and 4 at window 64 because no log
# here is longer than 5 messages.
@pytest.mark.parametrize(("window", "most"), [(3, 0), (4, 1), (8, 3), (64, 4)])
def test_a_wide_window_saves_progress_every_half_window_of_confirmed_messages(
    monkeypatch, tstat_root, window, most
):
    # A run killed at any moment resends, besides what is in flight, only the confirmed
    # messages the state file does not hold yet: fewer than window/2 (none under 4).
    # The receiver confirms each message one publish later; the state on disk is read
    # before every publish.
    root = tstat_root("full")
    faulty = register(monkeypatch, window=window, lag=1, watch_state=True)
    assert send(root) == 0
    lags = faulty.instances[0].lags
    assert len(lags) == 19 and max(lags) == most


def test_a_failed_state_write_leaves_the_previous_state(monkeypatch, data_dir, small_disk, capsys):
    root = small_disk.path / "root"
    root.mkdir()
    for name in DIRS[:2]:
        shutil.copytree(data_dir / "full" / name, root / name)
    register(monkeypatch, window=1, fail_after=3)
    assert send(root) == 75
    before = (root / DIRS[0] / STATE_NAME).read_bytes()
    assert json.loads(before)["files"]["log_tcp_complete"]["messages"] == 3
    small_disk.fill()
    register(monkeypatch, window=1)
    assert send(root) == 1
    assert "no space left on device" in capsys.readouterr().err
    assert (root / DIRS[0] / STATE_NAME).read_bytes() == before  # whole, and as it was
    assert not list((root / DIRS[0]).glob(".*.tmp"))


def test_progress_for_another_transport_sends_the_directory_whole(
    monkeypatch, tstat_root, capsys, caplog
):
    root = tstat_root("full")
    register(monkeypatch, window=1, fail_after=8)  # directory 2 stops after 2 messages
    assert send(root) == 75
    assert state_messages(root, DIRS[1]) == {"log_tcp_complete": 2}
    elsewhere = register(monkeypatch, name="elsewhere")
    assert send(root) == 0
    assert "progress was recorded for transport 'faulty', this run uses 'elsewhere'" in caplog.text
    second = elsewhere.instances[0]
    # The new destination has none of directory 2: it gets all of it, from chunk 0.
    assert second.received[0].message_id == "s1:0:2026_11_24_19_20.out:log_tcp_complete:0"
    assert sum(m.count for m in second.received[:6]) == 490


def test_a_log_shorter_than_its_progress_is_sent_from_the_start(
    monkeypatch, tstat_root, capsys, caplog
):
    root = tstat_root("full")
    register(monkeypatch, window=1, fail_after=9)  # directory 2 stops after 3 messages
    assert send(root) == 75
    log = root / DIRS[1] / "log_tcp_complete"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:101]))  # replaced by a shorter file: header + 100 rows
    settle(root)  # ...long enough ago for tstat_send to take it
    clean = register(monkeypatch)
    assert send(root) == 0
    assert "file is shorter than the progress recorded for it" in caplog.text
    sent = [
        m
        for m in clean.instances[0].received
        if m.headers["tstat_log"] == "log_tcp_complete" and m.headers["tstat_directory"] == DIRS[1]
    ]
    # All of it (200 objects), numbered after the chunks of the old file: a consumer
    # would drop different flows under an id it has seen.
    assert [m.message_id.rsplit(":", 1)[1] for m in sent] == ["3", "4"]
    assert sum(m.count for m in sent) == 200


# -- the queue and the messages survive a broker restart ------------------------------


def test_the_queue_is_declared_durable_by_default(broker, queue_name, tstat_root, tmp_path):
    root = tstat_root("full")
    assert (
        send_main(
            [
                "-c",
                str(rabbit_config(tmp_path, broker, queue_name)),
                "-T",
                "0",
                "-s",
                "-d",
                str(root),
            ]
        )
        == 0
    )
    # The broker refuses to redeclare a queue with another durability: asking it both
    # ways reads the durability back.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="durable") as info:
        broker.declare(queue_name, durable=False)
    assert info.value.reply_code == 406
    broker.declare(queue_name, durable=True)
    assert {p.delivery_mode for p, _ in broker.fetch(queue_name)} == {2}


# The run takes 2 s. A transport that ignores `multiple` waits for confirms that never
# come: confirm_timeout ends that wait, and this bound any other hang.
@pytest.mark.timeout(20)
def test_acks_with_multiple_confirm_every_message_they_cover(
    broker, queue_name, tstat_root, tmp_path, capsys
):
    root = tstat_root("full")
    want = reference(capsys, root)
    with Proxy(coalesce_acks=True) as proxy:
        cfg = rabbit_config(
            tmp_path, broker, queue_name, port=proxy.port, timeout=3, window=8, confirm_timeout=3
        )
        code = send_main(["-c", str(cfg), "-T", "0", "-S", "s1", "-d", str(root)])
        assert code == 0, capsys.readouterr().err
    assert proxy.multiple_acks > 0  # the acks did arrive with `multiple`
    got = [o for _, body in broker.fetch(queue_name) for o in json.loads(body)]
    assert got == want
    assert markers(root) == DIRS


def test_no_more_than_window_messages_are_in_flight(broker, queue_name, tstat_root, tmp_path):
    # Replies held from the first message on: the sender may publish its window, then
    # must wait. The duplicates a crash can cause are bounded by that window.
    root = tstat_root("full")
    with Proxy(hold_after_publish=1) as proxy:
        cfg = rabbit_config(tmp_path, broker, queue_name, port=proxy.port, window=5)
        proc = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "bin/tstat_send"),
                "-c",
                str(cfg),
                "-T",
                "0",
                "-d",
                str(root),
            ],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while proxy.publishes < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1)  # time enough to publish more, were it allowed to
            assert proc.poll() is None, proc.stderr.read()
            assert proxy.publishes == 5
        finally:
            proc.kill()
            proc.wait()


# -- markers and progress survive a power cut: fsync, rename, fsync the directory -------


def test_marker_and_state_are_fsynced_before_and_after_the_rename(tstat_root, tmp_path):
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("needs strace (.ci/run installs it)")
    root = tstat_root("full")
    # The first directory is finished (.processed); the flush of the second fails, so
    # its progress is saved the way a failing run saves it.
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(REPO / "tests")!r}, {str(REPO)!r}]
        import helpers, tstat_transport.transports as registry
        class Failing(helpers.FaultyTransport):
            fail_flush_at = 2
        helpers.Failing = Failing
        registry.BUILTIN["faulty"] = "helpers:Failing"
        from tstat_transport.cli import send_main
        sys.exit(send_main(["-t", "faulty", "-T", "0", "-d", {str(root)!r}]))
    """)
    trace = tmp_path / "trace"
    done = subprocess.run(
        [
            strace,
            "-f",
            "-y",
            "-qq",
            "-o",
            str(trace),
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2",
            sys.executable,
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "ptrace" in done.stderr and done.returncode != 75:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()}")
    assert done.returncode == 75, done.stderr
    calls = trace.read_text()
    assert_durable_replace(calls, root / DIRS[0] / PROCESSED_NAME)
    assert_durable_replace(calls, root / DIRS[1] / STATE_NAME)


def assert_durable_replace(calls: str, path: Path) -> None:
    """The last write of `path` in strace's output: its temporary file fsynced, renamed
    onto `path`, then the directory fsynced (the rename itself made durable)."""
    lines = calls.splitlines()
    renames = [
        i
        for i, line in enumerate(lines)
        if re.search(rf"rename\w*\(.*\"{re.escape(str(path))}\"", line)
    ]
    assert renames, f"{path} was never renamed into place"
    i = renames[-1]
    tmp = re.search(
        rf"\"({re.escape(str(path.parent))}/\.{re.escape(path.name)}\.[^\"]+)\"", lines[i]
    ).group(1)
    before = [line for line in lines[:i] if re.search(r"fsync\(\d+<" + re.escape(tmp) + ">", line)]
    assert before, f"{tmp} renamed to {path} without an fsync of its data"
    after = [
        line
        for line in lines[i + 1 :]
        if re.search(r"fsync\(\d+<" + re.escape(str(path.parent)) + ">\\)", line)
    ]
    assert after, f"the rename to {path} was not made durable (no fsync of {path.parent})"


# -- the test suite's own promises --------------------------------------------------


def test_cull_quiet_leaves_the_logging_of_the_process_alone(tstat_root, caplog):
    root = tstat_root("full")
    assert cull_main(["-q", "-d", str(root)]) == 0
    import logging

    logging.getLogger("tstat_transport.reader").warning("still heard")
    assert "still heard" in caplog.text


@pytest.mark.parametrize(
    ("ci", "code", "line"),
    [
        ("1", 1, "skipped under CI (CI='1'): Skipped: no such tool"),
        ("true", 1, "skipped under CI (CI='true'): Skipped: no such tool"),
        ("0", 0, "1 skipped"),
        ("", 0, "1 skipped"),
    ],
)
def test_a_skip_is_a_failure_under_ci(tmp_path, ci, code, line):
    (tmp_path / "conftest.py").write_text((REPO / "tests/conftest.py").read_text())
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\ndef test_needs_a_tool():\n    pytest.skip('no such tool')\n"
    )
    path = os.pathsep.join([str(REPO / "tests"), str(REPO)])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "CI": ci, "PYTHONPATH": path},
    )
    assert done.returncode == code, done.stdout
    assert line in done.stdout
