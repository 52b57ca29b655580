"""Build a synthetic Tstat hierarchy for the benchmark from the real rows in tests/data/full.

Every generated row is a real `log_tcp_complete` or `log_udp_complete` row with its addresses,
ports and times replaced, so rows are distinct (as they are on a sensor) while every other column
keeps a value Tstat really wrote. The mix of TCP and UDP rows follows full/. Output is
deterministic for a given seed: directory i depends only on (seed, i), so the first k directories
of two hierarchies built with the same seed are identical whatever their total size.

    python bench/make_data.py --rows 500000 --dirs 12 --big-mb 1024 --out bench/work/data

writes OUT/main/<dirs>.out/, OUT/big/<one>.out/ (the memory check; --big-mb 0 skips it),
OUT/corrupt/<one>.out/ (the memory check's corrupt row: real rows and, among them, one real row
with --corrupt-mb MiB of NUL bytes before it, as a crash can leave; 0 skips it), plus
OUT/manifest.json. Every file's modification time is the end of its directory's 5 minutes, long
past, as on a sensor where Tstat has moved on. An existing manifest with the same parameters
means nothing is redone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The real Tstat output kept in the repository (the tests read it too), so the benchmark
# runs in a fresh clone; TSTAT_DATA points elsewhere, as it does for the tests.
DATA = Path(os.environ.get("TSTAT_DATA", HERE.parent / "tests" / "data"))
DEFAULT_SOURCE = DATA / "full"
DEFAULT_OUT = HERE / "work" / "data"
LOGS = ("log_tcp_complete", "log_udp_complete")
# Directory names follow Tstat's: local time of the rotation, one directory per 5 minutes here.
FIRST_DIR_TIME = 1795547929  # 2026-11-24 19:18:49 UTC, the first packet of the real capture
DIR_SECONDS = 300
CORRUPT_ROWS = 10_000  # good rows around the corrupt one: enough for a few messages
FORMAT_VERSION = 2  # bump when the generated content changes, so cached data is rebuilt


class Source:
    """The real rows of one log type, split into fields, with the header kept verbatim."""

    def __init__(self, name: str, header: str, rows: list[list[str]]):
        self.name = name
        self.header = header
        self.rows = rows
        names = [item.split(":")[0] for item in header[header.rfind("#") + 1 :].split()]
        self.col = {n: i for i, n in enumerate(names)}
        self.ncols = len(names)


def load_sources(source: Path) -> dict[str, Source]:
    """Real rows of full/: every directory's log_tcp_complete and log_udp_complete."""
    out = {}
    for log in LOGS:
        header = None
        rows: list[list[str]] = []
        for d in sorted(source.glob("*.out")):
            path = d / log
            if not path.is_file():
                continue
            with open(path, encoding="utf-8") as f:
                first = f.readline().rstrip("\n")
                if header is None:
                    header = first
                for line in f:
                    if line.startswith("#") or not line.endswith("\n"):
                        continue
                    rows.append(line.rstrip("\n").split(" "))
        if header is None or not rows:
            raise SystemExit(f"make_data: no {log} rows found under {source}")
        src = Source(log, header, rows)
        rows[:] = [r for r in rows if len(r) == src.ncols]
        out[log] = src
    return out


def dir_name(t: int) -> str:
    return time.strftime("%Y_%m_%d_%H_%M.out", time.gmtime(t))


def _ip(rng: random.Random, like: str, first_octet: int) -> str:
    bits = rng.getrandbits(24)
    if ":" in like:
        return f"fd{first_octet:02x}:{bits >> 12:x}:{rng.getrandbits(16):x}::{bits & 0xFFF:x}"
    return f"{first_octet}.{bits >> 16}.{(bits >> 8) & 0xFF}.{bits & 0xFF}"


def _row(src: Source, rng: random.Random, first_ms: float, time_pair: tuple[str, str]) -> str:
    """A random real row with new addresses and ports, its two time columns moved to first_ms.

    The second time column keeps its real distance from the first (TCP last - first, UDP
    s_first_abs - c_first_abs), so durations and everything else stay as Tstat wrote them.
    """
    r = list(rng.choice(src.rows))
    c = src.col
    t1, t2 = c[time_pair[0]], c[time_pair[1]]
    delta = float(r[t2]) - float(r[t1])
    r[c["c_ip"]] = _ip(rng, r[c["c_ip"]], 10)
    r[c["s_ip"]] = _ip(rng, r[c["s_ip"]], 172)
    r[c["c_port"]] = str(rng.randint(1024, 65535))
    r[c["s_port"]] = str(rng.randint(1, 65535))
    r[t1] = f"{first_ms:.6f}"
    r[t2] = f"{first_ms + delta:.6f}"
    return " ".join(r) + "\n"


