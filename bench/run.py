"""The tstat_send benchmark: one command, one run, ratios from that run.

    python bench/run.py                 # default: ~500 000 rows in 12 dirs + a 1 GiB dir, 3 reps
    python bench/run.py --quick         # 60 000 rows in 6 dirs + a 128 MiB dir, 3 reps
    python bench/run.py --help          # every option

Builds (or reuses) a synthetic Tstat hierarchy (make_data.py), checks that the programs compared
produce the same flow objects (verify.py), then runs, interleaved, repetition after repetition:

  -N   this project's `tstat_send -N -T 0 --include-newest`, floor.py, the original 0.6.5 `-N`
  e2e  this project into the local RabbitMQ, the original into it, publish_floor.py (raw pika)

each as a child process: wall time, user+sys CPU (os.wait4) and peak RSS (GNU time). Every
broker run starts from an empty queue and is drained afterwards: its flows must all be there.
Then this project's -N and broker runs go once on the >= 1 GiB directory (the memory check).
Prints the tables and writes them with the machine facts to bench/RESULTS.md.
What is not available (no product yet, no broker) is skipped and said so in the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import make_data  # noqa: E402
import verify  # noqa: E402

ORIGINAL = "tstat_transport==0.6.5"
# 0.6.5 pins pika 0.10.0, which no longer imports on Python >= 3.7 (`async` is a keyword);
# 0.13.1 is the last release with the same API (BlockingConnection.basic_publish returns a bool).
ORIGINAL_DEPS = ("pika==0.13.1", "six")
# pika 0.13.1 still uses collections.Callable (gone in Python 3.10) once it connects: this
# one-line .pth alias in the throwaway venv is the only change; the original's code is untouched.
ORIGINAL_SHIM = (
    "zz_bench_py311_compat.pth",
    "import collections, collections.abc; collections.Callable = collections.abc.Callable\n",
)
MARKERS = (".processed", ".tstat_send.state")
QUICK = {"rows": 60_000, "dirs": 6, "big_mb": 128}
DEFAULT = {"rows": 500_000, "dirs": 12, "big_mb": 1024}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- measuring


@dataclass
class Run:
    """One measured child process."""

    wall: float
    cpu: float
    maxrss_kb: int
    returncode: int
    timed_out: bool
    ok: bool = True
    check: str = ""


# GNU time measures the peak RSS of the program alone. os.wait4's ru_maxrss cannot: Linux
# carries the RSS high-water mark across exec, so a child spawned from this process would
# report at least this harness's own RSS (~40 MB with pika loaded) whatever it used itself.
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def measure(
    cmd: list[str],
    env: dict[str, str],
    cwd: Path,
    stdout: Path | None,
    stderr: Path,
    timeout: float,
) -> Run:
    """Run cmd to completion: wall time, user+sys CPU (os.wait4, includes GNU time's
    negligible share) and peak RSS (GNU time's %M, else wait4's upper bound)."""
    timed_out = threading.Event()
    rss_file = stderr.with_suffix(".rss")
    full = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *cmd] if GNU_TIME else cmd
    with open(stdout or os.devnull, "wb") as out, open(stderr, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=str(cwd),
            start_new_session=True,
        )

        def kill() -> None:
            timed_out.set()
            os.killpg(proc.pid, signal.SIGKILL)  # the group this run started, nothing else

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    maxrss_kb = usage.ru_maxrss
    if GNU_TIME:
        try:
            maxrss_kb = int(rss_file.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            pass
    return Run(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        maxrss_kb=maxrss_kb,
        returncode=proc.returncode,
        timed_out=timed_out.is_set(),
    )


def clean_markers(root: Path) -> None:
    """Remove what a previous run left in the directories: markers and the state file."""
    for d in root.iterdir():
        if not d.is_dir():
            continue
        for f in d.iterdir():
            if f.name.startswith(MARKERS):
                f.unlink()


def marked(root: Path) -> tuple[int, int]:
    """(directories with a .processed marker, directories)."""
    dirs = [d for d in root.iterdir() if d.is_dir()]
    return sum((d / ".processed").exists() for d in dirs), len(dirs)


# --------------------------------------------------------------------------- broker


class Broker:
    """The local RabbitMQ, through pika 1.x; one short connection per operation, so no
    connection sits idle (missing heartbeats) while a measured run goes on."""

    def __init__(self, host: str, port: int, user: str, password: str, vhost: str):
        import pika

        self.pika = pika
        self.params = pika.ConnectionParameters(
            host=host,
            port=port,
            virtual_host=vhost,
            credentials=pika.PlainCredentials(user, password),
            connection_attempts=1,
            socket_timeout=5,
            blocked_connection_timeout=30,
        )

    def _channel(self):
        conn = self.pika.BlockingConnection(self.params)
        return conn, conn.channel()

    def version(self) -> str:
        conn, _ = self._channel()
        try:
            props = conn._impl.server_properties
            return f"{props.get('product', 'RabbitMQ')} {props.get('version', '?')}"
        finally:
            conn.close()

    def reset(self, queue: str) -> None:
        """An empty durable queue of that name (as the configs here declare it)."""
        conn, ch = self._channel()
        try:
            ch.queue_delete(queue)
            ch.queue_declare(queue, durable=True)
        finally:
            conn.close()

    def delete(self, queue: str) -> None:
        conn, ch = self._channel()
        try:
            ch.queue_delete(queue)
        finally:
            conn.close()

    def drain(self, queue: str, keep_bodies: bool = False) -> dict:
        """Consume everything in the queue: messages, flows, persistent messages (and bodies)."""
        conn, ch = self._channel()
        result = {"messages": 0, "flows": 0, "persistent": 0, "bodies": []}
        try:
            waiting = ch.queue_declare(queue, passive=True).method.message_count
            ch.basic_qos(prefetch_count=500)
            if waiting:
                for method, props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=5):
                    if method is None:  # nothing more came within 5 s
                        break
                    result["messages"] += 1
                    result["flows"] += body.count(b'"flow_type"')
                    result["persistent"] += props.delivery_mode == 2
                    if keep_bodies:
                        result["bodies"].append(body)
                    if result["messages"] >= waiting:
                        break
            ch.cancel()
        finally:
            conn.close()
        return result


# --------------------------------------------------------------------------- programs


def product_command(given: str | None) -> tuple[list[str] | None, str]:
    """How to run this project's tstat_send from this tree, and why not if it cannot be."""
    if given:
        cmd = shlex.split(given)
    elif (REPO / "bin" / "tstat_send").is_file():
        cmd = [sys.executable, str(REPO / "bin" / "tstat_send")]
    elif (REPO / "tstat_transport" / "__main__.py").is_file():
        cmd = [sys.executable, "-m", "tstat_transport"]
    else:
        return None, "not in this tree yet (no bin/tstat_send, no tstat_transport/__main__.py)"
    probe = subprocess.run(
        [*cmd, "--help"], capture_output=True, text=True, env=product_env(), cwd=str(REPO)
    )
    if probe.returncode != 0:
        tail = (probe.stderr or probe.stdout).strip().splitlines()[-1:] or ["?"]
        return None, f"`{shlex.join(cmd)} --help` exits {probe.returncode}: {tail[0]}"
    return cmd, shlex.join(cmd)


