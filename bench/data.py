"""What the benchmark measures: the data, the programs found, and the plan of variants.

`discover` builds (or reuses) the synthetic Tstat hierarchy (make_data.py) under bench/work
from the real rows in tests/data, and finds which programs and broker this run can use; `plan`
turns that into the variants run interleaved and the memory-check runs (the big directory and
the corrupt row); `equivalence` checks, before any timing, that the compared programs produce
the same flow objects from full/ (the "Same objects?" lines of RESULTS.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import make_data
import verify
from runner import (
    HERE,
    REPO,
    Broker,
    Variant,
    anonymize_config,
    baseline_env,
    baseline_tree,
    clean_markers,
    log,
    original_env,
    product_command,
    product_env,
    rabbit_config,
    setup_original,
)


@dataclass
class Setup:
    """What this run found: the data, and which programs and broker it can use."""

    work: Path
    data: Path
    manifest: dict
    queue: str
    product: list[str] | None
    original: Path | None
    broker: Broker | None
    broker_version: str
    skipped: list[str]

    def rows(self, part: str, first: int | None = None) -> int:
        dirs = sorted(self.manifest[part].items())[:first]
        return sum(d["rows"] for _, d in dirs)


def discover(a: argparse.Namespace, work: Path) -> Setup:
    skipped: list[str] = []
    data = work / f"data-r{a.rows}-d{a.dirs}-b{a.big_mb}-c{a.corrupt_mb}-s{a.seed}"
    log(f"data: {data}")
    manifest = make_data.build(data, a.rows, a.dirs, a.big_mb, a.seed, corrupt_mb=a.corrupt_mb)
    broker, version = None, "not reached"
    if a.no_broker:
        skipped.append("RabbitMQ runs: --no-broker")
    else:
        try:
            broker = Broker("127.0.0.1", 5672, "guest", "guest", "/")
            version = broker.version()
        except Exception as exc:  # whatever the failure, it means: no broker runs
            skipped.append(f"RabbitMQ runs: no broker at 127.0.0.1:5672 ({exc!r})")
            broker = None
    product, why = (None, "--no-product") if a.no_product else product_command(a.product_cmd)
    if product is None:
        skipped.append(f"this project's tstat_send: {why}")
    if a.no_original:
        original, why = None, "--no-original"
    else:
        original, why = setup_original(work / "orig-venv", not a.no_setup_original)
    if original is None:
        skipped.append(f"original 0.6.5: {why}")
    return Setup(
        work,
        data,
        manifest,
        f"tstat_bench_{os.getpid()}",
        product,
        original,
        broker,
        version,
        skipped,
    )


def subset_root(main: Path, dest: Path, count: int) -> Path:
    """A root holding the first `count` directories of main (hard links: same bytes)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for d in sorted(p for p in main.iterdir() if p.is_dir())[:count]:
        (dest / d.name).mkdir()
        for f in d.iterdir():
            if f.is_file() and not f.name.startswith("."):
                os.link(f, dest / d.name / f.name)
    return dest


def build_messages(root: Path, rows: int, path: Path) -> str:
    """The publish floor's input: floor.py's messages for the main hierarchy, one per line."""
    meta = path.with_suffix(".meta.json")
    stamp = json.dumps(
        {
            "root": str(root),
            "rows": rows,
            "manifest": (root.parent / "manifest.json").stat().st_mtime,
        }
    )
    if path.exists() and meta.exists() and meta.read_text() == stamp:
        return "reused"
    log(f"writing the publish floor's messages to {path}")
    with open(path, "wb") as out:
        proc = subprocess.run(
            [sys.executable, str(HERE / "floor.py"), "-T", "0", "-d", str(root), "--summary"],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            check=True,
        )
    stats = dict(item.split("=") for item in proc.stderr.split())
    if int(stats["flows"]) != 2 * rows:
        raise SystemExit(f"floor.py wrote {stats['flows']} flows for {rows} rows")
    meta.write_text(stamp)
    return "built"


