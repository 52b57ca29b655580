"""The command-line tools: argument parsing, logging, and the one place errors
become exit codes. Everything else lives in the library modules."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from . import __version__
from .config import DEFAULT_SETTLE_SECONDS, ConfigFile, Settings
from .directories import require_tstat_output, scan
from .errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TEMPFAIL,
    EXIT_USAGE,
    AlreadyRunning,
    ConfigError,
    TstatError,
)
from .logsetup import setup_logging
from .metrics import write_metrics
from .progress import ProgressLine
from .sender import Sender, default_sensor
from .state import run_lock
from .stats import RunStats
from .transports import available, get_transport

log = logging.getLogger("tstat_transport")

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}   everything due was delivered (skipped bad rows are counted, not failures)
  {EXIT_FAILED}   some directory could not be delivered (see the error lines)
  {EXIT_USAGE}   usage or configuration error; nothing was sent
  {EXIT_TEMPFAIL}  temporary: the receiver is unreachable, or another run holds the lock;
       the next run carries on where this one stopped
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (cron mails it; no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_send_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tstat_send",
        description="Send the flows of complete Tstat output directories to an archive, "
        "then mark each directory .processed.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        default="./config.ini",
        help="transport config file (default: %(default)s; not needed with -N)",
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
        help="with -N, print each message indented as 0.6.5 did instead of one "
        "compact JSON array per line",
    )
    p.add_argument(
        "--include-newest",
        action="store_true",
        help="also send the newest directory (Tstat has stopped, or an offline "
        "capture); by default it is left until a newer one exists",
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
    if not directory.is_dir():
        raise ConfigError(f"{args.directory}: no such directory (-d/--directory)")
    if not args.threshold >= 0:
        raise ConfigError(f"--threshold {args.threshold:g}: must be 0 or more megabytes")
    if not 0 <= args.settle < float("inf"):
        raise ConfigError(f"--settle {args.settle:g}: must be 0 or more seconds")
    transport = "stdout" if args.no_transport else args.transport
    return Settings(
        directory=directory,
        threshold_mb=args.threshold,
        transport=transport,
        sensor=args.sensor if args.sensor is not None else default_sensor(),
        instance=args.instance if args.instance is not None else 0,
        single=args.single,
        include_newest=args.include_newest,
        settle_seconds=args.settle,
        pretty=args.pretty,
        config_path=Path(args.config),
    )


def _load_transport(settings: Settings):
    cls = get_transport(settings.transport)
    if cls.needs_config:
        config = ConfigFile(settings.config_path)
        config.warn_unknown(cls.config_sections)
    else:
        config = ConfigFile(None)
    return cls(settings, config)


def run_send(settings: Settings, stats: RunStats, show_progress: bool = False) -> int:
    transport = _load_transport(settings)
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
            with run_lock(settings.directory), transport:
                failed = Sender(settings, transport, stats, progress).run(settings.directory)
    finally:
        if progress is not None:
            progress.finish()
    return EXIT_FAILED if failed else EXIT_OK


def check_config(settings: Settings) -> int:
    """--check-config: validate, connect, check; print one line; send nothing."""
    transport = _load_transport(settings)
    print(transport.check())
    return EXIT_OK


def send_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of tstat_send; returns the exit code."""
    try:
        args = build_send_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: already printed
        return int(exc.code or 0)
    setup_logging(verbose=args.verbose, debug=args.debug)
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
    except TstatError as exc:
        log.error("%s", exc)
        log.debug("details", exc_info=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted; the next run resumes where this one stopped")
        code = EXIT_INTERRUPTED
    stats.finished = time.time()
    log.info("summary: %s exit=%d", stats.summary(), code)
    if args.metrics_file and settings is not None:
        try:
            write_metrics(Path(args.metrics_file), stats, code, settings)
        except TstatError as exc:
            log.error("metrics not written: %s", exc)
            code = code or exc.exit_code
    return code


def cull_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of tstat_cull; returns the exit code."""
    from .cull import cull_main as main

    return main(argv)


def _module_main() -> None:  # `python -m tstat_transport`
    sys.exit(send_main())
