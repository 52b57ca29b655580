"""Logging for the command-line tools: one line per event on stderr."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record (tests swap it)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(verbose: bool = False, debug: bool = False, quiet: bool = False) -> None:
    """Send log lines to stderr for a CLI run.

    Default WARNING (cron mails any output, so a good run is silent); -v INFO;
    -D DEBUG for our own modules and pika's protocol detail; -q ERROR.
    The level is the handler's: the root logger's level is left alone, so a run in a
    process that does other things (tests, a caller of send_main) does not silence
    or flood their logging; only our own logger is opened up for -v and -D.
    """
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    if quiet and not (verbose or debug):
        level = logging.ERROR
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tstat_transport", False):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler._tstat_transport = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(LOG_FORMAT, "%Y-%m-%dT%H:%M:%S"))
    handler.setLevel(level)
    root.addHandler(handler)
    logging.getLogger("tstat_transport").setLevel(
        level if level < logging.WARNING else logging.NOTSET
    )
    # pika logs every frame at DEBUG, and each failure it reports to us at ERROR, with
    # tracebacks: the transport turns those into one line, so only -D shows pika's own.
    # CRITICAL still shows (pika uses it for protocol breaches).
    logging.getLogger("pika").setLevel(logging.DEBUG if debug else logging.CRITICAL)
