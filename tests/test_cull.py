"""tstat_cull on copies of the real Tstat output in tests/data/full.

Markers get chosen ages with os.utime, far (>= 0.5 h) from every TTL boundary, so
no assertion depends on how long a test takes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import snapshot

from tstat_transport.cli import build_cull_parser as build_parser
from tstat_transport.cli import cull_main
from tstat_transport.cull import CullReport, remove_expired, scan
from tstat_transport.state import LOCK_NAME, PROCESSED_NAME, run_lock

REPO = Path(__file__).resolve().parents[1]
HOUR = 3600.0
D18, D20, D22, D24 = (f"2026_11_24_19_{m}.out" for m in ("18", "20", "22", "24"))
MARKER_BODY = json.dumps({"sent": 4, "version": "1.0.0"}) + "\n"


def mark(directory: Path, hours_ago: float) -> Path:
    """Write a .processed marker as tstat_send does, dated `hours_ago` hours back."""
    marker = directory / PROCESSED_NAME
    marker.write_text(MARKER_BODY)
    when = time.time() - hours_ago * HOUR
    os.utime(marker, (when, when))
    return marker


def size_of(directory: Path) -> int:
    """Bytes in a flat Tstat directory, counted independently of cull.tree_size."""
    return sum(p.lstat().st_size for p in directory.iterdir())


def entries(root: Path) -> list[str]:
    return sorted(os.listdir(root))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cull_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def root(tstat_root) -> Path:
    return tstat_root("full")


@pytest.fixture
def outside(tmp_path: Path, data_dir: Path) -> Path:
    """A Tstat directory outside the root, with an expired marker: bait for symlinks."""
    target = tmp_path / "outside" / "2026_11_24_19_30.out"
    shutil.copytree(data_dir / "full" / D18, target)
    for path in [target.parent, target, *target.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    mark(target, 100)
    return target


@pytest.fixture
def lock_holder():
    """Start another process that holds the run lock on a root, as tstat_send would."""
    procs = []

    def hold(root: Path) -> None:
        code = (
            "import sys; from pathlib import Path; from tstat_transport.state import run_lock\n"
            "with run_lock(Path(sys.argv[1])):\n"
            "    print('locked', flush=True); sys.stdin.read()\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(root)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout.readline() == "locked\n"

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait()
        proc.stdout.close()


@pytest.fixture
def undeletable(tmp_path: Path):
    """Make one file impossible to delete: immutable as root, a read-only directory otherwise."""

    def pin(path: Path) -> None:
        if os.geteuid() != 0:
            path.parent.chmod(0o555)
            return
        chattr = shutil.which("chattr")
        if chattr is None:
            pytest.skip("needs chattr (e2fsprogs) to make a file undeletable as root")
        done = subprocess.run([chattr, "+i", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i not supported on {tmp_path}: {done.stderr.strip()}")

    def release() -> None:
        for dirpath, dirnames, filenames in os.walk(tmp_path):
            for name in dirnames + filenames:
                path = Path(dirpath, name)
                if path.is_symlink():
                    continue
                if os.geteuid() == 0 and shutil.which("chattr"):
                    subprocess.run(["chattr", "-i", str(path)], capture_output=True)
                elif path.is_dir():
                    path.chmod(0o755)

    pin.release = release  # type: ignore[attr-defined]
    yield pin
    release()


# --- which directories go ---------------------------------------------------------------


def test_removes_only_directories_whose_marker_is_older_than_ttl(root, capsys):
    mark(root / D18, 50)
    mark(root / D20, 49)
    mark(root / D22, 47)  # processed, not yet expired
    # D24 has no marker: unsent data
    freed = size_of(root / D18) + size_of(root / D20)

    code, out, err = run(capsys, "-d", str(root), "--ttl", "48")

    assert code == 0
    assert entries(root) == [LOCK_NAME, D22, D24]
    assert out == f"removed 2 directories, {freed} bytes freed\n"
    assert err == ""


def test_default_ttl_is_48_hours(root, capsys):
    mark(root / D18, 48.5)
    mark(root / D20, 47.5)

    code, out, _ = run(capsys, "-d", str(root))

    assert code == 0
    assert entries(root) == [LOCK_NAME, D20, D22, D24]
    assert out.startswith("removed 1 directory, ")


def test_fractional_ttl(root, capsys):
    mark(root / D18, 1)
    mark(root / D20, 0.25)

    assert run(capsys, "-d", str(root), "-t", "0.5")[0] == 0

    assert entries(root) == [LOCK_NAME, D20, D22, D24]


def test_marker_dated_in_the_future_is_not_expired(root, capsys):
    mark(root / D18, -1)  # clock stepped back, or a copied tree
    mark(root / D20, 0.5)

    code, _, _ = run(capsys, "-d", str(root), "-t", "0")

    assert code == 0
    assert entries(root) == [LOCK_NAME, D18, D22, D24]


def test_never_a_directory_without_a_regular_marker(root, tmp_path, capsys):
    old = time.time() - 1000 * HOUR
    os.utime(root / D18, (old, old))  # an old directory alone is not a reason
    (root / D20 / PROCESSED_NAME).mkdir()
    os.utime(root / D20 / PROCESSED_NAME, (old, old))
    stale = mark(tmp_path, 1000)
    (root / D22 / PROCESSED_NAME).symlink_to(stale)
    mark(root / D24, 50)

    code, _, err = run(capsys, "-d", str(root))

    assert code == 0
    assert entries(root) == [LOCK_NAME, D18, D20, D22]
    assert f"{root / D20 / PROCESSED_NAME}: not a regular file; directory kept" in err
    assert f"{root / D22 / PROCESSED_NAME}: not a regular file; directory kept" in err
    assert stale.exists()


@pytest.mark.parametrize(
    "name",
    [
        "2026_11_24_19_18.out.old",
        "2026_11_24_1918.out",
        "2026_11_24_19_18",
        "2026_11_24_19_18.OUT",
        "x2026_11_24_19_18.out",
        "backup",
    ],
)
def test_never_a_name_tstat_would_not_write(root, name, capsys):
    (root / D18).rename(root / name)
    mark(root / name, 100)

    code, out, _ = run(capsys, "-d", str(root))

    assert code == 0
    assert entries(root) == sorted([LOCK_NAME, name, D20, D22, D24])
    assert out == ""


def test_a_file_named_like_a_tstat_directory_stays(root, capsys):
    (root / "2026_11_24_19_30.out").write_text("not a directory\n")
    old = time.time() - 100 * HOUR
    os.utime(root / "2026_11_24_19_30.out", (old, old))

    assert run(capsys, "-d", str(root))[0] == 0

    assert "2026_11_24_19_30.out" in entries(root)


def test_never_the_root_itself_even_named_and_marked_like_tstat(root, capsys):
    inner = root / D18
    mark(inner, 100)  # ROOT given as a Tstat directory by mistake
    before = snapshot(inner)

    code, out, err = run(capsys, "-d", str(inner))

    # Nothing Tstat-like under it: said in one line, exit 1, and no lock file left there.
    assert code == 1
    assert out == ""
    assert f"no Tstat directories (YYYY_MM_DD_HH_MM.out) under {inner}" in err
    assert len(err.strip().splitlines()) == 1
    assert snapshot(inner) == before


def test_root_marker_ignored_and_nested_instances_culled_as_tstat_send_walks(root, capsys):
    # ROOT/sensor2/*.out is a second Tstat instance: tstat_send delivers it, so cull
    # must remove it too, or that disk fills.
    mark(root, 100)
    nested = root / "sensor2"
    nested.mkdir()
    (root / D18).rename(nested / D18)
    (root / D24).rename(nested / D24)
    mark(nested / D18, 100)
    mark(root / D20, 100)

    assert run(capsys, "-d", str(root))[0] == 0

    assert entries(root) == sorted([PROCESSED_NAME, LOCK_NAME, "sensor2", D22])
    assert entries(nested) == [D24]


# --- symlinks: nothing outside ROOT is ever touched --------------------------------------


def test_symlinked_tstat_directory_is_not_culled_nor_its_target(root, outside, capsys):
    link = root / outside.name
    link.symlink_to(outside, target_is_directory=True)
    before = snapshot(outside.parent)

    code, out, err = run(capsys, "-d", str(root), "-v")

    assert code == 0
    assert link.is_symlink()
    assert snapshot(outside.parent) == before
    assert f"{link}: a symlink, not culled" in err
    assert out == "removed 0 directories, 0 bytes freed\n"


def test_symlinks_inside_a_culled_directory_are_removed_as_links(root, outside, capsys):
    (root / D18 / "data").symlink_to(outside, target_is_directory=True)
    (root / D18 / "log_elsewhere").symlink_to(outside / "log_tcp_complete")
    mark(root / D18, 50)
    before = snapshot(outside.parent)

    code, _, _ = run(capsys, "-d", str(root))

    assert code == 0
    assert entries(root) == [LOCK_NAME, D20, D22, D24]
    assert snapshot(outside.parent) == before


def test_root_given_through_a_symlink_is_followed(root, tmp_path, capsys):
    # The operator names the root; only what lies under it is held to the no-symlink rule.
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)
    mark(root / D18, 50)

    assert run(capsys, "-d", str(alias))[0] == 0

    assert entries(root) == [LOCK_NAME, D20, D22, D24]


# --- how ROOT is written -------------------------------------------------------------------


@pytest.mark.parametrize("form", ["absolute/", "full", "full/", "./full/", "../tmp/full"])
def test_root_as_relative_path_or_with_trailing_slash(root, form, monkeypatch, capsys):
    monkeypatch.chdir(root.parent)
    arg = {"absolute/": f"{root}/", "../tmp/full": f"../{root.parent.name}/full"}.get(form, form)
    mark(root / D18, 50)
    mark(root / D20, 10)

    code, out, _ = run(capsys, "-d", arg, "-D")

    assert code == 0
    assert out.splitlines()[0].startswith(f"would remove {root / D18} (marker 50.0 h old, ")

    assert run(capsys, "-d", arg)[0] == 0

    assert entries(root) == [LOCK_NAME, D20, D22, D24]


# --- dry run --------------------------------------------------------------------------------


def test_dry_run_lists_path_age_size_and_deletes_nothing(root, capsys):
    mark(root / D18, 50)
    mark(root / D20, 49)
    mark(root / D22, 47)
    before = snapshot(root)
    size18, size20 = size_of(root / D18), size_of(root / D20)

    code, out, err = run(capsys, "-d", str(root), "--dry-run")

    assert code == 0
    assert out.splitlines() == [
        f"would remove {root / D18} (marker 50.0 h old, {size18} bytes)",
        f"would remove {root / D20} (marker 49.0 h old, {size20} bytes)",
        f"dry run: would remove 2 directories, {size18 + size20} bytes; nothing deleted",
    ]
    assert err == ""
    assert snapshot(root) == before  # not even a lock file


def test_dry_run_with_nothing_due_says_so(root, capsys):
    assert run(capsys, "-d", str(root), "-D") == (
        0,
        "dry run: would remove 0 directories, 0 bytes; nothing deleted\n",
        "",
    )


def test_dry_run_reads_without_the_lock(root, lock_holder, capsys):
    mark(root / D18, 50)
    lock_holder(root)

    code, out, _ = run(capsys, "-d", str(root), "-D")

    assert code == 0
    assert out.startswith(f"would remove {root / D18} ")
    assert (root / D18).is_dir()


# --- output and exit codes ------------------------------------------------------------------


def test_nothing_to_do_is_silent(root, capsys):
    mark(root / D18, 1)

    assert run(capsys, "-d", str(root)) == (0, "", "")


def test_verbose_logs_each_removal_and_always_summarises(root, capsys):
    mark(root / D18, 50)
    size18 = size_of(root / D18)

    code, out, err = run(capsys, "-d", str(root), "-v")

    assert code == 0
    assert out == f"removed 1 directory, {size18} bytes freed\n"
    assert f"removed {root / D18} (marker 50.0 h old, {size18} bytes)" in err

    assert run(capsys, "-d", str(root), "-v")[1] == "removed 0 directories, 0 bytes freed\n"


def test_quiet_drops_the_summary(root, capsys):
    mark(root / D18, 50)

    assert run(capsys, "-d", str(root), "-q") == (0, "", "")
    assert D18 not in entries(root)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: -d/--directory"),
        (["-d", "{missing}"], "-d {missing}: no such directory"),
        (["-d", "{file}"], "-d {file}: not a directory"),
        (["-d", "{root}", "--ttl", "soon"], "argument -t/--ttl: expected a number of hours >= 0"),
        (["-d", "{root}", "-t", "-1"], "argument -t/--ttl: expected a number of hours >= 0"),
        (["-d", "{root}", "-t", "nan"], "argument -t/--ttl: expected a number of hours >= 0"),
        (["-d", "{root}", "--keep-min", "x"], "argument --keep-min: expected a whole number"),
        (["-d", "{root}", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_usage_errors_are_one_line_exit_2(root, tmp_path, argv, message, capsys):
    mark(root / D18, 100)
    names = {"root": root, "missing": tmp_path / "nope", "file": root / D20 / "log_tcp_complete"}
    argv = [a.format(**names) for a in argv]

    code, out, err = run(capsys, *argv)

    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"tstat_cull: error: {message.format(**names)}")
    assert D18 in entries(root)


def test_lock_held_by_tstat_send_skips_with_75_and_deletes_nothing(root, lock_holder, capsys):
    mark(root / D18, 50)
    lock_holder(root)
    before = snapshot(root)

    code, out, err = run(capsys, "-d", str(root))

    assert code == 75
    assert out == ""
    assert err.count("\n") == 1
    assert f"another tstat_send or tstat_cull is working on {root}" in err
    assert "skipped, nothing removed" in err
    assert snapshot(root) == before


def test_a_directory_that_cannot_be_removed_is_reported_and_the_run_goes_on(
    root, undeletable, capsys
):
    mark(root / D18, 50)
    mark(root / D20, 50)
    stuck_size = (root / D18 / "log_tcp_complete").stat().st_size
    size18, size20 = size_of(root / D18), size_of(root / D20)
    undeletable(root / D18 / "log_tcp_complete")

    code, out, err = run(capsys, "-d", str(root))

    assert code == 1
    # Hidden, so tstat_send never takes what is left for unsent data.
    assert entries(root) == [".culling-" + D18, LOCK_NAME, D22, D24]
    assert entries(root / (".culling-" + D18)) == ["log_tcp_complete"]
    assert out == (
        f"removed 1 directory, {size18 - stuck_size + size20} bytes freed; "
        "1 could not be removed completely\n"
    )
    assert f"cannot remove {root / ('.culling-' + D18)} completely: " in err
    assert "the next run retries" in err

    undeletable.release()
    code, out, err = run(capsys, "-d", str(root))

    assert code == 0
    assert entries(root) == [LOCK_NAME, D22, D24]
    assert out == f"removed 1 directory, {stuck_size} bytes freed\n"


# --- leftovers and rechecks -----------------------------------------------------------------


def test_next_run_finishes_culling_leftovers_only_with_tstat_names(root, outside, capsys):
    (root / D18).rename(root / (".culling-" + D18))  # a run killed between rename and rmtree
    (root / ".culling-notes").mkdir()
    (root / (".culling-" + outside.name)).symlink_to(outside, target_is_directory=True)
    before = snapshot(outside.parent)
    size18 = size_of(root / (".culling-" + D18))

    code, _, _ = run(capsys, "-d", str(root), "-D")
    assert code == 0
    assert D18 not in entries(root)

    code, out, _ = run(capsys, "-d", str(root))

    assert code == 0
    assert entries(root) == [".culling-notes", LOCK_NAME, D20, D22, D24]
    assert snapshot(outside.parent) == before
    assert out == f"removed 2 directories, {size18 + len(str(outside))} bytes freed\n"


def test_dry_run_lists_leftovers(root, capsys):
    (root / D18).rename(root / (".culling-" + D18))
    size18 = size_of(root / (".culling-" + D18))

    out = run(capsys, "-d", str(root), "-D")[1]

    assert out.splitlines()[0] == (
        f"would finish removing {root / ('.culling-' + D18)} "
        f"(left by an earlier run, {size18} bytes)"
    )


def test_recheck_keeps_what_changed_after_the_decision(root, tmp_path, outside):
    ttl = 48 * HOUR
    for name in (D18, D20, D22, D24):
        mark(root / name, 50)
    now = time.time()
    leftovers, expired = scan(root, ttl, now)
    assert leftovers == []
    assert [c.path.name for c in expired] == [D18, D20, D22, D24]

    # After the decision: a sender without the lock re-marks D18, the operator
    # unmarks D20 to have it resent, D22's marker becomes a symlink, and D24 is
    # swapped for a symlink to a directory outside the root.
    (root / D18 / PROCESSED_NAME).write_text(MARKER_BODY)
    (root / D20 / PROCESSED_NAME).unlink()
    (root / D22 / PROCESSED_NAME).unlink()
    (root / D22 / PROCESSED_NAME).symlink_to(mark(tmp_path, 100))
    (root / D24).rename(tmp_path / D24)
    (root / D24).symlink_to(outside, target_is_directory=True)
    before = snapshot(outside.parent)

    report = CullReport(dry_run=False)
    with run_lock(root):
        for candidate in expired:
            remove_expired(root, candidate, ttl, now, report)

    assert report.removed == 0
    assert report.failed == []
    assert report.kept_on_recheck == [root / n for n in (D18, D20, D22, D24)]
    assert entries(root) == [LOCK_NAME, D18, D20, D22, D24]
    assert (root / D24).is_symlink()
    assert snapshot(outside.parent) == before


def test_keep_min_keeps_the_newest_processed_directories(root, capsys):
    mark(root / D18, 60)
    mark(root / D20, 55)
    mark(root / D22, 50)
    mark(root / D24, 1)  # processed, not expired: still counts towards --keep-min

    assert run(capsys, "-d", str(root), "--keep-min", "3")[0] == 0
    assert entries(root) == [LOCK_NAME, D20, D22, D24]

    assert run(capsys, "-d", str(root), "--keep-min", "5")[0] == 0
    assert entries(root) == [LOCK_NAME, D20, D22, D24]

    assert run(capsys, "-d", str(root), "--keep-min", "0")[0] == 0
    assert entries(root) == [LOCK_NAME, D24]


# --- the installed command ------------------------------------------------------------------


def script_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_bin_tstat_cull_in_a_real_process(root):
    mark(root / D18, 50)
    mark(root / D22, 10)
    freed = size_of(root / D18)

    done = subprocess.run(
        [sys.executable, str(REPO / "bin" / "tstat_cull"), "-d", f"{root}/", "-t", "48"],
        capture_output=True,
        text=True,
        env=script_env(),
    )

    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"removed 1 directory, {freed} bytes freed\n",
        "",
    )
    assert entries(root) == [LOCK_NAME, D20, D22, D24]


# bin/tstat_cull, held still inside the deletion: an audit hook stops the process at the
# second file rmtree unlinks, says so by creating READY, and waits on a FIFO nobody opens
# for writing, until a signal comes. The code that runs is the real one throughout.
HELD_CULL = """
import os, runpy, sys
fifo, ready, script = sys.argv.pop(1), sys.argv.pop(1), sys.argv.pop(1)
unlinked = 0
def hold(event, args):
    global unlinked
    if event == "os.remove":
        unlinked += 1
        if unlinked == 2:
            open(ready, "w").close()
            open(fifo).close()
