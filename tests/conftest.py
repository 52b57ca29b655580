"""Shared fixtures: the real Tstat data in tests/data (see its README), copied per test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from broker import (  # noqa: F401 (fixtures)
    broker,
    broker_user,
    cluster,
    other_ca,
    private_node,
    queue_name,
    test_ca,
)
from helpers import settle, under_ci

# The data ships with the repository so that a fresh clone tests with nothing beside it;
# $TSTAT_DATA points the suite at another copy of the same layout.
DATA = Path(os.environ.get("TSTAT_DATA", Path(__file__).resolve().parent / "data"))


def copy_variant(variant: str, dest: Path) -> Path:
    """A writable copy of one variant's Tstat root (tests/data is read-only by contract)."""
    root = dest / variant
    shutil.copytree(DATA / variant, root)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    settle(root)
    return root


def _listing(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data, read-only by contract (tests run as root, so file modes would not
    enforce it anyway): the session fails if anything in it changed."""
    if not DATA.is_dir():
        pytest.fail(f"real Tstat data not found at {DATA} (set TSTAT_DATA)")
    # A fresh checkout dates the logs now, inside tstat_send's settle period; Tstat
    # finished with them long ago. Only the mtimes change, never the content.
    try:
        settle(DATA)
    except OSError:  # a read-only copy: runs without --include-newest may wait
        pass
    before = _listing(DATA)
    yield DATA
    after = _listing(DATA)
    assert after == before, f"a test modified the test data in {DATA}"


@pytest.fixture
def tstat_root(tmp_path: Path, data_dir: Path):
    """Factory: `tstat_root("full")` gives a fresh writable copy of that variant."""

    def make(variant: str = "full") -> Path:
        return copy_variant(variant, tmp_path)

    return make


class SmallDisk:
    """A 1 MB tmpfs: a real file system that really fills up (ENOSPC)."""

    def __init__(self, path: Path):
        self.path = path

    def fill(self) -> None:
        """Take every free byte, so that the next file written fails with ENOSPC."""
        with open(self.path / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass

    def free(self) -> None:
        (self.path / "filler").unlink()


@pytest.fixture
def small_disk(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a small tmpfs (needs root, as in CI)")
    try:
        yield SmallDisk(mnt)
    finally:
        subprocess.run(["umount", str(mnt)])


# -- no silent skips under CI ----------------------------------------------------------
# Locally a test may skip for want of a broker, root or a tool, saying how to get it.
# Under CI every such test must run: a skip there would stand in for a feature nobody
# checked, so it is reported as a failure with its reason.


def _fail_skip(report: pytest.TestReport | pytest.CollectReport, where: str) -> None:
    if report.skipped and under_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"{where} skipped under CI (CI={os.environ['CI']!r}): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    _fail_skip(outcome.get_result(), item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    _fail_skip(outcome.get_result(), collector.nodeid)
