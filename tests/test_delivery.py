"""tstat_send end to end into the real RabbitMQ, and what happens when things go wrong.

Each case asserts what reached the queue (the flow objects themselves), what is on disk
(.processed, the state file) and the exit code, as an operator would check them.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pika.exceptions
import pytest
from broker import Broker, Proxy, free_port
from helpers import settle, snapshot

from tstat_transport.cli import send_main
from tstat_transport.state import LOCK_NAME, PROCESSED_NAME, STATE_NAME

REPO = Path(__file__).resolve().parents[1]
DIRS = [
    "2026_11_24_19_18.out",
    "2026_11_24_19_20.out",
    "2026_11_24_19_22.out",
    "2026_11_24_19_24.out",
]
COMPLETE_OBJECTS = 506 + 490 + 634  # the three complete directories of full/


def config(tmp_path: Path, broker: Broker, queue: str, port: int | None = None, **extra) -> Path:
    rabbit = {
        "host": broker.host,
        "port": port or broker.port,
        "username": broker.username,
        "password": broker.password,
        "queue": queue,
        "connect_retries": 0,
        "retry_delay": 0,
        "timeout": 10,
        **extra,
    }
    path = tmp_path / f"config-{uuid.uuid4().hex[:6]}.ini"
    path.write_text("[rabbit]\n" + "".join(f"{k} = {v}\n" for k, v in rabbit.items()))
    return path


def run(cfg: Path, root: Path, *extra: str) -> int:
    return send_main(["-c", str(cfg), "-T", "0", "-S", "s1", "-d", str(root), *extra])


def flows(messages) -> list[dict]:
    return [obj for _, body in messages for obj in json.loads(body)]


def expected_flows(capsys, root: Path) -> list[dict]:
    """What -N prints for the complete directories: the reference for what must arrive."""
    assert send_main(["-N", "-T", "0", "-S", "s1", "-d", str(root)]) == 0
    return [o for line in capsys.readouterr().out.splitlines() for o in json.loads(line)]


def key(obj: dict) -> str:
    return json.dumps(obj, sort_keys=True)


def assert_all_arrived(got: list[dict], want: list[dict], max_duplicates: int) -> None:
    got_c, want_c = Counter(map(key, got)), Counter(map(key, want))
    assert not want_c - got_c, f"{sum((want_c - got_c).values())} flows lost"
    assert not got_c - want_c - Counter({k: 99 for k in want_c}), "unexpected flows"
    assert sum((got_c - want_c).values()) <= max_duplicates


def markers(root: Path) -> list[str]:
    return [d for d in DIRS if (root / d / PROCESSED_NAME).exists()]


def test_clean_run_delivers_every_flow_and_marks(broker, queue_name, tstat_root, tmp_path, capsys):
    root = tstat_root("full")
    want = expected_flows(capsys, root)
    assert len(want) == COMPLETE_OBJECTS
    assert run(config(tmp_path, broker, queue_name), root) == 0
    assert capsys.readouterr().err == ""  # silent when all is well
    messages = broker.fetch(queue_name)
    assert flows(messages) == want  # same objects, same order
    props = [p for p, _ in messages]
    assert {p.delivery_mode for p in props} == {2}
    assert {p.content_type for p in props} == {"application/json"}
    assert props[0].message_id == "s1:0:2026_11_24_19_18.out:log_tcp_complete:0"
    assert props[0].headers == {
        "tstat_directory": "2026_11_24_19_18.out",
        "tstat_log": "log_tcp_complete",
        "chunk": 0,
        "flows": 100,
        "format_version": 1,
    }
    assert len({p.message_id for p in props}) == len(props)
    assert markers(root) == DIRS[:3]  # the newest is left for later
    assert not list(root.glob(f"*/{STATE_NAME}"))
    # Nothing twice: a second run finds nothing to send.
    assert run(config(tmp_path, broker, queue_name), root) == 0
    assert broker.fetch(queue_name) == []


def test_broker_down_at_start(broker, queue_name, tstat_root, tmp_path, capsys):
    root = tstat_root("full")
    port = free_port()
    assert run(config(tmp_path, broker, queue_name, port=port), root) == 75
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1
    assert markers(root) == [] and not list(root.glob(f"*/{STATE_NAME}"))


def test_wrong_password(broker, queue_name, tstat_root, tmp_path, capsys):
    root = tstat_root("full")
    cfg = config(tmp_path, broker, queue_name, password="Wrong-Secret-91c")
    assert run(cfg, root) == 1
    err = capsys.readouterr().err
    assert f"{broker.host}:{broker.port}" in err and "Wrong-Secret-91c" not in err
    assert markers(root) == []


def test_unroutable_routing_key_is_a_failure_not_a_success(broker, tstat_root, tmp_path, capsys):
    root = tstat_root("full")
    cfg = config(
        tmp_path, broker, "", exchange="amq.direct", routing_key=f"nobody-{uuid.uuid4().hex[:8]}"
    )
    assert run(cfg, root) == 1
    assert "NO_ROUTE" in capsys.readouterr().err
    assert markers(root) == [] and not list(root.glob(f"*/{STATE_NAME}"))


def test_missing_queue_with_passive(broker, queue_name, tstat_root, tmp_path, capsys):
    root = tstat_root("full")
    cfg = config(tmp_path, broker, queue_name)
    with open(cfg, "a") as f:
        f.write("[rabbit_queue_options]\npassive = true\n")
    assert run(cfg, root) == 1
    assert "404" in capsys.readouterr().err
    assert markers(root) == []


def test_cut_mid_directory_then_clean_rerun(broker, queue_name, tstat_root, tmp_path, capsys):
    root = tstat_root("full")
    want = expected_flows(capsys, root)
    # Directory 1 is 6 messages, directory 2 the next 6: cut the connection inside the
    # 11th message, when the window of 4 has let at least the 7th be confirmed.
    with Proxy(cut_in_publish=11) as proxy:
        cfg = config(tmp_path, broker, queue_name, port=proxy.port, window=4)
        assert run(cfg, root) == 75
    err = capsys.readouterr().err
    assert "lost" in err or "closed" in err
    first = broker.fetch(queue_name)
    assert markers(root) == DIRS[:1]
    state = json.loads((root / DIRS[1] / STATE_NAME).read_text())
    confirmed = 6 + state["files"]["log_tcp_complete"]["messages"]
    # Everything confirmed is in the queue; the 11th, cut short, never got there.
    assert 7 <= confirmed <= len(first) <= 10
    assert run(config(tmp_path, broker, queue_name, window=4), root) == 0
    second = broker.fetch(queue_name)
    assert_all_arrived(flows(first) + flows(second), want, max_duplicates=4 * 100)
    assert markers(root) == DIRS[:3]
    # A resent message keeps its id: the consumer can drop it.
    ids = [p.message_id for p, _ in first + second]
    dup_ids = [i for i, n in Counter(ids).items() if n > 1]
    assert len(dup_ids) == len(first) - confirmed <= 3
    bodies = {}
    for p, body in first + second:
        assert bodies.setdefault(p.message_id, body) == body


def _wait_for(predicate, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_sigkill_mid_run_then_rerun_loses_nothing(broker, queue_name, tstat_root, tmp_path, capsys):
    root = tstat_root("full")
    want = expected_flows(capsys, root)
    # The proxy stops passing the broker's replies once the 8th message (the second of
    # directory 2) is published: the first directory is marked by then, and the run
    # cannot finish, so it is killed with messages in flight, never after it ended.
    with Proxy(hold_after_publish=8) as proxy:
        cfg = config(tmp_path, broker, queue_name, port=proxy.port, window=8)
        proc = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "bin/tstat_send"),
                "-c",
                str(cfg),
                "-T",
                "0",
                "-S",
                "s1",
                "-d",
                str(root),
            ],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stderr=subprocess.PIPE,
        )
        _wait_for(lambda: proxy.publishes >= 8, "the 8th message")
        time.sleep(0.5)  # let it fill its window
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        published = proxy.publishes
    first = broker.fetch(queue_name)
    assert markers(root)[:1] == DIRS[:1]
    for state in root.glob(f"*/{STATE_NAME}"):
        json.loads(state.read_text())  # whole, never half written
    assert not list(root.glob("*/.*.tmp"))
    assert run(config(tmp_path, broker, queue_name, window=8), root) == 0
    second = broker.fetch(queue_name)
    assert_all_arrived(flows(first) + flows(second), want, max_duplicates=8 * 100)
    assert markers(root) == DIRS[:3]
    # The messages in flight (published after directory 1, never confirmed to the
    # sender) were in the broker and are sent again: the duplicates an id lets a
    # consumer drop.
    assert len(first) == published
    resent = [p.message_id for p, _ in second if p.message_id in {q.message_id for q, _ in first}]
    assert 1 <= len(resent) <= published - 6


def test_full_disk_for_the_state_file(broker, queue_name, data_dir, tmp_path, capsys, small_disk):
    root = small_disk.path / "root"
    root.mkdir()
    for name in DIRS[:2]:
        subprocess.run(["cp", "-r", str(data_dir / "full" / name), str(root)], check=True)
    settle(root)
    want = expected_flows(capsys, root)
    small_disk.fill()
    cfg = config(tmp_path, broker, queue_name, window=1)
    assert run(cfg, root) == 1
    assert "no space left on device" in capsys.readouterr().err
    first = broker.fetch(queue_name)
    assert markers(root) == []
    small_disk.free()
    assert run(cfg, root) == 0
    second = broker.fetch(queue_name)
    # Resent: the message in flight, and the one confirmed whose progress could not
    # be written.
    assert_all_arrived(flows(first) + flows(second), want, max_duplicates=2 * 100)
    assert markers(root) == DIRS[:1]  # DIRS[1] is the newest here


def test_overlapping_run_sends_nothing_and_says_why_at_verbose(
    broker, queue_name, tstat_root, tmp_path, capsys
):
    root = tstat_root("full")
    broker.declare(queue_name, durable=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"f = open({str(root / LOCK_NAME)!r}, 'a')\n"
            "fcntl.flock(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = config(tmp_path, broker, queue_name)
        assert run(cfg, root) == 75
        assert capsys.readouterr().err == ""  # not worth a cron mail
        assert run(cfg, root, "-v") == 75
        assert "another tstat_send or tstat_cull is working on" in capsys.readouterr().err
        assert broker.fetch(queue_name) == [] and markers(root) == []
    finally:
        holder.kill()
        holder.wait()
    with open(root / LOCK_NAME) as f:  # released by the kernel when the holder died
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_check_config_connects_and_sends_nothing(broker, queue_name, tstat_root, tmp_path, capsys):
    root = tstat_root("full")
    before = snapshot(root)
    cfg = config(tmp_path, broker, queue_name)
    # The queue a run would declare is reported, not created.
    assert run(cfg, root, "--check-config") == 0
    assert f"queue {queue_name!r} does not exist yet" in capsys.readouterr().out
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="404"):
        broker.declare(queue_name, passive=True)
    broker.declare(queue_name, durable=True)
    assert run(cfg, root, "--check-config") == 0
    out = capsys.readouterr().out
    assert f"{broker.host}:{broker.port}" in out and queue_name in out
    assert broker.fetch(queue_name) == []
    assert snapshot(root) == before  # no .processed, no state file, no lock file
    bad = config(tmp_path, broker, queue_name, password="Nope-55")
    assert run(bad, root, "--check-config") == 1
    assert "Nope-55" not in capsys.readouterr().err


def test_usage_and_config_errors_exit_2_before_anything_is_touched(
    broker, queue_name, tstat_root, tmp_path, capsys
):
    root = tstat_root("full")
    before = snapshot(root)
    # A mistaken run would deliver to the real broker; a listener stands where the config
    # with a bad value points, and counts whoever connects.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        good = config(tmp_path, broker, queue_name)
        bad = config(tmp_path, broker, queue_name, port=listener.getsockname()[1], window=0)
        for cfg, *extra in [
            (good, "--pretty"),  # --pretty is for -N
            (good, "--no-such-option"),
            (good, "-T", "-1"),
            (good, "-S", "a\tb"),
            (bad,),
            (tmp_path / "missing.ini",),
        ]:
            assert run(cfg, root, *extra) == 2, extra
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    assert "[rabbit] window = '0': expected an integer" in capsys.readouterr().err
    assert snapshot(root) == before  # no lock file, no state file, no .processed
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="404"):
        broker.declare(queue_name, passive=True)  # nothing declared, let alone sent


def test_config_errors_are_one_line_exit_2(broker, tstat_root, tmp_path, capsys):
    root = tstat_root("full")
    cfg = tmp_path / "bad.ini"
    cfg.write_text("[rabbit]\nhost = 127.0.0.1\nport = 56x\nqueue = q\n")
    assert run(cfg, root) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{cfg}: [rabbit] port = '56x': expected an integer 1-65535")
    assert len(err.splitlines()) == 1
    assert run(tmp_path / "missing.ini", root) == 2
    assert "config file not found (use -c/--config)" in capsys.readouterr().err
    cfg.write_text("[rabbit]\nhost = 127.0.0.1\nqueue = q\npassword = ${TSTAT_TEST_UNSET_VAR}\n")
    assert run(cfg, root) == 2
    assert "environment variable TSTAT_TEST_UNSET_VAR is not set" in capsys.readouterr().err
    assert markers(root) == []
