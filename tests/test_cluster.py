"""A quorum queue's leader node lost in the middle of a real tstat_send run, on a 3-node
RabbitMQ cluster the tests start (tests/broker.py): the run fails over and nothing is lost."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from broker import Cluster, PrivateNode, Proxy
from test_rabbit_transport import processed, write_config

SEND = Path(__file__).resolve().parent.parent / "bin" / "tstat_send"


def send(cfg: Path, root: Path) -> list[str]:
    """tstat_send as cron runs it: a process of its own."""
    return [sys.executable, str(SEND), "-c", str(cfg), "-T", "0", "-S", "s1", "-d", str(root), "-v"]


def reference_messages(root: Path, capsys) -> list[list[dict]]:
    """What `-N` prints for the same data: one JSON array (one message) a line."""
    from tstat_transport.cli import send_main

    assert send_main(["-N", "-T", "0", "-S", "s1", "-d", str(root)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def canonical(message: list[dict]) -> str:
    return json.dumps(message, sort_keys=True)


# Starting the cluster (session fixture) counts against the first test that uses it.
@pytest.mark.timeout(240)
def test_leader_node_lost_mid_run_delivers_every_flow(
    cluster: Cluster, tstat_root, tmp_path, capsys
) -> None:
    root = tstat_root("full")
    reference = reference_messages(root, capsys)
    want = [o for message in reference for o in message]
    queue = f"tstat-test-{uuid.uuid4().hex[:12]}"
    first, *others = cluster.nodes
    # The run connects to the first node through a proxy that holds the broker's replies
    # once 8 messages are out: they are in flight, unconfirmed, when the leader goes.
    with Proxy(upstream=(first.host, first.port), hold_after_publish=8) as proxy:
        hosts = ", ".join(
            [f"127.0.0.1:{proxy.port}", *(f"{node.host}:{node.port}" for node in others)]
        )
        cfg = write_config(
            tmp_path,
            {"host": hosts, "queue": queue, "window": 4, "connect_retries": 3, "retry_delay": 1},
            {"x-queue-type": "quorum", "durable": "true"},
        )
        run = subprocess.Popen(
            send(cfg, root),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stopped: PrivateNode | None = None
        try:
            deadline = time.monotonic() + 30
            while proxy.publishes < 8 and run.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proxy.publishes >= 8, (proxy.publishes, run.poll())
            stopped = cluster.leader(queue)
            # RabbitMQ puts a new quorum queue's leader on the node that declared it:
            # the run's connection is lost with the leader.
            assert stopped is first
            stopped.stop()
            proxy.release_replies()
            _, err = run.communicate(timeout=50)
            code = run.returncode
            if code == 75:  # the next cron run finishes the job
                rerun = subprocess.run(send(cfg, root), capture_output=True, text=True, timeout=50)
                code, err = rerun.returncode, err + rerun.stderr
            assert code == 0, err
            assert "connecting again" in err  # the loss was seen, not missed
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
            if stopped is not None:  # the cluster whole again for whoever comes next
                stopped.start()
    # The three complete directories; the newest is still being written by Tstat.
    assert processed(root) == sorted(p.name for p in root.glob("*.out"))[:3]
    survivor = next(node for node in cluster.nodes if node is not stopped)
    arrived = survivor.drain(queue)
    got = [canonical(o) for _, body in arrived for o in json.loads(body)]
    expected = [canonical(o) for o in want]
    assert set(got) == set(expected) and len(expected) > 0
    bodies: dict[str, bytes] = {}
    for props, body in arrived:  # a message sent twice is the same message
        assert bodies.setdefault(props.message_id, body) == body
    # Every message of the reference once, under one id each, whatever went twice.
    assert sorted(canonical(json.loads(body)) for body in bodies.values()) == sorted(
        canonical(message) for message in reference
    )