def plan(a: argparse.Namespace, s: Setup) -> tuple[list[Variant], list[Variant]]:
    """The interleaved variants, and the memory-check runs on the big directory."""
    main_root = s.data / "main"
    rows = s.rows("main")
    label = f"{rows} rows, {a.dirs} dirs"
    penv, oenv, env = product_env(), original_env(), dict(os.environ)
    product_n = [*(s.product or []), "-N", "-T", "0", "--include-newest", "-d"]

    def product_rabbit(queue: str, root: Path, ini: str) -> list[str]:
        rabbit_config(s.work / ini, queue, original=False)
        return [
            *(s.product or []),
            "-T",
            "0",
            "--include-newest",
            "-c",
            str(s.work / ini),
            "-d",
            str(root),
        ]

    floor_n = [sys.executable, str(HERE / "floor.py"), "-T", "0", "-d", str(main_root)]
    variants: list[Variant] = []
    if s.product:
        variants.append(
            Variant(
                "product-N",
                "product -N",
                "-N",
                [*product_n, str(main_root)],
                penv,
                main_root,
                rows,
                label,
            )
        )
    if s.product:
        variants += side_variants(a, s, product_n, main_root, label)
    variants.append(
        Variant("floor-N", "floor.py (stdlib json)", "-N", floor_n, env, main_root, rows, label)
    )
    if s.original:
        sub = subset_root(main_root, s.work / "orig-subset", a.original_dirs)
        sub_rows = s.rows("main", a.original_dirs)
        sub_label = f"{sub_rows} rows, first {a.original_dirs} of the {a.dirs} dirs"
        ini = str(rabbit_config(s.work / "original.ini", s.queue, original=True))
        original = [str(s.original), "-T", "0", "-d", str(sub), "-c", ini]
        variants.append(
            Variant(
                "original-N",
                "original 0.6.5 -N",
                "-N",
                [*original[:1], "-N", *original[1:]],
                oenv,
                sub,
                sub_rows,
                sub_label,
                scale_to=rows if a.original_dirs < a.dirs else None,
            )
        )
    if s.broker and s.product:
        variants.append(
            Variant(
                "product-e2e",
                "product -> RabbitMQ",
                "e2e",
                product_rabbit(s.queue, main_root, "product.ini"),
                penv,
                main_root,
                rows,
                label,
                queue=s.queue,
            )
        )
    if s.broker and s.original:
        variants.append(
            Variant(
                "original-e2e",
                "original 0.6.5 -> RabbitMQ",
                "e2e",
                original,
                oenv,
                sub,
                sub_rows,
                sub_label,
                queue=s.queue,
                note="non-persistent, each confirm awaited, as 0.6.5 does",
                scale_to=rows if a.original_dirs < a.dirs else None,
            )
        )
    if s.broker:
        messages = s.data / "messages.jsonl"
        build_messages(main_root, rows, messages)
        publish = [
            sys.executable,
            str(HERE / "publish_floor.py"),
            "--messages",
            str(messages),
            "--queue",
            s.queue,
            "--window",
            str(a.window),
        ]
        variants.append(
            Variant(
                "publish-floor",
                f"publish floor (window {a.window})",
                "e2e",
                publish,
                env,
                main_root,
                rows,
                label,
                queue=s.queue,
                stdout_log=True,
                note="pre-built messages",
            )
        )

    memory: list[Variant] = []
    # (part of the data, label suffix, data label, what the product should report as bad)
    inputs: list[tuple[str, str, str, str | None]] = []
    big_rows = s.rows("big")
    if big_rows:
        big_bytes = sum(d["bytes"] for d in s.manifest["big"].values())
        size = (
            f"{big_bytes / 2**30:.2f} GiB" if big_bytes >= 2**30 else f"{big_bytes / 2**20:.0f} MiB"
        )
        inputs.append(("big", "", f"{big_rows} rows, {size}, 1 dir", None))
    else:
        s.skipped.append("memory check: --big-mb 0")
    corrupt = list(s.manifest.get("corrupt", {}).values())
    if corrupt:
        junk_mb = corrupt[0]["junk_bytes"] / 2**20
        inputs.append(
            (
                "corrupt",
                " (corrupt row)",
                f"{corrupt[0]['rows']} rows + 1 row behind {junk_mb:g} MiB of NUL bytes, 1 dir",
                f"log_tcp_complete:{corrupt[0]['junk_line']}",
            )
        )
    else:
        s.skipped.append("memory check of a corrupt row: --corrupt-mb 0")
    if inputs and not s.product:
        s.skipped.append("memory check of the product: no product")
    for part, suffix, data_label, bad_row in inputs if s.product else []:
        # Each run gets its own root (hard links: the same bytes), so they may run side by side.
        part_n = s.data / part
        memory.append(
            Variant(
                f"product-N-{part}",
                "product -N" + suffix,
                "memory",
                [*product_n, str(part_n)],
                penv,
                part_n,
                s.rows(part),
                data_label,
                bad_row=bad_row,
            )
        )
        if s.broker:
            part_rabbit = subset_root(part_n, s.data / f"{part}-rabbit", 1)
            queue = f"{s.queue}_{part}"
            memory.append(
                Variant(
                    f"product-e2e-{part}",
                    "product -> RabbitMQ" + suffix,
                    "memory",
                    product_rabbit(queue, part_rabbit, f"product-{part}.ini"),
                    penv,
                    part_rabbit,
                    s.rows(part),
                    data_label,
                    queue=queue,
                    bad_row=bad_row,
                )
            )
    if big_rows and a.big_floor:
        # floor.py only reads: it can share the -N root.
        memory.append(
            Variant(
                "floor-N-big",
                "floor.py (reference)",
                "memory",
                [*floor_n[:-1], str(s.data / "big")],
                env,
                s.data / "big",
                big_rows,
                inputs[0][2],
            )
        )
    return variants, memory