def product_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def original_env() -> dict[str, str]:
    # The original's package is also called tstat_transport: keep this tree off its path.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def setup_original(venv: Path, install: bool) -> tuple[Path | None, str]:
    """The original 0.6.5 in a throwaway venv: its tstat_send, or None and why."""
    exe = venv / "bin" / "tstat_send"
    if not exe.exists():
        if not install:
            return None, f"not set up in {venv} (run without --no-setup-original)"
        log(
            f"setting up the original {ORIGINAL} in {venv} (pip will say that it pins pika "
            "0.10.0 and configparser 3.5.0b2: expected; on Python 3 it uses the stdlib's)"
        )
        shutil.rmtree(venv, ignore_errors=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pip = [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
            ]
            subprocess.run([*pip, "--no-deps", ORIGINAL], check=True, env=original_env())
            subprocess.run([*pip, *ORIGINAL_DEPS], check=True, env=original_env())
        except subprocess.CalledProcessError as exc:
            return None, f"could not install it: {exc}"
    site = next(venv.glob("lib/python*/site-packages"))
    (site / ORIGINAL_SHIM[0]).write_text(ORIGINAL_SHIM[1])
    probe = subprocess.run([str(exe), "--help"], capture_output=True, text=True, env=original_env())
    if probe.returncode != 0:
        return None, f"its tstat_send --help exits {probe.returncode}"
    return exe, f"{ORIGINAL} with {', '.join(ORIGINAL_DEPS)} in {venv}"


def dist_version(venv: Path, name: str) -> str:
    found = sorted(venv.glob(f"lib/python*/site-packages/{name}-*.dist-info"))
    return found[-1].name[len(name) + 1 : -len(".dist-info")] if found else "?"


def rabbit_config(path: Path, queue: str, original: bool) -> Path:
    lines = [
        "[rabbit]",
        "host = 127.0.0.1",
        "port = 5672",
        "username = guest",
        "password = guest",
        "vhost = /",
        f"queue = {queue}",
        f"routing_key = {queue}",
        "exchange =",
    ]
    if original:
        lines.insert(5, "use_ssl = false")  # 0.6.5 requires it
    lines += ["", "[rabbit_queue_options]", "durable = true", ""]
    path.write_text("\n".join(lines))
    return path


# --------------------------------------------------------------------------- the plan


@dataclass
class Variant:
    key: str
    label: str
    group: str  # "-N", "e2e", "memory"
    cmd: list[str]
    env: dict[str, str]
    root: Path
    rows: int
    data: str
    queue: str | None = None  # broker runs: drained and counted afterwards
    stdout_log: bool = False  # keep stdout in the log dir instead of /dev/null
    note: str = ""
    scale_to: int | None = None  # run on a subset: the rows of the whole hierarchy
    runs: list[Run] = field(default_factory=list)

    @property
    def good(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    def rate(self, best: bool = False) -> float | None:
        walls = [r.wall for r in self.good]
        if not walls:
            return None
        return self.rows / (min(walls) if best else statistics.median(walls))


def run_variant(v: Variant, rep: str, broker: Broker | None, logs: Path, cwd: Path) -> Run:
    clean_markers(v.root)
    if v.queue:
        broker.reset(v.queue)
    stem = f"{v.key}-{rep.replace('/', 'of')}"
    timeout = 300 + v.rows / 100  # far beyond the slowest (the original, ~1 000 rows/s here)
    run = measure(
        v.cmd,
        v.env,
        cwd,
        logs / f"{stem}.out" if v.stdout_log else None,
        logs / f"{stem}.err",
        timeout,
    )
    checks = []
    if run.returncode != 0:
        run.ok = False
        checks.append("TIMED OUT" if run.timed_out else f"exit {run.returncode}")
    if v.queue:
        got = broker.drain(v.queue)
        broker.delete(v.queue)
        want = 2 * v.rows  # -T 0: both directions of every row
        if got["flows"] != want:
            run.ok = False
            checks.append(f"LOST: {got['flows']} of {want} flows arrived")
        checks.append(f"{got['messages']} msgs, {got['persistent']} persistent")
    done, total = marked(v.root)
    if v.key.startswith("product") and v.queue and done != total:
        checks.append(f".processed in {done}/{total} dirs")
    if v.key.startswith("product") and not v.queue and done:
        checks.append(f"wrote .processed with -N in {done} dirs")
    clean_markers(v.root)
    run.check = "; ".join(checks) or "ok"
    v.runs.append(run)
    log(
        f"{rep:>5} {v.label:<28} {run.wall:8.2f} s  {v.rows / run.wall:9.0f} rows/s  "
        f"{run.maxrss_kb / 1024:7.1f} MB  {run.check}"
    )
    return run


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


# --------------------------------------------------------------------------- equivalence


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


# --------------------------------------------------------------------------- report


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
    if v.scale_to and v.rate():
        out.append(
            f"subset: all {fmt(v.scale_to)} rows would take ~{fmt(v.scale_to / v.rate())} s "
            "at this rate"
        )
    return out


def variant_rows(variants: list[Variant]) -> list[list[str]]:
    rows = []
    for v in variants:
        good = v.good
        walls = [r.wall for r in good]
        cpu = statistics.median([r.cpu for r in good]) / v.rows * 1e6 if good else None
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
                fmt(cpu, 1),
                fmt(rss, 1),
                "; ".join(checks) + "".join(f" ({n})" for n in notes(v)),
            ]
        )
    return rows


