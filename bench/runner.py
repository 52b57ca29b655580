"""Running the compared programs, one measured child process at a time.

What the benchmark runs and how it measures it: the commands of this project's tstat_send and of
the original 0.6.5 (installed in a throwaway venv), their rabbit configs, the local RabbitMQ
(queues reset before a run and drained after it), and `run_variant`, which runs one variant once
and records its wall time, user+sys CPU (os.wait4), peak RSS (GNU time) and whether everything
arrived. `run_all` runs the plan: interleaved repetitions, then the memory check.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

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
        messages = flows = persistent = 0
        bodies: list[bytes] = []
        try:
            waiting = ch.queue_declare(queue, passive=True).method.message_count
            ch.basic_qos(prefetch_count=500)
            if waiting:
                for method, props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=5):
                    if method is None:  # nothing more came within 5 s
                        break
                    messages += 1
                    flows += body.count(b'"flow_type"')
                    persistent += props.delivery_mode == 2
                    if keep_bodies:
                        bodies.append(body)
                    if messages >= waiting:
                        break
            ch.cancel()
        finally:
            conn.close()
        return {"messages": messages, "flows": flows, "persistent": persistent, "bodies": bodies}


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
    if not given:
        compile_tree(REPO / "tstat_transport")
    return cmd, shlex.join(cmd)


def product_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def compile_tree(package: Path) -> None:
    """Byte-compile a package before it is timed, as an installed one is.

    Without it every run would compile the sources again when PYTHONDONTWRITEBYTECODE
    is set (tens of ms per run, more for the RabbitMQ runs' extra modules).
    """
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)


def baseline_tree(work: Path, rev: str) -> tuple[Path | None, str]:
    """This project's package as it was at git revision `rev`, unpacked under `work`."""
    dest = work / f"baseline-{rev}"
    if not (dest / "tstat_transport" / "__main__.py").is_file():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev, "tstat_transport"],
            capture_output=True,
        )
        if archive.returncode != 0:
            why = archive.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            return None, f"git archive {rev}: {why[0]}"
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    compile_tree(dest / "tstat_transport")
    return dest, rev


def baseline_env(tree: Path) -> dict[str, str]:
    env = original_env()  # not this tree's package: the one unpacked in `tree`
    env["PYTHONPATH"] = str(tree)
    return env


def anonymize_config(path: Path, method: str) -> Path:
    """A config file for a -N run with [anonymize] `method` (and a key of its own)."""
    lines = ["[anonymize]", f"method = {method}"]
    if method == "pseudonymize":
        key = path.with_suffix(".key")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(bytes(range(32)).hex() + "\n")  # a fixed key, for the bench only
        lines.append(f"key_file = {key}")
    path.write_text("\n".join(lines) + "\n")
    return path


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


# --------------------------------------------------------------------------- variants


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
    bad_row: str | None = None  # "log_tcp_complete:LINE" its stderr should name, if any
    runs: list[Run] = field(default_factory=list)

    @property
    def good(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    def rate(self, best: bool = False) -> float | None:
        walls = [r.wall for r in self.good]
        if not walls:
            return None
        return self.rows / (min(walls) if best else statistics.median(walls))

    def cpu(self, best: bool = False) -> float | None:
        """User+sys CPU seconds per million rows, median (or least) over the good runs."""
        cpus = [r.cpu for r in self.good]
        if not cpus:
            return None
        return (min(cpus) if best else statistics.median(cpus)) / self.rows * 1e6


def run_variant(v: Variant, rep: str, broker: Broker | None, logs: Path, cwd: Path) -> Run:
    clean_markers(v.root)
    if v.queue:
        assert broker is not None, "a variant with a queue is planned only with a broker"
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
    if v.queue and broker is not None:  # (always one with a queue)
        got = broker.drain(v.queue)
        broker.delete(v.queue)
        want = 2 * v.rows  # -T 0: both directions of every row
        if got["flows"] != want:
            run.ok = False
            what = "LOST" if got["flows"] < want else "TOO MANY"
            checks.append(f"{what}: {got['flows']} of {want} flows arrived")
        checks.append(f"{got['messages']} msgs, {got['persistent']} persistent")
    done, total = marked(v.root)
    if v.key.startswith("product") and v.queue and done != total:
        checks.append(f".processed in {done}/{total} dirs")
    if v.key.startswith("product") and not v.queue and done:
        checks.append(f"wrote .processed with -N in {done} dirs")
    if v.bad_row:
        # A note, not a failure: the bad row must be named (file:line), however it is worded.
        err = (logs / f"{stem}.err").read_text(errors="replace")
        checks.append(
            f"bad row {v.bad_row} reported" if v.bad_row in err else f"{v.bad_row} NOT NAMED"
        )
    clean_markers(v.root)
    run.check = "; ".join(checks) or "ok"
    v.runs.append(run)
    log(
        f"{rep:>5} {v.label:<34} {run.wall:8.2f} s  {v.rows / run.wall:9.0f} rows/s  "
        f"{run.maxrss_kb / 1024:7.1f} MB  {run.check}"
    )
    return run


def run_all(
    variants: list[Variant],
    memory: list[Variant],
    reps: int,
    broker: Broker | None,
    logs: Path,
    cwd: Path,
    memory_serial: bool,
) -> None:
    """The interleaved repetitions (A B C, A B C, ...), then the memory-check runs."""
    try:
        for rep in range(1, reps + 1):
            for v in variants:
                run_variant(v, f"{rep}/{reps}", broker, logs, cwd)
        if memory_serial:
            for v in memory:
                run_variant(v, "memory", broker, logs, cwd)
        else:
            # Side by side: only their peak RSS is the result, and this halves the longest part.
            threads = [
                threading.Thread(target=run_variant, args=(v, "memory", broker, logs, cwd))
                for v in memory
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        if broker:
            for q in {v.queue for v in variants + memory if v.queue}:
                try:
                    broker.delete(q)
                except Exception:  # noqa: S110 - best effort: the queue is this run's own
                    pass