# --------------------------------------------------------------------------- equivalence


def side_variants(
    a: argparse.Namespace, s: Setup, product_n: list[str], root: Path, label: str
) -> list[Variant]:
    """-N runs beside the product's own: its code at --baseline, and with addresses anonymised.

    The first tells whether this tree lost speed against an earlier one (the fields, checks
    and structure added since); the others what each [anonymize] method costs. The bench's
    addresses are all distinct, so no cache helps: the worst case.
    """
    rows = s.rows("main")
    out: list[Variant] = []
    tree, why = baseline_tree(s.work, a.baseline) if a.baseline else (None, "--baseline ''")
    if tree is None:
        s.skipped.append(f"this project at an earlier revision: {why}")
    else:
        cmd = [sys.executable, "-m", "tstat_transport", "-N", "-T", "0", "--include-newest"]
        out.append(
            Variant(
                "baseline-N",
                f"product at {a.baseline} -N",
                "-N",
                [*cmd, "-d", str(root)],
                baseline_env(tree),
                root,
                rows,
                label,
                note="the code before the fields, checks and structure of issues 10-15",
            )
        )
    methods = ["truncate"]
    if importlib.util.find_spec("cryptography") is None:
        s.skipped.append("-N with pseudonymized addresses: `cryptography` is not installed")
    else:
        methods.append("pseudonymize")
    for method in methods:
        ini = anonymize_config(s.work / f"anonymize-{method}.ini", method)
        out.append(
            Variant(
                f"product-N-{method}",
                f"product -N, [anonymize] {method}",
                "-N",
                [*product_n, str(root), "-c", str(ini)],
                product_env(),
                root,
                rows,
                label,
            )
        )
    return out


def equivalence(product: list[str] | None, broker: Broker | None, queue: str) -> list[str]:
    """Lines for RESULTS.md: do the compared programs produce the same objects?"""
    lines = []
    for name, r in verify.floor_vs_original().items():
        allowed = ", ".join(f"{k} x{n}" for k, n in r["allowed"].items()) or "none"
        state = "same objects" if r["equal"] else "DIFFERENT: " + "; ".join(r["unexpected"])
        lines.append(
            f"- floor.py vs 0.6.5's output for full/{name}: {state} "
            f"({r['count'][0]} objects; documented differences: {allowed})"
        )
    if product is None:
        return lines
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "full"
        shutil.copytree(verify.DATA / "full", root)
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        want = [
            f
            for text, _ in verify.floor.messages(str(root), 0, "testsensor")
            for f in json.loads(text)
        ]
        args = ["-T", "0", "--include-newest", "-S", "testsensor", "-d", str(root)]
        proc = subprocess.run(
            [*product, "-N", *args], capture_output=True, env=product_env(), cwd=str(REPO)
        )
        lines.append(
            "- product `-N` vs floor.py on full/: "
            + _same(want, proc.returncode, proc.stdout, proc.stderr)
        )
        if broker is not None:
            clean_markers(root)
            config = rabbit_config(Path(tmp) / "product.ini", queue, original=False)
            broker.reset(queue)
            proc = subprocess.run(
                [*product, *args, "-c", str(config)],
                capture_output=True,
                env=product_env(),
                cwd=str(REPO),
            )
            got = broker.drain(queue, keep_bodies=True)
            broker.delete(queue)
            lines.append(
                "- product into RabbitMQ vs floor.py on full/: "
                + _same(want, proc.returncode, b"\n".join(got["bodies"]), proc.stderr)
            )
    return lines


def _same(want: list[dict], returncode: int, out: bytes, err: bytes) -> str:
    if returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        return f"FAILED (exit {returncode}: {tail[0]})"
    try:
        messages = verify.parse_messages(out)
    except ValueError as exc:
        return f"DIFFERENT (output is not JSON messages: {exc})"
    got = verify.flatten(messages)
    r = verify.compare(want, got)
    if r["equal"]:
        return f"same objects in the same order ({len(got)} objects, {len(messages)} messages)"
    key = lambda f: json.dumps(f, sort_keys=True)  # noqa: E731
    if sorted(map(key, want)) == sorted(map(key, got)):
        return f"same objects, different order ({len(got)} objects)"
    return "DIFFERENT: " + "; ".join(r["unexpected"])
