"""Logging for the command-line tools: one line per event on stderr."""

from __future__ import annotations

import logging
import sys
import time
from typing import Iterable

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record (tests swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Formatter(logging.Formatter):
    """ISO 8601 local time with its UTC offset (cron mails and journals from sensors in
    several zones compare), and every registered secret replaced by `***`."""

    secrets: tuple[str, ...] = ()

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        offset = time.strftime("%z", time.localtime(record.created))
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        return f"{stamp}{offset[:3]}:{offset[3:]}"

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        # Longest first, so that a secret containing another is masked whole.
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


_FORMATTER = _Formatter(LOG_FORMAT)


def hide_secrets(values: Iterable[str]) -> None:
    """Never let these strings reach the log, whatever message carries them (a value
    echoed in an error, a URL in a library's exception, a traceback at -D)."""
    known = set(_FORMATTER.secrets) | {v for v in values if v}
    _FORMATTER.secrets = tuple(sorted(known, key=len, reverse=True))


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
    _FORMATTER.secrets = ()  # each run registers those of its own config
    handler.setFormatter(_FORMATTER)
    handler.setLevel(level)
    root.addHandler(handler)
    logging.getLogger("tstat_transport").setLevel(
        level if level < logging.WARNING else logging.NOTSET
    )
    # pika logs every frame at DEBUG, and each failure it reports to us at ERROR, with
    # tracebacks: the transport turns those into one line, so only -D shows pika's own.
    # CRITICAL still shows (pika uses it for protocol breaches).
    logging.getLogger("pika").setLevel(logging.DEBUG if debug else logging.CRITICAL)
