"""Faults a real sensor meets, through the CLI on copies of the real Tstat output.

Which directories are complete (odd names, clocks, modification times), a root of
several Tstat instances, files whose rows do not fit their header, logs replaced after
partial progress, permissions, symlink loops, read-only directories and state files
that are not what tstat_send wrote. Delivery goes to the real broker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path

import pika
import pytest
from helpers import settle

from tstat_transport.cli import cull_main, send_main
from tstat_transport.state import LOCK_NAME, PROCESSED_NAME, STATE_NAME

REPO = Path(__file__).resolve().parents[1]
D18, D20, D22, D24 = (f"2026_11_24_19_{m}.out" for m in ("18", "20", "22", "24"))
OBJECTS = {D18: 506, D20: 490, D22: 634, D24: 368}  # flows of each directory of full/, -T 0


def config(tmp_path: Path, broker, queue: str, **queue_options: object) -> Path:
    path = tmp_path / f"config-{uuid.uuid4().hex[:6]}.ini"
    text = (
        f"[rabbit]\nhost = {broker.host}\nport = {broker.port}\nusername = {broker.username}\n"
        f"password = {broker.password}\nqueue = {queue}\nconnect_retries = 0\ntimeout = 10\n"
    )
    if queue_options:
        text += "[rabbit_queue_options]\n" + "".join(
            f"{k} = {v}\n" for k, v in queue_options.items()
        )
    path.write_text(text)
    path.chmod(0o644)
    return path


def send(capsys, cfg: Path, root: Path, *extra: str) -> tuple[int, str]:
    code = send_main(["-c", str(cfg), "-T", "0", "-S", "s1", "-d", str(root), *extra])
    return code, capsys.readouterr().err


def arrived(broker, queue: str) -> dict[str, list[dict]]:
    """The flows that reached the queue, by message id."""
    return {props.message_id: json.loads(body) for props, body in broker.fetch(queue)}


def per_directory(messages: dict[str, list[dict]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message_id, objs in messages.items():
        directory = message_id.split(":")[2]
        counts[directory] = counts.get(directory, 0) + len(objs)
    return counts


def marked(root: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(root)) for p in root.rglob(PROCESSED_NAME))


def metrics_of(path: Path) -> dict[str, float]:
    return {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in path.read_text().splitlines()
        if not line.startswith("#")
    }


# -- 10.1: only real dates count; the live directory is never marked ---------------------


def test_impossible_and_future_names_do_not_make_the_live_directory_complete(
    broker, queue_name, tstat_root, tmp_path, capsys
):
    root = tstat_root("full")
    # A directory with an impossible date, and one left by a clock that ran fast and
    # was stepped back: both sort after the one Tstat is writing (19_24).
    for stray in ("2026_13_45_99_99.out", "2099_01_01_00_00.out"):
        shutil.copytree(root / D18, root / stray)
    code, err = send(capsys, config(tmp_path, broker, queue_name), root)

    assert code == 0, err
    assert marked(root) == [D18, D20, D22]
    assert per_directory(arrived(broker, queue_name)) == {d: OBJECTS[d] for d in (D18, D20, D22)}
    # Each stray said once, naming why; nothing written into them.
    lines = sorted(err.strip().splitlines(), key=lambda line: "2099" in line)
    assert len(lines) == 2
    assert "2026_13_45_99_99.out: its name is not a valid date: not sent" in lines[0]
    assert "2099_01_01_00_00.out: its name lies" in lines[1]
    assert "days in the future (clock stepped back?)" in lines[1]
    assert not (root / "2099_01_01_00_00.out" / STATE_NAME).exists()


def test_a_directory_whose_logs_changed_within_the_settle_period_waits(
    broker, queue_name, tstat_root, tmp_path, capsys
):
    root = tstat_root("full")
    # Tstat still writes 19_22 although 19_24 exists (a clock step made the later name):
    # its log changed seconds ago.
    with open(root / D22 / "log_udp_complete", "a"):
        os.utime(root / D22 / "log_udp_complete")
    cfg = config(tmp_path, broker, queue_name)

    code, err = send(capsys, cfg, root, "-v")

    assert code == 0, err
    assert marked(root) == [D18, D20]
    assert (
        f"{D22}: its logs changed 0 s ago, Tstat may still be writing it (settle period "
        "300 s): left for a later run" in err
    )
    assert "dirs_waiting=2" in err
    assert per_directory(arrived(broker, queue_name)) == {D18: OBJECTS[D18], D20: OBJECTS[D20]}

    # Quiet for the settle period: it goes, whole.
    settle(root / D22, 301)
    code, err = send(capsys, cfg, root)
    assert code == 0, err
    assert marked(root) == [D18, D20, D22]
    assert per_directory(arrived(broker, queue_name)) == {D22: OBJECTS[D22]}


def test_logs_dated_far_in_the_future_leave_their_directory_alone(tstat_root, capsys):
    root = tstat_root("full")
    # The clock was a day ahead while Tstat wrote 19_20, then stepped back: its logs'
    # times say nothing about whether Tstat is done with it.
    settle(root / D20, -86400)

    code = send_main(["-N", "-T", "0", "-S", "s1", "-d", str(root)])

    out, err = capsys.readouterr()
    assert code == 0
    assert err.strip().splitlines() == [err.strip()]
    assert f"{root / D20}: its logs are dated 24.0 h in the future (clock stepped back?)" in err
    got = Counter(o["meta"]["sensor_id"] for line in out.splitlines() for o in json.loads(line))
    assert got == {"s1": OBJECTS[D18] + OBJECTS[D22]}


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_a_settle_period_that_is_not_a_number_of_seconds_is_a_usage_error(
    tstat_root, capsys, value
):
    code = send_main(["-N", "--settle", value, "-d", str(tstat_root("full"))])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "--settle" in err


# -- 13.1: a root of several Tstat instances; an empty root says so -----------------------


def test_each_instance_folder_has_its_own_newest_directory_and_progress(
    broker, queue_name, tstat_root, tmp_path, capsys, data_dir
):
    root = tmp_path / "sensor"
    root.mkdir()
    tstat_root("full").rename(root / "eth0")
    eth1 = root / "eth1"
    eth1.mkdir()
    for name in (D18, D20):  # eth1 rotated less far: its newest is 19_20
        shutil.copytree(data_dir / "full" / name, eth1 / name)
    for path in [eth1, *eth1.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    settle(eth1)
    # A symlink out of the root is never followed.
    outside = tstat_root("core")
    (root / "eth2").symlink_to(outside, target_is_directory=True)
    metrics = tmp_path / "tstat_send.prom"

    code, err = send(
        capsys, config(tmp_path, broker, queue_name), root, "--metrics-file", str(metrics)
    )

    assert code == 0, err
    assert marked(root) == [f"eth0/{D18}", f"eth0/{D20}", f"eth0/{D22}", f"eth1/{D18}"]
    assert marked(outside) == []
    got = arrived(broker, queue_name)
    # The folder is part of each message id: the same directory name in two instances
    # must not look like a resend to a consumer that drops repeated ids.
    assert per_directory(got) == {
        f"eth0/{D18}": 506,
        f"eth0/{D20}": 490,
        f"eth0/{D22}": 634,
        f"eth1/{D18}": 506,
    }
    assert f"s1:0:eth1/{D18}:log_tcp_complete:0" in got
    assert (root / LOCK_NAME).exists() and not (root / "eth0" / LOCK_NAME).exists()
    m = metrics_of(metrics)
    assert m["tstat_send_directories_seen"] == 6
    assert m["tstat_send_backlog_directories"] == 0


def test_a_root_without_tstat_directories_says_so_and_fails(tmp_path, capsys):
    root = tmp_path / "typo"
    (root / "eth0" / "notes").mkdir(parents=True)
    metrics = tmp_path / "tstat_send.prom"

    code = send_main(["-N", "-d", str(root), "--metrics-file", str(metrics)])

    err = capsys.readouterr().err
    assert code == 1
    assert (
        err.strip().splitlines() == [err.strip().splitlines()[0]]
        and f"no Tstat directories (YYYY_MM_DD_HH_MM.out) under {root}" in err
    )
    assert not (root / LOCK_NAME).exists()
    m = metrics_of(metrics)
    assert m["tstat_send_directories_seen"] == 0 and m["tstat_send_exit_status"] == 1


@pytest.mark.parametrize(
    ("command", "argv"), [(cull_main, ["-d", "/"]), (send_main, ["-N", "-d", "/"])]
)
def test_the_file_system_root_is_refused_before_any_lock(capsys, command, argv):
    existed = os.path.exists("/" + LOCK_NAME)
    code = command(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert "-d /: the file-system root is not a Tstat output root" in err
    assert os.path.exists("/" + LOCK_NAME) == existed


def test_a_folder_path_too_long_or_not_utf8_for_a_message_id_fails_only_its_directories(
    broker, queue_name, tstat_root, tmp_path, capsys, data_dir
):
    root = tmp_path / "sensor"
    root.mkdir()
    tstat_root("full").rename(root / "eth0")
    # s1:0:<folder>/2026_11_24_19_18.out:log_tcp_complete:<19 digits> is 256 bytes.
    long = root / ("l" * 193)
    odd = Path(os.fsdecode(bytes(root) + b"/eth\xff"))  # a name that is not UTF-8
    for folder in (long, odd):
        for name in (D18, D20):
            shutil.copytree(data_dir / "full" / name, folder / name)
        settle(folder)
    cfg = config(tmp_path, broker, queue_name)

    for _ in range(2):  # and the same on the next run: nothing half sent, nothing marked
        code, err = send(capsys, cfg, root)
        assert code == 1
        errors = err.strip().splitlines()
        assert len(errors) == 2, err
        assert errors[0].endswith(
            f"{root}/eth\\xff/{D18}: its path is not valid UTF-8, and it goes into every "
            "message id: not sent"
        )
        assert errors[1].endswith(
            f"{long / D18}: its message ids could take 256 bytes, over AMQP's limit of 255: "
            "shorten the names of its folders, or -S/-I: not sent"
        )
        assert marked(root) == [f"eth0/{D18}", f"eth0/{D20}", f"eth0/{D22}"]
    got = per_directory(arrived(broker, queue_name))
    assert got == {f"eth0/{d}": OBJECTS[d] for d in (D18, D20, D22)}
    # One byte shorter, and the folder's directory goes.
    long.rename(root / ("l" * 192))
    code, err = send(capsys, cfg, root)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert per_directory(arrived(broker, queue_name)) == {f"{'l' * 192}/{D18}": OBJECTS[D18]}


# -- 10.4: files that are mostly bad; logs replaced after partial progress ----------------


def test_a_header_with_one_column_more_than_its_rows_fails_the_directory(
    broker, queue_name, tstat_root, tmp_path, capsys
):
    root = tstat_root("full")
    log_file = root / D20 / "log_tcp_complete"
    header, rest = log_file.read_text().split("\n", 1)
    log_file.write_text(header + " extra_column:999\n" + rest)
    settle(root)

    code, err = send(capsys, config(tmp_path, broker, queue_name), root)

    assert code == 1
    assert marked(root) == [D18, D22]
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert len(errors) == 1
    assert f"{log_file}: 226 of its 226 rows are bad (more than half)" in errors[0]
    # The rest of that directory and the other directories still went out.
    got = per_directory(arrived(broker, queue_name))
    assert got[D18] == OBJECTS[D18] and got[D22] == OBJECTS[D22]
    # The next run says the same again: the directory is never marked by accident.
    assert send(capsys, config(tmp_path, broker, queue_name), root)[0] == 1
    assert marked(root) == [D18, D22]


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("how", ["renamed over", "rewritten in place"])
def test_a_log_replaced_after_partial_progress_is_sent_from_its_start(
    broker, queue_name, tstat_root, tmp_path, capsys, data_dir, how, compressed
):
    import gzip

    root = tstat_root("inprogress")  # 19_20 is the live directory: its log ends mid-row
    live = root / D20 / "log_tcp_complete"
    pack = gzip.compress if compressed else bytes
    if compressed:  # Tstat -Z: the same rows in log_tcp_complete.gz
        gz = live.with_name(live.name + ".gz")
        gz.write_bytes(pack(live.read_bytes()))
        live.unlink()
        live = gz
    cfg = config(tmp_path, broker, queue_name)
    code, err = send(capsys, cfg, root, "--include-newest")
    assert code == 0, err
    first = arrived(broker, queue_name)
    assert per_directory(first)[D20] == 222  # the 111 whole rows so far
    assert marked(root) == [D18]

    # The log is replaced by another, finished one (Tstat restarted, a copy by hand).
    other = pack((data_dir / "full" / D22 / "log_tcp_complete").read_bytes())
    if how == "renamed over":
        tmp = live.with_name("new")
        tmp.write_bytes(other)
        tmp.rename(live)
    else:
        with open(live, "r+b") as f:
            f.truncate(0)
            f.write(other)
    (root / D24).mkdir()  # Tstat moved on
    settle(root)

    code, err = send(capsys, cfg, root)

    assert code == 0, err
    why = {"renamed over": "the file was replaced (inode", "rewritten in place": "the rows before"}
    if compressed:  # offsets count uncompressed bytes: its first compressed bytes tell
        why["rewritten in place"] = "its first 4096 compressed bytes changed (rewritten in place)"
    (line,) = [line for line in err.splitlines() if f"{live}: {why[how]}" in line]
    assert line.endswith(" since the last run: sending it from the start")
    got = arrived(broker, queue_name)
    tcp = [
        o
        for mid, objs in sorted(got.items(), key=lambda kv: int(kv[0].rsplit(":", 1)[1]))
        if ":log_tcp_complete:" in mid
        for o in objs
    ]
    send_main(["-N", "-T", "0", "-S", "s1", "--include-newest", "-d", str(data_dir / "full")])
    reference = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    want = [o for msg in reference for o in msg][506 + 490 : 506 + 490 + 634]
    want_tcp = [o for o in want if o["meta"]["protocol"] == "tcp"]
    assert tcp == want_tcp
    # New chunks take new ids: the first run's ids now name other flows.
    assert not set(got) & set(first)
    assert marked(root) == [D18, D20]


# -- 10.5: a symlink loop, a directory that cannot be searched, a nested state file -------


def test_a_log_that_is_a_symlink_loop_fails_only_its_directory(
    broker, queue_name, tstat_root, tmp_path, capsys
):
    root = tstat_root("full")
    loop = root / D20 / "log_udp_complete"
    loop.unlink()
    loop.symlink_to(loop.name)
    settle(root)
    metrics = tmp_path / "m.prom"

    code, err = send(
        capsys, config(tmp_path, broker, queue_name), root, "-v", "--metrics-file", str(metrics)
    )

    assert code == 1
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert errors == [errors[0]] and f"{loop}: a symbolic link, not a regular file" in errors[0]
    assert marked(root) == [D18, D22]
    assert "summary: dirs_done=2 dirs_failed=1" in err
    assert metrics_of(metrics)["tstat_send_last_run_directories_failed"] == 1


def _python_for(uid: int) -> str:
    """A Python interpreter user `uid` may run (this one may sit in root's home)."""
    for candidate in (
        os.path.realpath(sys.executable),
        shutil.which("python3"),
        "/usr/bin/python3",
    ):
        try:
            if (
                candidate
                and subprocess.run(
                    [candidate, "-c", "pass"], user=uid, capture_output=True
                ).returncode
                == 0
            ):
                return candidate
        except PermissionError:
            continue
    pytest.fail(f"no Python interpreter that user {uid} may run")


def test_a_directory_the_user_cannot_search_fails_only_itself(broker, queue_name, data_dir):
    # Root may search anything, so the run goes as `nobody`, the way a service user
    # meets a directory left mode 000.
    top = Path(tempfile.mkdtemp(prefix="tstat-nobody-"))
    try:
        root = top / "root"
        shutil.copytree(data_dir / "full", root)
        settle(root)
        # The code too, wherever the checkout lives (a home directory nobody cannot enter).
        lib = top / "lib"
        shutil.copytree(REPO / "tstat_transport", lib / "tstat_transport")
        shutil.copytree(Path(pika.__file__).parent, lib / "pika")
        cfg = config(top, broker, queue_name)
        metrics = top / "m.prom"
        for path in [top, *top.rglob("*")]:
            os.chown(path, 65534, 65534)
            path.chmod(0o755 if path.is_dir() else 0o644)
        (root / D20).chmod(0)
        out = subprocess.run(
            [
                _python_for(65534),
                "-m",
                "tstat_transport",
                "-c",
                str(cfg),
                "-T",
                "0",
                "-S",
                "s1",
                "-d",
                str(root),
                "-v",
                "--metrics-file",
                str(metrics),
            ],
            capture_output=True,
            text=True,
            user=65534,
            group=65534,
            cwd=top,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(lib)},
        )
        assert out.returncode == 1, out.stderr
        assert "Traceback" not in out.stderr
        errors = [line for line in out.stderr.splitlines() if "ERROR" in line]
        assert len(errors) == 1
        assert f"{root / D20}: cannot read the directory: Permission denied" in errors[0]
        (root / D20).chmod(0o755)
        assert marked(root) == [D18, D22]
        assert "summary: dirs_done=2 dirs_failed=1" in out.stderr
        assert metrics_of(metrics)["tstat_send_last_run_directories_failed"] == 1
    finally:
        shutil.rmtree(top)