sys.addaudithook(hold)
sys.argv[0] = script
runpy.run_path(script, run_name="__main__")
"""


def test_sigterm_while_deleting_stops_with_one_line_and_the_next_run_finishes(root, tmp_path):
    mark(root / D18, 60)
    mark(root / D20, 50)
    files18, size20 = len(os.listdir(root / D18)), size_of(root / D20)
    fifo, ready = tmp_path / "hold", tmp_path / "ready"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HELD_CULL,
            str(fifo),
            str(ready),
            str(REPO / "bin/tstat_cull"),
            "-d",
            str(root),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=script_env(),
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "tstat_cull never reached the deletion"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == 143
    assert out == ""
    assert len(err.splitlines()) == 1 and err.rstrip().endswith(
        "tstat_transport ERROR: terminated (SIGTERM); the next run resumes where this one stopped"
    ), err
    # Stopped with D18 hidden and one of its files gone; D20 not touched yet.
    hidden = root / (".culling-" + D18)
    assert entries(root) == [".culling-" + D18, LOCK_NAME, D20, D22, D24]
    assert len(os.listdir(hidden)) == files18 - 1
    left = size_of(hidden)

    # The lock went with the process: the next run finishes D18 and removes D20.
    done = subprocess.run(
        [sys.executable, str(REPO / "bin/tstat_cull"), "-d", str(root)],
        capture_output=True,
        text=True,
        env=script_env(),
        timeout=30,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"removed 2 directories, {left + size20} bytes freed\n"
    assert entries(root) == [LOCK_NAME, D22, D24]


def test_bin_tstat_cull_usage_error_has_no_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "bin" / "tstat_cull"), "-d", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=script_env(),
    )

    assert done.returncode == 2
    assert done.stderr == f"tstat_cull: error: -d {tmp_path / 'nope'}: no such directory\n"


def test_every_option_is_documented():
    doc = (REPO / "doc" / "cull.md").read_text()
    options = [o for a in build_parser()._actions for o in a.option_strings]
    assert [o for o in options if f"`{o}" not in doc and o not in ("-h", "--help")] == []