def ratio_rows(by_key: dict[str, Variant]) -> list[list[str]]:
    spec = [
        ("product -N / original -N", "product-N", "original-N", 10.0),
        ("product -N / floor -N", "product-N", "floor-N", 1.2),
        ("product e2e / product -N", "product-e2e", "product-N", 0.8),
        ("product e2e / original e2e", "product-e2e", "original-e2e", 10.0),
        ("product e2e / publish floor", "product-e2e", "publish-floor", None),
        ("floor -N / original -N", "floor-N", "original-N", None),
    ]
    rows = []
    for label, a, b, target in spec:
        va, vb = by_key.get(a), by_key.get(b)
        med = best = None
        if va and vb and va.rate() and vb.rate():
            med = va.rate() / vb.rate()
            best = va.rate(best=True) / vb.rate(best=True)
        meets = "-" if target is None or med is None else ("yes" if med >= target else "NO")
        rows.append(
            [
                label,
                fmt(med, 2),
                fmt(best, 2),
                f">= {target:g}" if target is not None else "(context)",
                meets,
            ]
        )
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


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="tstat_send benchmark (see bench/README.md)")
    p.add_argument("--rows", type=int, help=f"rows in the main hierarchy ({DEFAULT['rows']})")
    p.add_argument("--dirs", type=int, help=f"directories in it ({DEFAULT['dirs']})")
    p.add_argument(
        "--big-mb",
        type=int,
        help=f"MiB of log in the memory-check directory ({DEFAULT['big_mb']}; 0: none)",
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
    data = work / f"data-r{a.rows}-d{a.dirs}-b{a.big_mb}-s{a.seed}"
    log(f"data: {data}")
    manifest = make_data.build(data, a.rows, a.dirs, a.big_mb, a.seed)
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
    big_rows = s.rows("big")
    big_n = s.data / "big"
    big_bytes = sum(d["bytes"] for d in s.manifest["big"].values())
    big_label = f"{big_rows} rows, {big_bytes / 2**30:.2f} GiB, 1 dir"
    if not big_rows:
        s.skipped.append("memory check: --big-mb 0")
    elif not s.product:
        s.skipped.append("memory check of the product: no product")
    else:
        # Each run gets its own root (hard links: the same bytes), so they may run side by side.
        memory.append(
            Variant(
                "product-N-big",
                "product -N",
                "memory",
                [*product_n, str(big_n)],
                penv,
                big_n,
                big_rows,
                big_label,
            )
        )
        if s.broker:
            big_rabbit = subset_root(big_n, s.data / "big-rabbit", 1)
            queue = f"{s.queue}_big"
            memory.append(
                Variant(
                    "product-e2e-big",
                    "product -> RabbitMQ",
                    "memory",
                    product_rabbit(queue, big_rabbit, "product-big.ini"),
                    penv,
                    big_rabbit,
                    big_rows,
                    big_label,
                    queue=queue,
                )
            )
    if big_rows and a.big_floor:
        # floor.py only reads: it can share the -N root.
        memory.append(
            Variant(
                "floor-N-big",
                "floor.py (reference)",
                "memory",
                [*floor_n[:-1], str(big_n)],
                env,
                big_n,
                big_rows,
                big_label,
            )
        )
    return variants, memory


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
    try:
        for rep in range(1, a.reps + 1):
            for v in variants:
                run_variant(v, f"{rep}/{a.reps}", s.broker, logs, work)
        if a.big_serial:
            for v in memory:
                run_variant(v, "big", s.broker, logs, work)
        else:
            # Side by side: only their peak RSS is the result, and this halves the longest part.
            threads = [
                threading.Thread(target=run_variant, args=(v, "big", s.broker, logs, work))
                for v in memory
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        if s.broker:
            for q in {v.queue for v in variants + memory if v.queue}:
                try:
                    s.broker.delete(q)
                except Exception:  # noqa: S110 - best effort: the queue is this run's own
                    pass
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
        "## Ratios (rows/s of the first over the second, same run)",
        "",
        md_table(["ratio", "median", "best", "target", "meets"], ratio_rows(by_key)),
        "",
        f"## Memory check (target: peak RSS < {a.rss_limit_mb:g} MB whatever the directory size)",
        "",
        "Once each on the big directory"
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


if __name__ == "__main__":
    sys.exit(main())
