"""The command-line tools: argument parsing, logging, and the one place errors
become exit codes. Everything else lives in the library modules."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import logging
import math
import os
import pwd
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, NoReturn, Sequence

from . import __version__, anonymize
from .config import DEFAULT_SETTLE_SECONDS, ConfigFile, Settings
from .directories import require_tstat_output, scan
from .errors import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TEMPFAIL,
    EXIT_TERMINATED,
    EXIT_USAGE,
    AlreadyRunning,
    ConfigError,
    OutputClosed,
    Terminated,
    TstatError,
)
from .logsetup import hide_secrets, setup_logging
from .progress import ProgressLine
from .sender import Sender, check_ids, default_sensor
from .state import run_lock
from .stats import RunStats
from .transports import BUILTIN, Transport, available, get_transport

# tstat_cull's library and the metrics writer are imported where they are used: a
# tstat_send run (or one without --metrics-file) does not carry their code.
if TYPE_CHECKING:
    from .cull import Candidate, CullReport

log = logging.getLogger("tstat_transport")

# Where a config is looked for when -c is not given: cron starts a job in the user's
# home, where ./config.ini is rarely what was meant.
SYSTEM_CONFIG = Path("/etc/tstat_transport/config.ini")

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}    everything due was delivered (skipped bad rows are counted, not failures)
  {EXIT_FAILED}    some directory could not be delivered (see the error lines)
  {EXIT_USAGE}    usage or configuration error; nothing was sent
  {EXIT_TEMPFAIL}   temporary: the receiver is unreachable, or another run holds the lock;
       the next run carries on where this one stopped
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C): what the receiver confirmed is kept, the next run
       carries on from there
  {EXIT_BROKEN_PIPE}  the reader of standard output went away (`tstat_send -N | head`)
  {EXIT_TERMINATED}  terminated (SIGTERM: systemctl stop, kill), as {EXIT_INTERRUPTED}
"""

CULL_EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}    everything planned was removed, or nothing was due
  {EXIT_FAILED}    something could not be removed (see the error lines)
  {EXIT_USAGE}    usage error; nothing was touched
  {EXIT_TEMPFAIL}   tstat_send or another cull holds the lock; nothing removed
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); the next run finishes what was left
  {EXIT_BROKEN_PIPE}  the reader of standard output went away (`tstat_cull -D | head`)
  {EXIT_TERMINATED}  terminated (SIGTERM), as {EXIT_INTERRUPTED}
"""


class _UsageError(Exception):
    """A command-line mistake, shown as one line by `_parse`."""


class _Parser(argparse.ArgumentParser):
    """The parser of both commands: a usage error is one line (cron mails it, no usage
    dump), no abbreviations (`--thres` could silently mean another option once one is
    added), and an unknown option is named before a missing required one."""

    def __init__(self, **kwargs) -> None:
        super().__init__(
            allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs
        )

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)

    def parse(self, argv: Sequence[str] | None) -> argparse.Namespace:
        """parse_args; raises _UsageError, or SystemExit for --help and --version."""
        argv = sys.argv[1:] if argv is None else list(argv)
        try:
            args, extras = self.parse_known_args(argv)
        except _UsageError:
            # argparse checks required options before it looks at unknown ones:
            # `tstat_send -V` would say "-d is required". Name the unknown one.
            required = [a for a in self._actions if a.required]
            for action in required:
                action.required = False
            try:
                _, extras = self.parse_known_args(argv)
            finally:
                for action in required:
                    action.required = True
            if extras:
                self._unknown(extras)
            raise
        if extras:
            self._unknown(extras)
        return args

    def _unknown(self, extras: list[str]) -> NoReturn:
        message = "unrecognized arguments: " + " ".join(extras)
        longs = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        for extra in extras:
            close = difflib.get_close_matches(extra.split("=", 1)[0], longs, n=1, cutoff=0.6)
            if extra.startswith("--") and close:
                message += f" (did you mean {close[0]}?)"
                break
        self.error(message)


def _usage_error(prog: str, message: str, hint: bool = True) -> int:
    see = f" (see {prog} --help)" if hint else ""
    print(f"{prog}: error: {message}{see}", file=sys.stderr)
    return EXIT_USAGE


def _parse(parser: _Parser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """The parsed options, or the exit code when there is nothing to run."""
    try:
        return parser.parse(argv)
    except _UsageError as exc:
        return _usage_error(parser.prog, str(exc))
    except SystemExit as exc:  # --help, --version: already printed
        return int(exc.code or 0)


def _root_problem(text: str) -> str | None:
    """Why `-d text` is not a Tstat root to work on, or None; the same words for both commands."""
    if os.path.isdir(text):
        return None
    return f"-d {text}: " + ("not a directory" if os.path.exists(text) else "no such directory")


def _warn_if_root_of_another_user(root: Path) -> None:
    """Running as root in a root that belongs to the service user leaves root-owned
    files (state, markers, metrics) that later runs as that user may not replace."""
    if os.geteuid() != 0:
        return
    try:
        owner = os.stat(root).st_uid
    except OSError:
        return
    if owner == 0:
        return
    try:
        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        name = str(owner)
    log.warning(
        "running as root in %s, which belongs to %s: files this run creates will belong "
        "to root; run as that user instead (sudo -u %s ...)",
        root,
        name,
        name,
    )


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises Terminated (a KeyboardInterrupt): the run stops as on Ctrl-C,
    keeping what the receiver confirmed, and says so in one line."""

    def handler(signum: int, frame: object) -> None:
        # A second SIGTERM must not break off the checkpoint the first one started.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an embedding program): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_writing_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's flush at exit
    does not print its own error (Python's documented recipe for SIGPIPE)."""
    if sys.stdout is not sys.__stdout__:  # in-process (tests): not ours to redirect
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):  # stdout may be None
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # type: ignore[union-attr]
        os.close(devnull)


