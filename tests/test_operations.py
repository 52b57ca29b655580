"""Operating it: the metrics file, the progress line on a terminal, the plugin through the CLI."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tstat_transport.cli import send_main

REPO = Path(__file__).resolve().parents[1]


def read_metrics(path: Path) -> dict[str, tuple[dict, float]]:
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found[sample.name] = (sample.labels, sample.value)
    return found


def test_metrics_file_after_a_good_and_a_failed_run(tstat_root, tmp_path, capsys):
    root = tstat_root("full")
    metrics = tmp_path / "textfile" / "tstat_send.prom"
    metrics.parent.mkdir()
    before = time.time()
    code = send_main(["-N", "-T", "0", "-S", "s1", "-d", str(root), "--metrics-file", str(metrics)])
    capsys.readouterr()
    assert code == 0
    m = read_metrics(metrics)
    labels, _ = m["tstat_send_exit_status"]
    assert labels == {"root": str(root), "sensor": "s1"}
    assert m["tstat_send_exit_status"][1] == 0
    assert m["tstat_send_last_run_objects"][1] == 1630  # three complete directories
    assert m["tstat_send_last_run_messages"][1] == 19
    assert m["tstat_send_last_run_rows"][1] == 815
    assert m["tstat_send_last_run_bad_rows"][1] == 0
    assert before <= m["tstat_send_last_success_timestamp_seconds"][1] <= time.time()
    # -N delivers nothing to an archive: the three complete directories are still backlog,
    # the oldest named 2026_11_24_19_18 (Tstat names directories in local time).
    assert m["tstat_send_backlog_directories"][1] == 3
    oldest = time.mktime(time.strptime("2026_11_24_19_18", "%Y_%m_%d_%H_%M"))
    assert abs(m["tstat_send_backlog_oldest_age_seconds"][1] - (time.time() - oldest)) < 600
    last_success = m["tstat_send_last_success_timestamp_seconds"][1]

    (root / "2026_11_24_19_20.out/log_tcp_complete").write_text("not tstat\n")
    # --settle 0: the log was rewritten just now, which would otherwise make it wait.
    code = send_main(
        ["-N", "-T", "0", "--settle", "0", "-d", str(root), "--metrics-file", str(metrics)]
    )
    capsys.readouterr()
    assert code == 1
    m = read_metrics(metrics)
    assert m["tstat_send_exit_status"][1] == 1
    assert m["tstat_send_last_run_directories_failed"][1] == 1
    # The last success stays that of the earlier run.
    assert m["tstat_send_last_success_timestamp_seconds"][1] == last_success
    assert list(metrics.parent.iterdir()) == [metrics]  # no temporary files left


def test_progress_line_only_on_a_terminal(data_dir):
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tstat_transport",
            "-N",
            "-T",
            "0",
            "--include-newest",
            "-d",
            str(data_dir / "full"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=secondary,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 4096)
        except OSError:  # EIO once the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait() == 0
    os.close(primary)
    text = b"".join(chunks).decode()
    assert "2026_11_24_19_18.out (1/4) rows=" in text
    assert "rows/s" in text and "ETA" in text
    assert text.endswith("\r\n")  # the line is closed before the shell prompt comes back


def test_plugin_transport_through_the_cli(tmp_path, tstat_root):
    """The example plugin installed with pip, used by `tstat_send -t jsonl`: it marks
    directories like any archive transport."""
    site = tmp_path / "site"
    source = shutil.copytree(REPO / "tests/plugin_pkg", tmp_path / "source")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    root = tstat_root("full")
    out = tmp_path / "flows.jsonl"
    (tmp_path / "config.ini").write_text(f"[jsonl]\npath = {out}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tstat_transport",
            "-t",
            "jsonl",
            "-c",
            str(tmp_path / "config.ini"),
            "-T",
            "0",
            "-d",
            str(root),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    flows = [o for line in out.read_text().splitlines() for o in json.loads(line)]
    assert len(flows) == 1630
    assert [d.name for d in sorted(root.glob("*.out")) if (d / ".processed").exists()] == [
        "2026_11_24_19_18.out",
        "2026_11_24_19_20.out",
        "2026_11_24_19_22.out",
    ]


# -- the previous metrics file is read only if it is one tstat_send could have written --


def _failing_root(tstat_root) -> Path:
    """A root whose run exits 1 (one directory's log is not Tstat's): the last success
    time then comes from the previous metrics file."""
    root = tstat_root("full")
    log = root / "2026_11_24_19_20.out/log_tcp_complete"
    log.write_text("not tstat\n")
    os.utime(log, (time.time() - 86400,) * 2)  # settled, so the directory is due
    return root


def _previous(last_success: float) -> str:
    return (
        "# HELP tstat_send_last_success_timestamp_seconds When the last run that exited 0 ended.\n"
        f'tstat_send_last_success_timestamp_seconds{{root="/r",sensor="s"}} {last_success}\n'
    )


def test_previous_metrics_with_stray_bytes_still_give_the_last_success(
    tstat_root, tmp_path, capsys
):
    root = _failing_root(tstat_root)
    metrics = tmp_path / "m.prom"
    metrics.write_bytes(b"\xff\xfe not UTF-8\n" + _previous(1700000000.5).encode())
    code = send_main(["-N", "-T", "0", "-d", str(root), "--metrics-file", str(metrics)])
    assert code == 1
    assert capsys.readouterr().err.count("\n") == 1  # the failed log's line, nothing else
    assert read_metrics(metrics)["tstat_send_last_success_timestamp_seconds"][1] == 1700000000.5


def test_previous_metrics_larger_than_the_bound_are_not_read(tstat_root, tmp_path, capsys):
    bound = 1024 * 1024  # metrics.MAX_PREVIOUS_BYTES
    root = _failing_root(tstat_root)
    metrics = tmp_path / "m.prom"
    metrics.write_text("#" * bound + "\n" + _previous(1700000000.5))
    code = send_main(["-N", "-T", "0", "-d", str(root), "--metrics-file", str(metrics)])
    assert code == 1
    err = capsys.readouterr().err
    assert f"{metrics}: previous metrics not read: over {bound} bytes" in err
    m = read_metrics(metrics)  # written anew, without a last success it could trust
    assert m["tstat_send_exit_status"][1] == 1
    assert "tstat_send_last_success_timestamp_seconds" not in m


def _run_with_metrics_at(root: Path, metrics: Path) -> subprocess.CompletedProcess:
    # A subprocess with a timeout: what is tested is that it does not hang.
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tstat_transport",
            "-N",
            "-T",
            "0",
            "-d",
            str(root),
            "--metrics-file",
            str(metrics),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("through_a_symlink", [False, True])
def test_a_fifo_in_place_of_the_metrics_file_does_not_hang_the_run(
    tstat_root, tmp_path, through_a_symlink
):
    root = _failing_root(tstat_root)
    metrics = tmp_path / "m.prom"
    fifo = tmp_path / "fifo" if through_a_symlink else metrics
    os.mkfifo(fifo)
    if through_a_symlink:
        metrics.symlink_to(fifo)
    run = _run_with_metrics_at(root, metrics)
    assert run.returncode == 1, run.stderr
    err = run.stderr.splitlines()
    assert len(err) == 2, err  # the failed log's line, then the metrics file's
    if through_a_symlink:  # neither read nor written through
        assert f"metrics not written: cannot write {metrics}: it is a symbolic link" in err[1]
        assert metrics.is_symlink()
    else:  # replaced by the metrics file, as any earlier file would be
        assert err[1].endswith(f"{metrics}: previous metrics not read: not a regular file")
        assert read_metrics(metrics)["tstat_send_exit_status"][1] == 1
