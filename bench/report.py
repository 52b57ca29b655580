"""The report: RESULTS.md from the runs of one benchmark run.

The Runs table (one line per variant), the Ratios table with the issues' targets, the memory
check, the "Same objects?" lines, what was skipped and the machine's facts. Only figures from
the same run are put side by side.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from runner import GNU_TIME, REPO, Variant, dist_version


def machine_facts(broker_version: str, original_venv: Path | None) -> dict[str, str]:
    def cpuinfo(key: str) -> str:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    def meminfo() -> str:
        try:
            kb = int(Path("/proc/meminfo").read_text().split()[1])
            return f"{kb / 1024 / 1024:.1f} GiB"
        except (OSError, ValueError, IndexError):
            return "?"

    import sysconfig

    import pika

    try:
        import orjson

        orjson_version = orjson.__version__
    except ImportError:
        orjson_version = "not installed"
    config_args = sysconfig.get_config_var("CONFIG_ARGS") or ""
    git = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cores (nproc)": f"{len(os.sched_getaffinity(0))} of {os.cpu_count()}",
        "CPU": f"{cpuinfo('model name')} ({cpuinfo('cpu MHz')} MHz)",
        "memory": meminfo(),
        "kernel": platform.release(),
        "Python": f"{platform.python_version()} ({sys.executable}; "
        f"{'PGO' if '--enable-optimizations' in config_args else 'no PGO/LTO'})",
        "pika (product, floors)": pika.__version__,
        "orjson": orjson_version,
        "pika (original's venv)": dist_version(original_venv, "pika") if original_venv else "-",
        "RabbitMQ": broker_version,
        "peak RSS from": "GNU time %M" if GNU_TIME else "os.wait4 ru_maxrss (upper bound)",
        "tree": git or "?",
    }


def md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}".replace(",", " ")


def notes(v: Variant) -> list[str]:
    out = [v.note] if v.note else []
    rate = v.rate()
    if v.scale_to and rate:
        out.append(
            f"subset: all {fmt(v.scale_to)} rows would take ~{fmt(v.scale_to / rate)} s "
            "at this rate"
        )
    return out


def variant_rows(variants: list[Variant]) -> list[list[str]]:
    rows = []
    for v in variants:
        good = v.good
        walls = [r.wall for r in good]
        rss = max(r.maxrss_kb for r in v.runs) / 1024 if v.runs else None
        checks = sorted({r.check for r in v.runs})
        rows.append(
            [
                v.group,
                v.label,
                v.data,
                fmt(v.rows),
                f"{len(good)}/{len(v.runs)}",
                fmt(min(walls), 2) if walls else "n/a",
                fmt(statistics.median(walls), 2) if walls else "n/a",
                fmt(v.rate()),
                fmt(v.rate(best=True)),
                fmt(v.cpu(), 1),
                fmt(rss, 1),
                "; ".join(checks) + "".join(f" ({n})" for n in notes(v)),
            ]
        )
    return rows


# (label, numerator, denominator, metric, target): rows/s must reach at least the target,
# CPU s per million rows must stay at most the target; None: shown for context.
RATIOS: list[tuple[str, str, str, str, float | None]] = [
    ("product -N / original -N", "product-N", "original-N", "rows/s", 10.0),
    ("product -N / floor -N", "product-N", "floor-N", "rows/s", 1.2),
    ("product -N / product at baseline -N", "product-N", "baseline-N", "rows/s", 1.0),
    ("product -N / product at baseline -N, CPU", "product-N", "baseline-N", "CPU", 1.0),
    ("-N truncate / -N, CPU", "product-N-truncate", "product-N", "CPU", None),
    ("-N pseudonymize / -N, CPU", "product-N-pseudonymize", "product-N", "CPU", None),
    ("product e2e / product -N", "product-e2e", "product-N", "rows/s", 0.8),
    ("product e2e / product -N, CPU", "product-e2e", "product-N", "CPU", 1.15),
    ("product e2e / original e2e", "product-e2e", "original-e2e", "rows/s", 10.0),
    ("product e2e / publish floor", "product-e2e", "publish-floor", "rows/s", None),
    ("floor -N / original -N", "floor-N", "original-N", "rows/s", None),
]


def ratio_rows(by_key: dict[str, Variant]) -> list[list[str]]:
    rows = []
    for label, a, b, metric, target in RATIOS:
        va, vb = by_key.get(a), by_key.get(b)
        med = best = None
        if va and vb:
            value = Variant.cpu if metric == "CPU" else Variant.rate
            a_med, b_med = value(va), value(vb)
            a_best, b_best = value(va, best=True), value(vb, best=True)
            if a_med and b_med and a_best and b_best:
                med, best = a_med / b_med, a_best / b_best
        if target is None or med is None:
            meets = "-"
        else:
            meets = "yes" if (med <= target if metric == "CPU" else med >= target) else "NO"
        if target is None:
            goal = "(context)"
        else:
            goal = f"{'<=' if metric == 'CPU' else '>='} {target:g}"
        rows.append([label, metric, fmt(med, 2), fmt(best, 2), goal, meets])
    return rows


def memory_rows(memory: list[Variant], limit_mb: float) -> list[list[str]]:
    rows = []
    for v in memory:
        for r in v.runs:
            rss = r.maxrss_kb / 1024
            rows.append(
                [
                    v.label,
                    v.data,
                    fmt(v.rows),
                    fmt(r.wall, 1),
                    fmt(v.rows / r.wall),
                    fmt(rss, 1),
                    "yes" if r.ok and rss < limit_mb else "NO",
                    r.check,
                ]
            )
    return rows


def render(
    a: argparse.Namespace,
    argv: list[str] | None,
    variants: list[Variant],
    memory: list[Variant],
    same: list[str],
    skipped: list[str],
    facts: dict[str, str],
) -> str:
    by_key = {v.key: v for v in variants}
    cmd = shlex.join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    parts = [
        "# tstat_send benchmark results",
        "",
        f"`{cmd}`: {a.reps} interleaved repetitions, every row read at -T 0 (every flow kept). "
        "Wall-clock figures move by about 15 % on these machines: compare only the ratios, "
        "which come from this one run. How to read it: bench/README.md.",
        "",
        "## Runs",
        "",
        md_table(
            [
                "group",
                "variant",
                "data",
                "rows",
                "ok runs",
                "wall min s",
                "wall median s",
                "rows/s (median)",
                "rows/s (best)",
                "CPU s / M rows",
                "peak RSS MB",
                "check",
            ],
            variant_rows(variants),
        ),
        "",
        "## Ratios (the first variant's figure over the second's, same run)",
        "",
        "rows/s: from the median and from the best walls; CPU: user+sys CPU s per million rows, "
        "median and least.",
        "",
        md_table(["ratio", "figure", "median", "best", "target", "meets"], ratio_rows(by_key)),
        "",
        f"## Memory check (target: peak RSS < {a.rss_limit_mb:g} MB whatever the input)",
        "",
        "Once each on the big directory and on the directory with a corrupt row"
        + (
            ", one after the other."
            if a.big_serial
            else ", side by side (their rows/s is not "
            "comparable with the table above; --big-serial runs them one after the other)."
        ),
        "",
    ]
    if memory:
        parts.append(
            md_table(
                ["variant", "data", "rows", "wall s", "rows/s", "peak RSS MB", "meets", "check"],
                memory_rows(memory, a.rss_limit_mb),
            )
        )
    else:
        parts.append("Not run (see Skipped).")
    parts += ["", "## Same objects?", "", *same, ""]
    if skipped:
        parts += ["## Skipped", "", *(f"- {s}" for s in skipped), ""]
    if a.reps < 3:
        parts += [f"Only {a.reps} repetition(s): a smoke run, not a result.", ""]
    parts += ["## Machine", "", md_table(["fact", "value"], [[k, v] for k, v in facts.items()]), ""]
    return "\n".join(parts)