def test_a_deeply_nested_state_file_is_one_line_and_the_directory_goes_from_the_start(
    broker, queue_name, tstat_root, tmp_path, capsys
):
    root = tstat_root("full")
    (root / D20 / STATE_NAME).write_text("[" * 200_000)

    code, err = send(capsys, config(tmp_path, broker, queue_name), root)

    assert code == 0, err
    assert err.strip().splitlines() == [err.strip()]  # one line
    assert "ignoring unreadable state file (nested too deeply)" in err
    assert marked(root) == [D18, D20, D22]
    assert per_directory(arrived(broker, queue_name))[D20] == OBJECTS[D20]


# -- 10.6: a directory that cannot be written is not sent ---------------------------------


@pytest.fixture
def immutable():
    pinned: list[Path] = []

    def pin(path: Path) -> None:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        pinned.append(path)

    yield pin
    for path in pinned:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_directory_that_cannot_be_written_is_failed_without_sending(
    broker, queue_name, tstat_root, tmp_path, capsys, immutable
):
    root = tstat_root("full")
    immutable(root / D20)  # not even root may create the state file or marker there
    cfg = config(tmp_path, broker, queue_name)

    for _ in range(2):  # and again on the next run: never a resend
        code, err = send(capsys, cfg, root)
        assert code == 1
        errors = [line for line in err.splitlines() if "ERROR" in line]
        assert len(errors) == 1
        assert (
            f"{root / D20}: cannot write in the directory (Operation not permitted): "
            "not sent" in errors[0]
        )
        got = per_directory(arrived(broker, queue_name))
        assert D20 not in got
    assert marked(root) == [D18, D22]