def write_dir(
    path: Path,
    sources: dict[str, Source],
    rng: random.Random,
    start: int,
    rows: int | None = None,
    min_bytes: int | None = None,
    junk_bytes: int = 0,
) -> dict[str, int]:
    """Write one Tstat directory: `rows` data rows, or as many as make `min_bytes` of log.

    With `junk_bytes`, one more line, halfway through log_tcp_complete: that many NUL bytes
    followed by a real row. It is not counted in the rows (a reader must skip it as bad); its
    line number in log_tcp_complete is returned as `junk_line`.
    Returns rows and bytes written per log file.
    """
    tcp, udp = sources["log_tcp_complete"], sources["log_udp_complete"]
    tcp_share = len(tcp.rows) / (len(tcp.rows) + len(udp.rows))
    path.mkdir(parents=True)
    files = {log: open(path / log, "w", encoding="utf-8", newline="\n") for log in LOGS}
    counts = {log: 0 for log in LOGS}
    size = 0
    extra: dict[str, int] = {}
    try:
        for log, f in files.items():
            f.write(sources[log].header + "\n")
            size += len(sources[log].header) + 1
        step_ms = DIR_SECONDS * 1000 / (rows or 1_000_000)
        n = 0
        junk_at = (rows or 0) // 2 if junk_bytes else -1
        while (rows is not None and n < rows) or (min_bytes is not None and size < min_bytes):
            first_ms = start * 1000 + n * step_ms + rng.random()
            if n == junk_at:
                junk = "\0" * junk_bytes + _row(tcp, rng, first_ms, ("first", "last"))
                files["log_tcp_complete"].write(junk)
                size += len(junk)
                extra["junk_line"] = 2 + counts["log_tcp_complete"]  # after the header
            if rng.random() < tcp_share:
                log, line = "log_tcp_complete", _row(tcp, rng, first_ms, ("first", "last"))
            else:
                log, line = (
                    "log_udp_complete",
                    _row(udp, rng, first_ms, ("c_first_abs", "s_first_abs")),
                )
            files[log].write(line)
            counts[log] += 1
            size += len(line)
            n += 1
    finally:
        for f in files.values():
            f.close()
    # Old enough that no rule about a directory still being written can hold it back.
    done = start + DIR_SECONDS
    for p in [*(path / log for log in LOGS), path]:
        os.utime(p, (done, done))
    return {f"{log}_rows": counts[log] for log in LOGS} | {"bytes": size, "rows": n} | extra


def build(
    out: Path = DEFAULT_OUT,
    rows: int = 500_000,
    dirs: int = 12,
    big_mb: int = 1024,
    seed: int = 1,
    source: Path = DEFAULT_SOURCE,
    quiet: bool = False,
    corrupt_mb: int = 0,
) -> dict:
    """Build (or reuse) the hierarchy under `out`; return the manifest."""
    params = {
        "rows": rows,
        "dirs": dirs,
        "big_mb": big_mb,
        "corrupt_mb": corrupt_mb,
        "seed": seed,
        "source": str(source),
        "format": FORMAT_VERSION,
    }
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        try:
            cached = json.loads(manifest_path.read_text())
        except ValueError:
            cached = {}
        if cached.get("params") == params:
            return cached
    if out.exists():
        shutil.rmtree(out)
    t0 = time.monotonic()
    sources = load_sources(source)
    manifest: dict = {"params": params, "main": {}, "big": {}, "corrupt": {}}
    base, extra = divmod(rows, dirs)
    for i in range(dirs):
        start = FIRST_DIR_TIME + i * DIR_SECONDS
        name = dir_name(start)
        rng = random.Random(f"{seed}:main:{i}")
        n = base + (1 if i < extra else 0)
        manifest["main"][name] = write_dir(out / "main" / name, sources, rng, start, rows=n)
    if big_mb > 0:
        start = FIRST_DIR_TIME - 86_400
        name = dir_name(start)
        rng = random.Random(f"{seed}:big")
        manifest["big"][name] = write_dir(
            out / "big" / name, sources, rng, start, min_bytes=big_mb * 1024 * 1024
        )
    if corrupt_mb > 0:
        start = FIRST_DIR_TIME - 2 * 86_400
        name = dir_name(start)
        rng = random.Random(f"{seed}:corrupt")
        junk = corrupt_mb * 1024 * 1024
        manifest["corrupt"][name] = write_dir(
            out / "corrupt" / name, sources, rng, start, rows=CORRUPT_ROWS, junk_bytes=junk
        ) | {"bad_rows": 1, "junk_bytes": junk}
    manifest["seconds"] = round(time.monotonic() - t0, 1)
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    if not quiet:
        total = sum(d["rows"] for d in manifest["main"].values())
        big = sum(d["rows"] for d in manifest["big"].values())
        print(
            f"make_data: {total} rows in {dirs} dirs, big dir {big} rows, "
            f"{manifest['seconds']} s -> {out}",
            file=sys.stderr,
        )
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=500_000, help="data rows in the main hierarchy")
    p.add_argument("--dirs", type=int, default=12, help="directories in the main hierarchy")
    p.add_argument(
        "--big-mb",
        type=int,
        default=1024,
        help="MiB of log in the separate memory-check directory (0: none)",
    )
    p.add_argument(
        "--corrupt-mb",
        type=int,
        default=25,
        help="MiB of NUL bytes in the corrupt row of the corrupt directory (0: none)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="real Tstat root to copy")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    build(a.out, a.rows, a.dirs, a.big_mb, a.seed, a.source, corrupt_mb=a.corrupt_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