def _interrupted(exc: KeyboardInterrupt) -> int:
    if isinstance(exc, Terminated):
        log.error("terminated (SIGTERM); the next run resumes where this one stopped")
        return exc.exit_code
    log.error("interrupted; the next run resumes where this one stopped")
    return EXIT_INTERRUPTED


def _run_command(
    parser: _Parser,
    argv: Sequence[str] | None,
    run: Callable[[argparse.Namespace], int],
    usage_problem: Callable[[argparse.Namespace], str | None] | None = None,
) -> int:
    """What both commands do around their work: parse argv, refuse a usage error or a
    missing root in one line, set up logging, and run with SIGTERM stopping as Ctrl-C does."""
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    problem = usage_problem(args) if usage_problem else None
    if problem:
        return _usage_error(parser.prog, problem)
    problem = _root_problem(args.directory)
    if problem:
        return _usage_error(parser.prog, problem, hint=False)
    # tstat_send has no -q and tstat_cull no -D.
    setup_logging(
        verbose=args.verbose,
        debug=getattr(args, "debug", False),
        quiet=getattr(args, "quiet", False),
    )
    with _sigterm_interrupts():
        return run(args)


def build_send_parser() -> _Parser:
    p = _Parser(
        prog="tstat_send",
        description="Send the flows of complete Tstat output directories to an archive, "
        "then mark each directory .processed.",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument(
        "-d",
        "--directory",
        metavar="DIR",
        required=True,
        help="Tstat output root holding the YYYY_MM_DD_HH_MM.out directories",
    )
    p.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help=f"transport config file (default: ./config.ini if it exists, else {SYSTEM_CONFIG}; "
        "not needed with -N, which reads only its [anonymize] section when there is one)",
    )
    p.add_argument(
        "-T",
        "--threshold",
        metavar="MB",
        type=float,
        default=1000.0,
        help="send a direction of a flow only if it moved at least MB "
        "megabytes (default: %(default)g; 0 sends every flow)",
    )
    p.add_argument(
        "-t",
        "--transport",
        metavar="NAME",
        default="rabbit",
        help="transport: " + ", ".join(sorted(available())) + " (default: %(default)s)",
    )
    p.add_argument(
        "-S", "--sensor", metavar="ID", help="sensor_id in every flow (default: this host's name)"
    )
    p.add_argument(
        "-I",
        "--instance",
        metavar="ID",
        help="instance_id in every flow, for sensors running several Tstat "
        "(default: 0; a value given here is sent as a string, as 0.6.5 did)",
    )
    p.add_argument(
        "-s",
        "--single",
        action="store_true",
        help="stop after the first directory that produced data",
    )
    p.add_argument(
        "-N",
        "--no-transport",
        action="store_true",
        help="print the messages to standard output instead of sending them; "
        "marks nothing (same as -t stdout)",
    )
    p.add_argument(
        "--pretty",
        action="store_true",
        help="with -N (or -t stdout), print each message indented as 0.6.5 did instead "
        "of one compact JSON array per line",
    )
    p.add_argument(
        "--include-newest",
        action="store_true",
        help="also send the directories Tstat may still be writing: the newest, and any "
        "whose logs changed within --settle (Tstat has stopped, or an offline capture); "
        "by default they wait",
    )
    p.add_argument(
        "--settle",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_SETTLE_SECONDS,
        help="a directory counts as complete only once a newer one exists and its logs "
        "have not changed for SECONDS (default: %(default)g)",
    )
    p.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config, connect to the receiver and check the queue (rabbit) "
        "without sending anything, then exit",
    )
    p.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="write the run's metrics in Prometheus text format to PATH, atomically "
        "(for node_exporter's textfile collector)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log each directory and a summary line of the run",
    )
    p.add_argument(
        "-D", "--debug", action="store_true", help="log protocol detail (never passwords)"
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    directory = Path(args.directory)
    if not args.threshold >= 0:
        raise ConfigError(f"--threshold {args.threshold:g}: must be 0 or more megabytes")
    if not 0 <= args.settle < float("inf"):
        raise ConfigError(f"--settle {args.settle:g}: must be 0 or more seconds")
    transport = "stdout" if args.no_transport else args.transport
    sensor = args.sensor if args.sensor is not None else default_sensor()
    instance = args.instance if args.instance is not None else 0
    # The sender falls back to the host name for an empty -S: check what it will send.
    check_ids(sensor or default_sensor(), instance, sensor_is_default=not args.sensor)
    return Settings(
        directory=directory,
        threshold_mb=args.threshold,
        transport=transport,
        sensor=sensor,
        instance=instance,
        single=args.single,
        include_newest=args.include_newest,
        settle_seconds=args.settle,
        pretty=args.pretty,
        config_path=Path(args.config) if args.config is not None else None,
    )


def find_config(given: Path | None) -> Path:
    """-c if given; else ./config.ini if it exists; else SYSTEM_CONFIG. Raises ConfigError."""
    found = _optional_config(given)
    if found is None:
        raise ConfigError(
            f"no config file: neither ./config.ini nor {SYSTEM_CONFIG} exists "
            "(give one with -c/--config)"
        )
    return found


def _optional_config(given: Path | None) -> Path | None:
    if given is not None:
        return given
    for candidate in (Path("config.ini"), SYSTEM_CONFIG):
        if candidate.exists():
            return candidate
    return None


def _other_sections(cls: type) -> set[str]:
    """Sections the other built-in transports read: a config shared between them is not a typo."""
    sections: set[str] = set()
    for name in BUILTIN:
        other = get_transport(name)
        if other is not cls:
            sections.update(other.config_sections)
    return sections


def _load_transport(settings: Settings) -> tuple[Transport, Settings]:
    """The transport, and the settings completed from the config file ([anonymize])."""
    cls = get_transport(settings.transport)
    if cls.needs_config:
        path = find_config(settings.config_path)
        log.info("config: %s", path)
        config = ConfigFile(path)
        hide_secrets(config.secrets())
        known = {**cls.config_sections, **anonymize.CONFIG_SECTIONS}
        config.check_unknown(known, _other_sections(cls))
    else:
        # -N needs no config file, but one that is given or found may ask for
        # anonymisation, which must hold wherever the flows go: its [anonymize] is
        # read (and checked); the other sections are the transports' business.
        config = ConfigFile(_optional_config(settings.config_path))
        hide_secrets(config.secrets())
        config.check_unknown(anonymize.CONFIG_SECTIONS, config.sections())
    settings = dataclasses.replace(settings, anonymize=anonymize.from_config(config))
    if settings.anonymize is not None:
        log.debug("addresses are anonymised: %s", settings.anonymize.label)
    return cls(settings, config), settings


def run_send(settings: Settings, stats: RunStats, show_progress: bool = False) -> int:
    transport, settings = _load_transport(settings)
    # Before the lock: a root with no Tstat output (a typo, `-d /`) gets no lock file.
    require_tstat_output(scan(settings.directory, settings.settle_seconds))
    log.debug("sending %s through %s", settings.directory, transport.describe())
    progress = ProgressLine(settings, sys.stderr) if show_progress else None
    try:
        if not transport.marks_processed:
            # Nothing is written to the root, so there is nothing to race with: no
            # lock, and a read-only root works.
            with transport:
                failed = Sender(settings, transport, stats, progress).run(settings.directory)
        else:
            _warn_if_root_of_another_user(settings.directory)
            with run_lock(settings.directory), transport:
                failed = Sender(settings, transport, stats, progress).run(settings.directory)
    finally:
        if progress is not None:
            progress.finish()
    return EXIT_FAILED if failed else EXIT_OK


def check_config(settings: Settings) -> int:
    """--check-config: validate, connect, check; print one line; send nothing."""
    transport, _ = _load_transport(settings)
    print(transport.check())
    return EXIT_OK


def send_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of tstat_send; returns the exit code."""
    return _run_command(build_send_parser(), argv, _send, _send_usage_problem)


def _send_usage_problem(args: argparse.Namespace) -> str | None:
    if args.pretty and not (args.no_transport or args.transport == "stdout"):
        return "--pretty works only with -N/--no-transport"
    return None


def _send(args: argparse.Namespace) -> int:
    stats = RunStats()
    code = EXIT_OK
    settings = None
    try:
        settings = settings_from_args(args)
        if args.check_config:
            return check_config(settings)
        # Progress only for a person watching (a backfill run by hand), never under
        # cron, and never on stdout, where -N writes data.
        show = sys.stderr.isatty() and not (args.verbose or args.debug)
        code = run_send(settings, stats, show_progress=show)
    except AlreadyRunning as exc:
        # Normal while a long backfill runs from an earlier cron slot: not worth a mail.
        log.info("%s; nothing sent", exc)
        code = exc.exit_code
    except OutputClosed as exc:
        # `tstat_send -N | head`: the reader has what it wanted; not an error.
        log.info("%s; stopped", exc)
        _stop_writing_stdout()
        code = exc.exit_code
    except TstatError as exc:
        log.error("%s", exc)
        log.debug("details", exc_info=True)
        code = exc.exit_code
    except KeyboardInterrupt as exc:
        code = _interrupted(exc)
    stats.finished = time.time()
    log.info("summary: %s exit=%d", stats.summary(), code)
    if args.metrics_file and settings is not None:
        from .metrics import write_metrics

        try:
            write_metrics(Path(args.metrics_file), stats, code, settings)
        except TstatError as exc:
            log.error("metrics not written: %s", exc)
            code = code or exc.exit_code
    return code


def format_listing(candidate: Candidate) -> str:
    """One dry-run line: what would go, how old its marker is, how many bytes."""
    from .cull import describe

    action = "would finish removing" if candidate.leftover else "would remove"
    return f"{action} {candidate.path} ({describe(candidate)})"


def format_summary(report: CullReport) -> str:
    """The one-line result of a run."""
    if report.dry_run:
        size = sum(c.size for c in report.planned)
        return f"dry run: would remove {_dirs(len(report.planned))}, {size} bytes; nothing deleted"
    line = f"removed {_dirs(report.removed)}, {report.bytes_freed} bytes freed"
    if report.kept_on_recheck:
        line += f"; {len(report.kept_on_recheck)} kept (changed during the run)"
    if report.failed:
        line += f"; {len(report.failed)} could not be removed completely"
    return line


def _dirs(n: int) -> str:
    return f"{n} director{'y' if n == 1 else 'ies'}"


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number of hours >= 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def build_cull_parser() -> _Parser:
    from .cull import DEFAULT_TTL_HOURS

    parser = _Parser(
        prog="tstat_cull",
        description="Remove Tstat output directories that tstat_send marked processed "
        "more than --ttl hours ago.",
        epilog=CULL_EXIT_CODES_HELP,
    )
    parser.add_argument(
        "-d",
        "--directory",
        metavar="ROOT",
        required=True,
        help="the Tstat output root that holds the YYYY_MM_DD_HH_MM.out directories",
    )
    parser.add_argument(
        "-t",
        "--ttl",
        metavar="HOURS",
        type=_hours,
        default=DEFAULT_TTL_HOURS,
        help="remove a directory once its .processed marker is this old (default: %(default)g)",
    )
    parser.add_argument(
        "-D",
        "--dry-run",
        action="store_true",
        help="list what would be removed (path, marker age, bytes) on stdout; delete nothing",
    )
    parser.add_argument(
        "--keep-min",
        metavar="N",
        type=_count,
        default=0,
        help="never leave fewer than N processed directories (default: 0)",
    )
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log each removal on stderr, and print the summary even when nothing was due",
    )
    loudness.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no summary line; only errors are printed",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def cull_main(argv: list[str] | None = None) -> int:
    """The tstat_cull command; returns the exit status."""
    return _run_command(build_cull_parser(), argv, _cull)


def _cull(args: argparse.Namespace) -> int:
    from .cull import cull

    if not args.dry_run:
        _warn_if_root_of_another_user(Path(args.directory))
    try:
        report = cull(Path(args.directory), args.ttl, args.dry_run, args.keep_min)
    except AlreadyRunning as exc:
        # Normal while tstat_send works through a backlog: skip, the next run culls.
        log.warning("%s; skipped, nothing removed", exc)
        return exc.exit_code
    except TstatError as exc:
        log.error("%s", exc)
        log.debug("details", exc_info=True)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    try:
        if report.dry_run:
            for candidate in report.planned:
                print(format_listing(candidate))
        if report.dry_run or args.verbose or (report.planned and not args.quiet):
            print(format_summary(report), flush=True)
    except BrokenPipeError:  # `tstat_cull -D | head`
        _stop_writing_stdout()
        return EXIT_BROKEN_PIPE
    return EXIT_OK if report.ok else EXIT_FAILED


def _module_main() -> None:  # `python -m tstat_transport`
    sys.exit(send_main())