# -- 10.8: smaller ------------------------------------------------------------------------


def test_a_negative_message_count_in_the_state_is_rejected(
    broker, queue_name, tstat_root, tmp_path, capsys
):
    root = tstat_root("full")
    state = {
        "version": 1,
        "options": {"threshold_bits": 0.0, "sensor": "s1", "instance": 0, "transport": "rabbit"},
        "files": {
            "log_tcp_complete": {
                "offset": 0,
                "line": 1,
                "skip": 0,
                "header_offset": 0,
                "messages": -7,
                "objects": 0,
            }
        },
    }
    (root / D20 / STATE_NAME).write_text(json.dumps(state))

    code, err = send(capsys, config(tmp_path, broker, queue_name), root)

    assert code == 0, err
    assert "unusable progress for log_tcp_complete, sending it from the start" in err
    numbers = [int(mid.rsplit(":", 1)[1]) for mid in arrived(broker, queue_name)]
    assert min(numbers) == 0


def test_a_run_stopped_by_a_nack_counts_its_directory_as_failed(
    broker, queue_name, tstat_root, tmp_path, capsys
):
    root = tstat_root("full")
    cfg = config(
        tmp_path, broker, queue_name, **{"x-max-length": 3, "x-overflow": "reject-publish"}
    )

    code, err = send(capsys, cfg, root, "-v")

    assert code == 1
    assert "nack" in err
    assert "summary: dirs_done=0 dirs_failed=1 " in err
    assert marked(root) == []


