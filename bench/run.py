"""The tstat_send benchmark: one command, one run, ratios from that run.

    python bench/run.py                 # default: ~500 000 rows in 12 dirs + a 1 GiB dir, 3 reps
    python bench/run.py --quick         # 60 000 rows in 6 dirs + a 128 MiB dir, 3 reps

(either also with a directory holding one row behind 25 MiB of NUL bytes, for the memory check)
    python bench/run.py --help          # every option

Builds (or reuses) a synthetic Tstat hierarchy (make_data.py), checks that the programs compared
produce the same flow objects (verify.py), then runs, interleaved, repetition after repetition:

  -N   this project's `tstat_send -N -T 0 --include-newest`, floor.py, the original 0.6.5 `-N`
  e2e  this project into the local RabbitMQ, the original into it, publish_floor.py (raw pika)

each as a child process: wall time, user+sys CPU (os.wait4) and peak RSS (GNU time). Every
broker run starts from an empty queue and is drained afterwards: its flows must all be there.
Then this project's -N and broker runs go once on the >= 1 GiB directory and on the corrupt
row's (the memory check).
Prints the tables and writes them with the machine facts to bench/RESULTS.md.
What is not available (no product yet, no broker) is skipped and said so in the results.

The parts: data.py (the data, the programs found, the plan), runner.py (running and measuring
each program), report.py (RESULTS.md). This file is the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, Python puts bench/ on the path already; imported (the smoke test), it may not.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import discover, equivalence, plan  # noqa: E402
from report import machine_facts, render  # noqa: E402
from runner import HERE, log, run_all  # noqa: E402

QUICK = {"rows": 60_000, "dirs": 6, "big_mb": 128, "corrupt_mb": 25}
DEFAULT = {"rows": 500_000, "dirs": 12, "big_mb": 1024, "corrupt_mb": 25}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="tstat_send benchmark (see bench/README.md)")
    p.add_argument("--rows", type=int, help=f"rows in the main hierarchy ({DEFAULT['rows']})")
    p.add_argument("--dirs", type=int, help=f"directories in it ({DEFAULT['dirs']})")
    p.add_argument(
        "--big-mb",
        type=int,
        help=f"MiB of log in the memory-check directory ({DEFAULT['big_mb']}; 0: none)",
    )
    p.add_argument(
        "--corrupt-mb",
        type=int,
        help="MiB of NUL bytes before one row of the memory check's corrupt directory "
        f"({DEFAULT['corrupt_mb']}, what a crash can leave; 0: no such directory)",
    )
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (3)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller data: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()),
    )
    p.add_argument(
        "--original-dirs",
        type=int,
        default=1,
        help="directories of the main hierarchy the original runs on (1): it is "
        "~10x slower, its rows/s is measured on these",
    )
    p.add_argument(
        "--product-cmd",
        default=os.environ.get("TSTAT_BENCH_PRODUCT"),
        help="how to run this project's tstat_send (default: bin/tstat_send of "
        "this tree, else python -m tstat_transport; env TSTAT_BENCH_PRODUCT)",
    )
    p.add_argument("--no-product", action="store_true", help="skip this project's tstat_send")
    p.add_argument("--no-original", action="store_true", help="skip the original 0.6.5")
    p.add_argument(
        "--no-setup-original",
        action="store_true",
        help="use the original's venv only if it already exists",
    )
    p.add_argument("--no-broker", action="store_true", help="skip every RabbitMQ run")
    p.add_argument(
        "--window", type=int, default=256, help="publish floor: unconfirmed messages at most (256)"
    )
    p.add_argument(
        "--baseline",
        default="94d533a",
        help="git revision of this project whose -N runs beside today's (94d533a, before "
        "issues 10-15; '' skips it)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--work",
        type=Path,
        default=HERE / "work",
        help="data, logs and the original's venv (bench/work)",
    )
    p.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    p.add_argument("--rss-limit-mb", type=float, default=50.0)
    p.add_argument(
        "--big-floor",
        action="store_true",
        help="also run floor.py on the big directory (a reference for the memory check)",
    )
    p.add_argument(
        "--big-serial",
        action="store_true",
        help="run the memory-check runs one after the other, not side by side",
    )
    a = p.parse_args(argv)
    base = QUICK if a.quick else DEFAULT
    for k, v in base.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.reps < 1 or a.rows < a.dirs or a.dirs < 1:
        p.error("need --reps >= 1 and --rows >= --dirs >= 1")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    started = time.monotonic()
    load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    work = a.work.resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="run-", dir=work / "logs"))
    s = discover(a, work)
    log("checking that the programs produce the same objects")
    same = equivalence(s.product, s.broker, s.queue)
    variants, memory = plan(a, s)
    run_all(variants, memory, a.reps, s.broker, logs, work, a.big_serial)
    facts = machine_facts(s.broker_version, s.work / "orig-venv" if s.original else None)
    facts["load average (1 5 15 min) at start"] = load_at_start
    facts["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    facts["this run took"] = f"{(time.monotonic() - started) / 60:.1f} min"
    facts["logs"] = str(logs)
    report = render(a, argv, variants, memory, same, s.skipped, facts)
    a.results.write_text(report)
    print(report)
    log(f"written to {a.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
