"""A quorum queue's leader node lost in the middle of a real tstat_send run, on a 3-node
RabbitMQ cluster the tests start (tests/broker.py): the run fails over and nothing is lost."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pika.exceptions
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


def declare_on(node: PrivateNode, queue: str) -> None:
    """Declare the quorum queue through `node`: RabbitMQ puts its leader there."""
    with node.connect() as conn:
        conn.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})


@pytest.mark.timeout(240)
def test_leader_node_lost_while_connected_to_a_follower_delivers_every_flow(
    cluster: Cluster, tstat_root, tmp_path, capsys
) -> None:
    # Twelve Tstat instances (ROOT/ethN), 228 messages: the run is still publishing when
    # the leader's node is down, half a second to a second after its stop began.
    full = tstat_root("full")
    root = tmp_path / "root"
    for i in range(12):
        shutil.copytree(full, root / f"eth{i}")  # mtimes kept: settled
    reference = reference_messages(root, capsys)
    queue = f"tstat-test-{uuid.uuid4().hex[:12]}"
    leader, follower, other = cluster.nodes
    declare_on(leader, queue)
    assert cluster.leader(queue) is leader
    # The run connects to a follower through a proxy that holds the broker's replies once
    # 8 messages are out, so that they are in flight when the leader's node begins to
    # stop; the replies flow again from then on, and the run publishes the rest while the
    # leader's node goes down (about half a second) and the queue elects another leader.
    with Proxy(upstream=(follower.host, follower.port), hold_after_publish=8) as proxy:
        hosts = ", ".join(
            [f"127.0.0.1:{proxy.port}", *(f"{node.host}:{node.port}" for node in (other, leader))]
        )
        cfg = write_config(
            tmp_path,
            {"host": hosts, "queue": queue, "window": 4, "connect_retries": 3, "retry_delay": 1},
            {"x-queue-type": "quorum", "durable": "true"},
        )
        run = subprocess.Popen(
            send(cfg, root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        stopping = threading.Thread(target=leader.stop)
        try:
            deadline = time.monotonic() + 30
            while proxy.publishes < 8 and run.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proxy.publishes >= 8, (proxy.publishes, run.poll())
            stopping.start()
            proxy.release_replies()
            times = [(time.time(), proxy.publishes)]  # the stop begun; the node down
            stopping.join()
            times.append((time.time(), proxy.publishes))
            with pytest.raises(pika.exceptions.AMQPConnectionError):
                leader.connect().close()  # it did stop
            _, err = run.communicate(timeout=100)
        finally:
            proxy.release_replies()
            if run.poll() is None:
                run.kill()
                run.wait()
            if stopping.ident is not None:  # the cluster whole again for whoever comes next
                stopping.join()
                leader.start()
    # Kept by pytest: how many nacks, if any, and where in the run the leader stopped.
    stamps = ", ".join(f"{t % 60:.3f}s ({n} published)" for t, n in times)
    (tmp_path / "run.log").write_text(f"leader stop begun, leader node down at {stamps}\n{err}")
    assert run.returncode == 0, err
    assert times[-1][1] < len(reference), times  # the leader went down mid-run
    # The node the run is connected to stayed up: the run went on without reconnecting,
    # publishing again any message refused while the queue had no leader.
    assert f"connected to rabbit 127.0.0.1:{proxy.port} " in err
    assert "connecting again" not in err
    if "nacked" in err:
        assert "nacked; publishing it again" in err
    # The three complete directories of each instance; the newest is still being written.
    newest = max(p.name for p in full.glob("*.out"))
    assert sorted(str(p.parent.relative_to(root)) for p in root.glob("*/*/.processed")) == sorted(
        str(p.relative_to(root)) for p in root.glob("*/*.out") if p.name != newest
    )
    arrived = follower.drain(queue)
    bodies: dict[str, bytes] = {}
    for props, body in arrived:  # a message sent twice is the same message
        assert bodies.setdefault(props.message_id, body) == body
    # Every message of the reference arrived, under one id each, whatever went twice.
    assert len(reference) == 12 * 19
    assert sorted(canonical(json.loads(body)) for body in bodies.values()) == sorted(
        canonical(message) for message in reference
    )