def test_a_state_error_is_said_once(broker, queue_name, data_dir, tmp_path, capsys, small_disk):
    root = small_disk.path / "root"
    root.mkdir()
    for name in (D18, D20):
        shutil.copytree(data_dir / "full" / name, root / name)
    settle(root)
    small_disk.fill()

    code, err = send(
        capsys,
        config(
            tmp_path,
            broker,
            queue_name,
        ),
        root,
    )

    assert code == 1
    assert err.count("no space left on device") == 1, err


def test_a_gz_cut_short_under_its_progress_fails_its_directory_and_says_how_to_start_over(
    broker, queue_name, tstat_root, tmp_path, capsys
):
    import gzip

    root = tstat_root("inprogress")  # 19_20 is the live directory: its log ends mid-row
    live = root / D20 / "log_tcp_complete"
    gz = live.with_name(live.name + ".gz")
    gz.write_bytes(gzip.compress(live.read_bytes()))
    live.unlink()
    cfg = config(tmp_path, broker, queue_name)
    code, err = send(capsys, cfg, root, "--include-newest")
    assert code == 0, err
    assert per_directory(arrived(broker, queue_name))[D20] == 222  # the 111 whole rows
    # The same file, cut short: its first bytes are the same, its rows end before the
    # position recorded as sent.
    with open(gz, "r+b") as f:
        f.truncate(5000)
    (root / D24).mkdir()  # Tstat moved on
    settle(root)

    code, err = send(capsys, cfg, root)

    assert code == 1
    (line,) = [line for line in err.splitlines() if "cannot resume" in line]
    assert f"{gz}: cannot resume: it ends before byte " in line
    assert line.endswith(
        "(delete the directory's .tstat_send.state to send it again from its start): file not sent"
    )
    assert marked(root) == [D18]
    assert arrived(broker, queue_name) == {}  # nothing of it went twice
    # Done as the line says, the next run sends what the cut file still holds.
    (root / D20 / STATE_NAME).unlink()
    code, err = send(capsys, cfg, root)
    assert "truncated gzip stream" in err and marked(root) == [D18]
    assert 0 < per_directory(arrived(broker, queue_name))[D20] < 222


