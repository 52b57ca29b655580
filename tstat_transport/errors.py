"""The exception hierarchy; each class carries the exit code that cli.py maps it to."""

from __future__ import annotations

# Exit codes (documented in README.md and in `tstat_send --help`).
EXIT_OK = 0
EXIT_FAILED = 1  # some directory could not be delivered; an operator should look
EXIT_USAGE = 2  # bad flag, bad config, missing directory
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: broker unreachable or another run holds the lock
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of -N's output went away (`| head`)
EXIT_TERMINATED = 143  # 128 + SIGTERM: `systemctl stop`, `kill`, a shutdown


class TstatError(Exception):
    """Base class: an expected failure, shown to the operator as one line."""

    exit_code = EXIT_FAILED


class ConfigError(TstatError):
    """The command line or the config file is wrong; nothing was touched."""

    exit_code = EXIT_USAGE


class TransportError(TstatError):
    """A message could not be delivered for a reason that needs an operator.

    Wrong password, access refused, missing vhost or queue, a queue declared with
    other arguments, an unroutable routing key, a nack, a TLS certificate that does
    not verify. Retrying alone will not help.
    """

    exit_code = EXIT_FAILED


class TransportUnavailable(TransportError):
    """The receiver cannot be reached right now (down, DNS, connection lost).

    Temporary: the next run resumes where the confirmed messages end.
    """

    exit_code = EXIT_TEMPFAIL


class OutputClosed(TransportError):
    """Standard output was closed by its reader (`tstat_send -N | head`): normal for a filter."""

    exit_code = EXIT_BROKEN_PIPE


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived. A KeyboardInterrupt, so that whatever keeps the confirmed
    progress on Ctrl-C keeps it on SIGTERM too; only the exit code differs."""

    exit_code = EXIT_TERMINATED


class AlreadyRunning(TstatError):
    """Another tstat_send or tstat_cull holds the lock on this Tstat root."""

    exit_code = EXIT_TEMPFAIL


class StateError(TstatError):
    """The progress state or the .processed marker could not be written (disk full?)."""

    exit_code = EXIT_FAILED
