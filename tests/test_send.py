"""The walk and the CLI: which directories go, when they are marked, resuming after a failure."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import ListTransport, jsonl_objects, settings, snapshot

from tstat_transport.cli import send_main
from tstat_transport.directories import Status, TstatDirectory
from tstat_transport.errors import StateError, TransportUnavailable
from tstat_transport.sender import Sender
from tstat_transport.state import PROCESSED_NAME, STATE_NAME

REPO = Path(__file__).resolve().parents[1]
FULL_DIRS = [
    "2026_11_24_19_18.out",
    "2026_11_24_19_20.out",
    "2026_11_24_19_22.out",
    "2026_11_24_19_24.out",
]
FULL_OBJECTS = {
    "2026_11_24_19_18.out": 506,
    "2026_11_24_19_20.out": 490,
    "2026_11_24_19_22.out": 634,
    "2026_11_24_19_24.out": 368,
}


def send_n(capsys, *args: str) -> tuple[int, list[dict], str]:
    code = send_main(["-N", "-T", "0", "-S", "testsensor", *args])
    out, err = capsys.readouterr()
    return code, jsonl_objects(out), err


# -- --no-transport ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "objects"),
    [("full", 1998), ("core", 1998), ("advanced", 1998), ("inprogress", 728)],
)
def test_no_transport_prints_every_variant(capsys, data_dir, variant, objects):
    # Straight on the repository's data (read-only by contract): -N must not write anything.
    before = snapshot(data_dir / variant)
    code, objs, err = send_n(capsys, "--include-newest", "-d", str(data_dir / variant))
    assert code == 0, err
    assert len(objs) == objects
    assert all(
        o["meta"]["sensor_id"] == "testsensor" and o["meta"]["flow_type"] == "tstat" for o in objs
    )
    assert snapshot(data_dir / variant) == before


def test_newest_directory_is_left_for_a_later_run(capsys, tstat_root, caplog):
    root = tstat_root("full")
    code, objs, err = send_n(capsys, "-v", "-d", str(root))
    assert code == 0
    assert "2026_11_24_19_24.out: newest directory, Tstat may still be writing it" in err
    code, everything, _ = send_n(capsys, "--include-newest", "-d", str(root))
    assert code == 0
    # Exactly the three older directories' objects, none of the newest's.
    assert objs == everything[: -FULL_OBJECTS[FULL_DIRS[3]]]
    assert len(objs) == sum(FULL_OBJECTS[d] for d in FULL_DIRS[:3])


def test_no_transport_marks_nothing_and_sends_again(capsys, tstat_root):
    root = tstat_root("full")
    before = snapshot(root)
    first = send_n(capsys, "--include-newest", "-d", str(root))[1]
    assert snapshot(root) == before  # no .processed, no state, no lock file
    assert send_n(capsys, "--include-newest", "-d", str(root))[1] == first


def test_inprogress_cut_rows_are_never_emitted(capsys, data_dir):
    code, objs, err = send_n(capsys, "--include-newest", "-d", str(data_dir / "inprogress"))
    assert code == 0, err
    newest = objs[506:]
    # The newest directory's log_tcp_complete holds 111 whole rows and a cut one: exactly
    # the first 222 objects of the finished directory in full/.
    code, full_objs, err = send_n(capsys, "--include-newest", "-d", str(data_dir / "full"))
    assert code == 0, err
    assert newest == full_objs[506 : 506 + 222]


def test_single_stops_after_first_directory_with_data(capsys, tstat_root):
    root = tstat_root("full")
    code, objs, _ = send_n(capsys, "-s", "-d", str(root))
    assert code == 0 and len(objs) == FULL_OBJECTS[FULL_DIRS[0]]


def test_pretty_prints_each_message_as_065_did(capsys, data_dir):
    code, compact, _ = send_n(capsys, "--include-newest", "-d", str(data_dir / "full"))
    assert code == 0
    assert (
        send_main(
            [
                "-N",
                "-T",
                "0",
                "-S",
                "testsensor",
                "--pretty",
                "--include-newest",
                "-d",
                str(data_dir / "full"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    decoder, pos, messages = json.JSONDecoder(), 0, []
    while pos < len(out):
        msg, end = decoder.raw_decode(out, pos)
        assert out[pos:end] == json.dumps(msg, indent=4)
        messages.append(msg)
        pos = end + 1
    assert [o for m in messages for o in m] == compact
    assert max(map(len, messages)) == 100


def test_subprocess_bin_script(data_dir):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "bin/tstat_send"),
            "-N",
            "-T",
            "1000",
            "--include-newest",
            "-d",
            str(data_dir / "full"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    objs = jsonl_objects(out.stdout)
    # Flows of at least 1000 MB in one direction: the bulk transfers of the capture.
    assert objs and all(o["values"]["num_bits"] >= 8e9 for o in objs)
    assert out.stderr == ""  # a good run is silent (cron mails any output)


# -- usage errors: one line, exit 2, no traceback -----------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-d", ".", "--bogus"], "unrecognized arguments: --bogus"),
        ([], "the following arguments are required: -d/--directory"),
        (["-d", "/nonexistent/tstat"], "/nonexistent/tstat: no such directory"),
        (["-d", ".", "-T", "-1"], "--threshold -1: must be 0 or more megabytes"),
        (["-d", ".", "-T", "lots"], "argument -T/--threshold: invalid float value: 'lots'"),
        (["-d", ".", "-t", "rabit"], "unknown transport 'rabit' (did you mean 'rabbit'?)"),
    ],
)
def test_usage_errors_are_one_line(capsys, args, message):
    code = send_main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


# -- delivery through a transport that confirms: markers, state, resume ---------------


def test_directory_marked_only_after_everything_confirmed(tstat_root):
    root = tstat_root("full")
    transport = ListTransport(settings(root), window=4)
    with transport:
        failed = Sender(settings(root), transport).run(root)
    assert failed == 0
    assert len(transport.objects()) == 1998
    for name in FULL_DIRS:
        marker = json.loads((root / name / PROCESSED_NAME).read_text())
        assert marker["transport"] == "list" and marker["objects"] == FULL_OBJECTS[name]
        assert not (root / name / STATE_NAME).exists()
    ids = [m.message_id for m in transport.received]
    assert ids[0] == "testsensor:0:2026_11_24_19_18.out:log_tcp_complete:0"
    assert len(set(ids)) == len(ids)
    # A second run finds nothing to do.
    again = ListTransport(settings(root))
    with again:
        assert Sender(settings(root), again).run(root) == 0
    assert again.received == []


def test_failure_mid_directory_resumes_without_loss(tstat_root):
    root = tstat_root("full")
    s = settings(root)
    first = ListTransport(s, window=4, fail_after=11)
    with pytest.raises(TransportUnavailable), first:
        Sender(s, first).run(root)
    # Dir 1 (6 messages) is done; dir 2 stopped with 5 of its messages out, 2 confirmed.
    assert (root / FULL_DIRS[0] / PROCESSED_NAME).exists()
    assert not (root / FULL_DIRS[1] / PROCESSED_NAME).exists()
    state = json.loads((root / FULL_DIRS[1] / STATE_NAME).read_text())
    assert state["files"]["log_tcp_complete"]["messages"] == 2
    assert state["files"]["log_tcp_complete"]["objects"] == 200
    second = ListTransport(s, window=4)
    with second:
        assert Sender(s, second).run(root) == 0
    everything = ListTransport(s)
    shutil.rmtree(root)
    root = tstat_root("full")
    with everything:
        assert Sender(settings(root), everything).run(root) == 0
    got = Counter(json.dumps(o, sort_keys=True) for o in first.objects() + second.objects())
    want = Counter(json.dumps(o, sort_keys=True) for o in everything.objects())
    assert not want - got, "a flow was lost"
    duplicates = got - want
    assert sum(duplicates.values()) <= 4 * 100  # at most the window, 100 flows a message
    # Resent messages keep their ids, so a consumer can drop them.
    resent = [m.message_id for m in second.received[:3]]
    assert resent == [m.message_id for m in first.received[8:11]]
    assert resent[0] == "testsensor:0:2026_11_24_19_20.out:log_tcp_complete:2"
    assert [m.body for m in second.received[:3]] == [m.body for m in first.received[8:11]]


def test_changed_options_finish_the_started_directory_with_the_old_ones(tstat_root, caplog):
    root = tstat_root("full")
    first = ListTransport(settings(root), window=1, fail_after=8)
    with pytest.raises(TransportUnavailable), first:
        Sender(settings(root), first).run(root)
    s2 = settings(root, sensor="renamed")
    second = ListTransport(s2, window=1)
    with second:
        assert Sender(s2, second).run(root) == 0
    assert (
        "options changed since this directory was started (sensor 'testsensor' -> "
        "'renamed'); finishing it with the options it was started with" in caplog.text
    )
    sensors = [o["meta"]["sensor_id"] for o in second.objects()]
    n_dir2 = FULL_OBJECTS[FULL_DIRS[1]] - 200  # two messages of dir 2 were confirmed
    assert sensors[:n_dir2] == ["testsensor"] * n_dir2
    assert set(sensors[n_dir2:]) == {"renamed"}


def test_newest_with_cut_line_is_sent_but_not_marked_until_complete(tstat_root, data_dir):
    root = tstat_root("inprogress")
    s = settings(root)
    t1 = ListTransport(s)
    with t1:
        assert Sender(s, t1).run(root) == 0
    newest = root / "2026_11_24_19_20.out"
    assert not (newest / PROCESSED_NAME).exists()
    assert len(t1.objects()) == 506 + 222
    # Tstat finishes the directory (and opens a newer one).
    for name in ("log_tcp_complete", "log_udp_complete", "log_tcp_nocomplete"):
        shutil.copy(data_dir / "full/2026_11_24_19_20.out" / name, newest / name)
    (root / "2026_11_24_19_22.out").mkdir()
    t2 = ListTransport(s)
    with t2:
        assert Sender(s, t2).run(root) == 0
    assert (newest / PROCESSED_NAME).exists()
    # Exactly the rest of the directory: nothing twice, nothing lost.
    assert len(t2.objects()) == FULL_OBJECTS["2026_11_24_19_20.out"] - 222
    full_root = tstat_root("full")
    full = ListTransport(settings(full_root))
    with full:
        name = "2026_11_24_19_20.out"
        record = TstatDirectory(full_root / name, name, Status.DUE, complete=True)
        Sender(settings(full_root), full).process_directory(record)
    assert t1.objects()[506:] + t2.objects() == full.objects()


def test_bad_rows_and_missing_logs_do_not_stop_the_directory(tstat_root, caplog):
    root = tstat_root("full")
    d = root / FULL_DIRS[1]
    lines = (d / "log_tcp_complete").read_text().splitlines(True)
    lines[3] = "not a row\n"
    (d / "log_tcp_complete").write_text("".join(lines))
    (d / "log_udp_complete").unlink()
    t = ListTransport(settings(root))
    with t:
        assert Sender(settings(root), t).run(root) == 0
    assert (d / PROCESSED_NAME).exists()
    marker = json.loads((d / PROCESSED_NAME).read_text())
    assert marker["bad_rows"] == 1 and marker["objects"] == 490 - 2 - 38
    assert f"{d}/log_tcp_complete:4: bad row skipped: expected 134 fields, found 3" in caplog.text


def test_unusable_log_leaves_its_directory_unmarked_and_others_go(tstat_root, capsys):
    root = tstat_root("full")
    bad = root / FULL_DIRS[1] / "log_tcp_complete"
    bad.write_text("this is not a tstat log\n1 2 3\n")
    code = send_main(["-t", "stdout", "-T", "0", "--include-newest", "-d", str(root)])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"{bad}:1: first line is not a Tstat header" in err
    assert len(jsonl_objects(out)) == 1998 - 452


def test_full_disk_for_the_state_file_stops_and_keeps_what_was_confirmed(data_dir, small_disk):
    root = small_disk.path / "root"
    root.mkdir()
    shutil.copytree(data_dir / "full" / FULL_DIRS[0], root / FULL_DIRS[0])
    shutil.copytree(data_dir / "full" / FULL_DIRS[1], root / FULL_DIRS[1])
    small_disk.fill()  # the first state file cannot be written
    s = settings(root)
    t = ListTransport(s, window=1)
    with pytest.raises(StateError, match="no space left on device"), t:
        Sender(s, t).run(root)
    assert not (root / FULL_DIRS[0] / PROCESSED_NAME).exists()
    assert list((root / FULL_DIRS[0]).glob(".*tmp")) == []  # no half-written leftovers
    small_disk.free()
    t2 = ListTransport(s, window=1)
    with t2:
        assert Sender(s, t2).run(root) == 0
    assert (root / FULL_DIRS[0] / PROCESSED_NAME).exists()
    assert len(t2.objects()) == FULL_OBJECTS[FULL_DIRS[0]] + FULL_OBJECTS[FULL_DIRS[1]]


def test_summary_line_at_verbose(capsys, data_dir, caplog):
    caplog.set_level(logging.INFO)
    assert send_main(["-N", "-T", "0", "-v", "--include-newest", "-d", str(data_dir / "full")]) == 0
    err = capsys.readouterr().err
    assert (
        "summary: dirs_done=4 dirs_failed=0 dirs_skipped=0 dirs_waiting=0 dirs_ignored=0 rows=999 "
        "bad_rows=0 objects=1998 messages=24" in err
    )


def test_wide_window_checkpoints_every_half_window_and_bounds_duplicates(tstat_root):
    # Window 32: the state is written every 16 confirmed messages; a failure resends at
    # most the 32 in flight plus 15 confirmed since the last write.
    root = tstat_root("full")
    s = settings(root)
    first = ListTransport(s, window=32, fail_after=15)
    with pytest.raises(TransportUnavailable), first:
        Sender(s, first).run(root)
    second = ListTransport(s, window=32)
    with second:
        assert Sender(s, second).run(root) == 0
    ids = Counter(m.message_id for m in first.received + second.received)
    assert len(ids) == 24  # every message of the four directories
    assert 0 < sum(n - 1 for n in ids.values()) <= 32 + 15