def _strptime_time(name: str) -> float | None:
    """What name_time gave when it parsed with time.strptime (the reference)."""
    import time

    try:
        return time.mktime(time.strptime(name[:16], "%Y_%m_%d_%H_%M"))
    except (ValueError, OverflowError):
        return None


@pytest.mark.parametrize(
    "name,valid",
    [
        ("2016_02_17_12_53.out", True),
        ("2024_02_29_23_59.out", True),  # a leap year
        ("2000_02_29_00_00.out", True),  # divisible by 400: leap
        ("1900_02_29_00_00.out", False),  # by 100, not 400: not leap
        ("2023_02_29_00_00.out", False),
        ("2026_04_31_00_00.out", False),
        ("2026_13_01_00_00.out", False),
        ("2026_00_10_00_00.out", False),
        ("2026_01_00_00_00.out", False),
        ("2026_01_01_24_00.out", False),
        ("2026_01_01_00_60.out", False),
        ("0000_01_01_00_00.out", False),
        ("2026_1_01_00_00.out", False),  # not Tstat's shape
        ("2026_01_01_00_00.outx", False),
    ],
)
def test_directory_names_are_dated_as_strptime_dated_them(name: str, valid: bool) -> None:
    from tstat_transport.directories import is_tstat_name, name_time

    got = name_time(name)
    assert (got is not None) is valid
    assert got == (_strptime_time(name) if is_tstat_name(name) else None)


def test_every_day_and_time_of_four_years_is_dated_as_strptime_dated_it() -> None:
    from tstat_transport.directories import name_time

    names = [
        f"{y:04d}_{m:02d}_{d:02d}_{h:02d}_{mi:02d}.out"
        for y in (1999, 2000, 2024, 2100)
        for m in range(0, 14)
        for d in range(0, 33)
        for h, mi in ((0, 0), (23, 59), (24, 0), (12, 60))
    ]
    assert [name_time(n) for n in names] == [_strptime_time(n) for n in names]
