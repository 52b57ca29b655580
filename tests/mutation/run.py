"""Break each promise of README.md and doc/ in turn, and require the tests to notice.

Usage: python tests/mutation/run.py [--list] [ID ...]

Each mutation below names the promise it breaks, the exact code that keeps it, what to
put there instead, and the tests that must then fail. The repository (tracked and new
files, as they are now) is copied once to a scratch directory; the tests of each
mutation run there with the code broken, in file order, stopping at the first failure.

A mutation passes when pytest exits 1 (a test failed). It is an error when pytest exits
0 (the promise is unguarded), with any other code (the tests did not run: 2
interrupted, 4 usage, 5 nothing collected), or takes longer than --timeout (a hang
must fail, not stall). A mutation whose original code is not found exactly as often as
listed is an error too, so the list follows the code as it changes: fix the snippet
when you rewrite what it names. Before any mutation, the same tests run on the intact
copy and must pass, so a failure is the mutation's doing.

Add a mutation with every promise you add (see tests/mutation/README.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mutation:
    id: str
    promise: str  # what breaks, in the words of the docs
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    count: int = 1  # how many times `original` occurs (all are replaced)


P = "tests/test_promises.py::"
D = "tests/test_delivery.py::"
S = "tests/test_send.py::"
R = "tests/test_rabbit_transport.py::"
C = "tests/test_cull.py::"

MUTATIONS = [
    # -- doc/delivery.md: at least once --------------------------------------------------
    Mutation(
        "flush-error-swallowed",
        "a directory is marked .processed only after every message is confirmed",
        "tstat_transport/sender.py",
        "            self.transport.flush()\n",
        "            try:\n"
        "                self.transport.flush()\n"
        "            except TransportError:\n"
        "                pass\n",
        (P + "test_failed_final_flush_leaves_the_directory_unmarked",),
    ),
    Mutation(
        "no-final-flush",
        "a directory is marked .processed only after every message is confirmed",
        "tstat_transport/sender.py",
        "            self.transport.flush()\n",
        "",
        (P + "test_failed_final_flush_leaves_the_directory_unmarked",),
    ),
    Mutation(
        "flush-trusted-blindly",
        "a directory is marked .processed only after every message is confirmed",
        "tstat_transport/sender.py",
        "            if self._pending:\n",
        "            if False:\n",
        (P + "test_a_flush_that_leaves_a_message_unconfirmed_marks_nothing",),
    ),
    Mutation(
        "progress-out-of-order",
        "the state records the position after the last message confirmed in order",
        "tstat_transport/sender.py",
        "while pending and pending[0].confirmed:",
        "while pending and any(p.confirmed for p in pending):",
        (P + "test_confirms_out_of_order_record_only_the_in_order_part",),
    ),
    Mutation(
        "state-not-saved-on-failure",
        "a run that fails leaves the confirmed progress behind",
        "tstat_transport/sender.py",
        "                self._checkpoint(durable=True)\n",
        "                pass\n",
        (P + "test_progress_confirmed_before_a_failure_is_saved",),
    ),
    Mutation(
        "state-on-failure-not-durable",
        "the progress saved when a run fails survives a power cut",
        "tstat_transport/sender.py",
        "self._checkpoint(durable=True)",
        "self._checkpoint(durable=False)",
        (P + "test_marker_and_state_are_fsynced_before_and_after_the_rename",),
    ),
    Mutation(
        "no-fsync-of-file",
        "markers and state are written durably (fsync before the rename)",
        "tstat_transport/state.py",
        "                os.fsync(f.fileno())\n",
        "                pass\n",
        (P + "test_marker_and_state_are_fsynced_before_and_after_the_rename",),
    ),
    Mutation(
        "no-fsync-of-directory",
        "markers and state are written durably (the rename fsynced in its directory)",
        "tstat_transport/state.py",
        "                os.fsync(dfd)\n",
        "                pass\n",
        (P + "test_marker_and_state_are_fsynced_before_and_after_the_rename",),
    ),
    Mutation(
        "write-in-place",
        "the state file is replaced atomically: a failed write leaves the previous one",
        "tstat_transport/state.py",
        'fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")',
        "fd, tmp = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), str(path)",
        (P + "test_a_failed_state_write_leaves_the_previous_state",),
    ),
    Mutation(
        "resume-from-start",
        "the next run reads the state file from that position and sends the rest",
        "tstat_transport/resume.py",
        "            return ResumePoint("
        'pos, entry["messages"], entry["rows"], entry["bad_rows"])\n',
        "            return ResumePoint()\n",
        (P + "test_progress_confirmed_before_a_failure_is_saved",),
    ),
    Mutation(
        "message-id-not-deterministic",
        "every message has a deterministic id, the same on every resend",
        "tstat_transport/sender.py",
        'message_id=f"{id_prefix}{token.number}",',
        'message_id=f"{id_prefix}{token.number}:{time.time()}",',
        (S + "test_failure_mid_directory_resumes_without_loss",),
    ),
    Mutation(
        "processed-not-skipped",
        "a directory marked .processed is skipped from then on",
        "tstat_transport/sender.py",
        "            if record.status is Status.PROCESSED:\n"
        "                stats.dirs_skipped += 1\n",
        "            if False:\n                stats.dirs_skipped += 1\n",
        (S + "test_directory_marked_only_after_everything_confirmed",),
    ),
    Mutation(
        "progress-of-another-transport",
        "progress recorded for another transport does not apply: the directory goes whole",
        "tstat_transport/resume.py",
        '        if recorded.get("transport") != self.destination:\n',
        "        if False:\n",
        (P + "test_progress_for_another_transport_sends_the_directory_whole",),
    ),
    Mutation(
        "changed-options-applied-midway",
        "a directory started with other options is finished with the options it was started with",
        "tstat_transport/resume.py",
        "        self.options = old\n",
        "        pass\n",
        (S + "test_changed_options_finish_the_started_directory_with_the_old_ones",),
    ),
    Mutation(
        "shorter-file-resumed-past-its-end",
        "a log shorter than its recorded progress is sent again from the start",
        "tstat_transport/resume.py",
        "if size is not None and pos.offset > size:",
        "if False:",
        (P + "test_a_log_shorter_than_its_progress_is_sent_from_the_start",),
    ),
    Mutation(
        "state-saved-every-window",
        "with a wide window the state is written every window/2 confirmed messages",
        "tstat_transport/sender.py",
        "self._save_every = max(1, transport.window // 2)",
        "self._save_every = max(1, transport.window)",
        (P + "test_a_wide_window_saves_progress_every_half_window_of_confirmed_messages",),
    ),
    Mutation(
        "unusable-log-marked",
        "a log file that is not Tstat's keeps its directory unmarked, and the run exits 1",
        "tstat_transport/sender.py",
        "        if outcome.failed:\n            self.stats.dirs_failed += 1\n",
        "        if False:\n            self.stats.dirs_failed += 1\n",
        (S + "test_unusable_log_leaves_its_directory_unmarked_and_others_go",),
    ),
    # -- RabbitMQ: durable, persistent, mandatory, confirms ------------------------------
    Mutation(
        "queue-not-durable",
        "the queue is declared durable unless configured otherwise",
        "tstat_transport/transports/rabbit_settings.py",
        '"durable": config.get_bool(QUEUE_OPTIONS, "durable", True),',
        '"durable": config.get_bool(QUEUE_OPTIONS, "durable", False),',
        (P + "test_the_queue_is_declared_durable_by_default",),
    ),
    Mutation(
        "transient-messages",
        "messages are persistent (delivery_mode = 2)",
        "tstat_transport/transports/framing.py",
        "PERSISTENT = 2  # delivery_mode",
        "PERSISTENT = 1  # delivery_mode",
        (P + "test_the_queue_is_declared_durable_by_default",),
    ),
    Mutation(
        "not-mandatory",
        "a message the broker cannot route is a failure, never a success",
        "tstat_transport/transports/rabbit.py",
        "                    mandatory=True,\n",
        "                    mandatory=False,\n",
        (D + "test_unroutable_routing_key_is_a_failure_not_a_success",),
    ),
    Mutation(
        "return-ignored",
        "a message the broker returned is a failure, never a success",
        "tstat_transport/transports/confirms.py",
        "            if why is not None:\n",
        "            if False:\n",
        (R + "test_unroutable_message_fails_and_is_never_confirmed",),
    ),
    Mutation(
        "window-overrun",
        "at most `window` messages are in flight (the bound on duplicates)",
        "tstat_transport/transports/rabbit.py",
        "if len(self._tracker) + len(self._retries) >= self.window:\n"
        "            self._settle_until("
        "lambda: len(self._tracker) + len(self._retries) < self.window)\n",
        "if len(self._tracker) + len(self._retries) >= self.window + 1:\n"
        "            self._settle_until("
        "lambda: len(self._tracker) + len(self._retries) < self.window + 1)\n",
        (P + "test_no_more_than_window_messages_are_in_flight",),
    ),
    Mutation(
        "nack-taken-for-ack",
        "a negative confirm is a failure, never a success",
        "tstat_transport/transports/rabbit.py",
        "ack = isinstance(method, pika.spec.Basic.Ack)",
        "ack = True",
        (R + "test_nack_fails_and_reports_only_accepted_messages",),
    ),
    Mutation(
        "rewritten-log-resumed",
        "a log rewritten in place after partial progress is sent from its start, not "
        "resumed in the middle of other rows",
        "tstat_transport/resume.py",
        '            if now["tail_sha1"] != entry["tail_sha1"]:\n',
        "            if False:\n",
        (
            "tests/test_field_safety.py::"
            "test_a_log_replaced_after_partial_progress_is_sent_from_its_start",
        ),
    ),
    Mutation(
        "rewritten-gz-resumed",
        "a .gz log rewritten in place after partial progress is sent from its start",
        "tstat_transport/resume.py",
        '        if "gz_prefix_sha1" in entry and not opened.bytes_comparable:\n',
        "        if False:\n",
        (
            "tests/test_field_safety.py::"
            "test_a_log_replaced_after_partial_progress_is_sent_from_its_start",
        ),
    ),
    Mutation(
        "held-frames-not-written",
        "messages held for one write go out before the sender waits for their confirms",
        "tstat_transport/transports/rabbit.py",
        '        """Run the I/O loop until `stop()` (True) or until time.monotonic() passes '
        '`deadline`."""\n        loop = self._loop\n        assert loop is not None\n'
        "        self._write_out()\n",
        '        """Run the I/O loop until `stop()` (True) or until time.monotonic() passes '
        '`deadline`."""\n        loop = self._loop\n        assert loop is not None\n',
        (D + "test_clean_run_delivers_every_flow_and_marks",),
    ),
    Mutation(
        "nacks-not-retried",
        "a nack that passes (a quorum queue electing a leader, a queue drained) is "
        "retried nack_retries times, not taken as final",
        "tstat_transport/transports/rabbit.py",
        "        if times <= settings.nack_retries:\n",
        "        if times <= 0:\n",
        (R + "test_cli_nacks_that_pass_are_retried_and_the_run_delivers_everything_once",),
    ),
    Mutation(
        "multiple-ignored",
        "an ack with `multiple` confirms every message up to its tag (and never hangs)",
        "tstat_transport/transports/confirms.py",
        "        if multiple:\n",
        "        if False:\n",
        (P + "test_acks_with_multiple_confirm_every_message_they_cover",),
    ),
    Mutation(
        "unavailable-not-temporary",
        "exit 75 when the broker is unreachable: the next run carries on",
        "tstat_transport/errors.py",
        "class AlreadyRunning(TstatError):",
        "TransportUnavailable.exit_code = EXIT_FAILED\n\n\nclass AlreadyRunning(TstatError):",
        (D + "test_broker_down_at_start",),
    ),
    Mutation(
        "secret-in-the-log",
        "passwords never appear in the output, whatever line carries them",
        "tstat_transport/logsetup.py",
        '            text = text.replace(secret, "***")\n',
        "            pass\n",
        ("tests/test_cli.py::test_a_secret_echoed_anywhere_in_the_log_is_masked",),
    ),
    # -- HTTP: only a 2xx is a confirm ---------------------------------------------------
    Mutation(
        "http-any-status-confirms",
        "an HTTP message is confirmed only by a 2xx answer",
        "tstat_transport/transports/http.py",
        "if 200 <= response.status < 300:",
        "if 200 <= response.status < 600:",
        ("tests/test_http_transport.py::test_client_error_fails_at_once",),
    ),
    Mutation(
        "http-window-widened",
        "HTTP has a window of 1: a run stopped mid-way sends again only the message in flight",
        "tstat_transport/transports/http.py",
        "    window = 1\n",
        "    window = 64\n",
        (
            "tests/test_http_transport.py::"
            "test_tstat_send_over_http_has_one_message_in_flight_and_a_kill_resends_only_it",
        ),
    ),
    # -- README: how it works ------------------------------------------------------------
    Mutation(
        "newest-sent",
        "the newest directory is left for a later run (Tstat is still writing it)",
        "tstat_transport/directories.py",
        '    if newest:\n        reason = "newest directory',
        '    if False:\n        reason = "newest directory',
        (S + "test_newest_directory_is_left_for_a_later_run",),
    ),
    Mutation(
        "cut-line-marked",
        "a log that ends in a half-written row keeps its directory unmarked",
        "tstat_transport/sender.py",
        "        if logfile.stats.incomplete_tail:\n            outcome.waiting = True\n",
        "        if logfile.stats.incomplete_tail:\n            outcome.waiting = False\n",
        (S + "test_newest_with_cut_line_is_sent_but_not_marked_until_complete",),
    ),
    Mutation(
        "bad-row-stops-the-file",
        "a bad row is counted, reported and skipped; the rest of the file still goes out",
        "tstat_transport/reader.py",
        "        self.stats.bad_rows += 1\n",
        '        raise LogFormatError(f"{self.path}:{line}: {reason}")\n',
        (S + "test_bad_rows_and_missing_logs_do_not_stop_the_directory",),
    ),
    Mutation(
        "chunk-end-inside-row-off",
        "a run resumes where the confirmed messages end: a chunk ending between a row's two "
        "directions records how many of them went",
        "tstat_transport/reader.py",
        "row_skip + len(objs) - over,",
        "row_skip + len(objs) - over + 1,",
        ("tests/test_reader.py::test_resume_between_the_two_directions_of_a_row",),
    ),
    Mutation(
        "split-rest-unchecked",
        "a bad row is counted, reported and skipped; the rest of the file still goes out",
        "tstat_transport/reader.py",
        'if len(fields) == parts and fields[-1].count(" ") == spaces:',
        "if len(fields) == parts:",
        ("tests/test_reader.py::test_any_wrong_field_count_is_reported_with_it",),
    ),
    Mutation(
        "udp-before-tcp",
        "all TCP flows of a directory go out before its UDP flows, as 0.6.5 sent them",
        "tstat_transport/sender.py",
        'LOGS = (("log_tcp_complete", "tcp"), ("log_udp_complete", "udp"))',
        'LOGS = (("log_udp_complete", "udp"), ("log_tcp_complete", "tcp"))',
        ("tests/test_records.py::test_matches_original_065_output_for_full",),
    ),
    Mutation(
        "cull-deletes-in-place",
        "tstat_cull renames a directory to .culling-<name> before deleting it, so a "
        "half-deleted one never looks like unsent data",
        "tstat_transport/cull.py",
        "        os.rename(path, hidden)\n",
        "        hidden = path\n",
        (C + "test_sigterm_while_deleting_stops_with_one_line_and_the_next_run_finishes",),
    ),
    Mutation(
        "threshold-ignored",
        "each direction is kept only if it moved at least --threshold MB",
        "tstat_transport/records.py",
        '"    if bits >= threshold:",',
        '"    if bits >= 0:",',
        (S + "test_subprocess_bin_script",),
        count=2,  # the fast path's two directions, which nearly every row takes
    ),
    Mutation(
        "no-lock",
        "a second run started meanwhile exits with 75 and sends nothing",
        "tstat_transport/state.py",
        "            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n",
        "            pass\n",
        (D + "test_overlapping_run_sends_nothing_and_says_why_at_verbose",),
    ),
    Mutation(
        "check-config-sends",
        "--check-config sends nothing and creates nothing",
        "tstat_transport/cli.py",
        "            return check_config(settings)\n",
        "            check_config(settings)\n",
        (D + "test_check_config_connects_and_sends_nothing",),
    ),
    Mutation(
        "usage-problem-ignored",
        "a usage error exits 2 before anything is touched",
        "tstat_transport/cli.py",
        "    problem = usage_problem(args) if usage_problem else None\n",
        "    problem = None\n",
        (D + "test_usage_and_config_errors_exit_2_before_anything_is_touched",),
    ),
    Mutation(
        "lock-before-config",
        "a configuration error exits 2 before anything is touched (not even a lock file)",
        "tstat_transport/cli.py",
        "    transport, settings = _load_transport(settings)\n    # Before the lock",
        "    run_lock(settings.directory).__enter__()\n"
        "    transport, settings = _load_transport(settings)\n    # Before the lock",
        (D + "test_usage_and_config_errors_exit_2_before_anything_is_touched",),
    ),
    Mutation(
        "stdout-marks",
        "-N marks nothing and writes nothing",
        "tstat_transport/sender.py",
        "        self.tracking = transport.marks_processed\n",
        "        self.tracking = True\n",
        (S + "test_no_transport_marks_nothing_and_sends_again",),
    ),
    # -- doc/cull.md ---------------------------------------------------------------------
    Mutation(
        "cull-without-lock",
        "tstat_cull takes the same lock as tstat_send, and removes nothing while it is held",
        "tstat_transport/cull.py",
        "    with run_lock(root):\n",
        "    if True:\n",
        (C + "test_lock_held_by_tstat_send_skips_with_75_and_deletes_nothing",),
    ),
    Mutation(
        "cull-ignores-ttl",
        "a directory is removed only once its marker is at least --ttl hours old",
        "tstat_transport/cull.py",
        "    return age >= 0 and age >= ttl_seconds\n",
        "    return age >= 0\n",
        (C + "test_removes_only_directories_whose_marker_is_older_than_ttl",),
    ),
    Mutation(
        "cull-future-marker-expired",
        "a marker dated in the future is never expired",
        "tstat_transport/cull.py",
        "    return age >= 0 and age >= ttl_seconds\n",
        "    return abs(age) >= ttl_seconds\n",
        (C + "test_marker_dated_in_the_future_is_not_expired",),
    ),
    Mutation(
        "cull-no-recheck",
        "a directory whose marker changed since the decision is kept",
        "tstat_transport/cull.py",
        "    if mtime is None or not is_expired(mtime, now, ttl_seconds):\n",
        "    if False:\n",
        (C + "test_recheck_keeps_what_changed_after_the_decision",),
    ),
    Mutation(
        "cull-leftovers-kept",
        "the next run finishes any .culling-<name> an interrupted one left behind",
        "tstat_transport/cull.py",
        "        for leftover in leftovers:\n"
        "            _finish(leftover, leftover.path, report)\n",
        "",
        (C + "test_next_run_finishes_culling_leftovers_only_with_tstat_names",),
    ),
    Mutation(
        "cull-ignores-keep-min",
        "--keep-min N never leaves fewer than N processed directories",
        "tstat_transport/cull.py",
        "    removable = max(0, len(processed) - keep_min)\n",
        "    removable = len(processed)\n",
        (C + "test_keep_min_keeps_the_newest_processed_directories",),
    ),
    Mutation(
        "cull-follows-symlinks",
        "a symlinked .out directory is left alone, link and target",
        "tstat_transport/directories.py",
        "            elif entry.is_symlink():\n"
        "                if is_tstat_name(name):\n"
        "                    folder.symlinks.append(Path(entry.path))\n"
        '            elif not entry.is_dir(follow_symlinks=False) or name.startswith("."):\n',
        '            elif not entry.is_dir() or name.startswith("."):\n',
        (C + "test_symlinked_tstat_directory_is_not_culled_nor_its_target",),
    ),
]


def scratch_copy(dest: Path) -> None:
    """The repository's files as they are now (tracked, and new ones not ignored)."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():  # a file deleted but not yet committed is skipped
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str, str]:
    """pytest's exit code (None on timeout), the tests it reports failed, and the tail
    of its output."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-x",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        *tests,
    ]
    try:
        done = subprocess.run(
            cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return None, "", ""
    failed = [x for x in done.stdout.splitlines() if x.startswith(("FAILED ", "ERROR tests"))]
    return done.returncode, "\n".join(failed), done.stdout[-3000:] + done.stderr[-1000:]


def apply(copy: Path, mutation: Mutation) -> str | None:
    """Break the copy; return its original text, or None if the snippet is not found."""
    path = copy / mutation.file
    text = path.read_text()
    if text.count(mutation.original) != mutation.count:
        return None
    path.write_text(text.replace(mutation.original, mutation.replacement))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help="run only these mutations")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per mutation")
    args = parser.parse_args(argv)
    ids = [m.id for m in MUTATIONS]
    assert len(set(ids)) == len(ids), "duplicate mutation ids"
    if args.list:
        for m in MUTATIONS:
            print(f"{m.id:32} {m.file:38} {m.promise}")
        return 0
    unknown = set(args.ids) - set(ids)
    if unknown:
        parser.error(f"unknown mutation(s): {', '.join(sorted(unknown))}")
    chosen = [m for m in MUTATIONS if not args.ids or m.id in args.ids]

    problems = []
    with tempfile.TemporaryDirectory(prefix="tstat-mutation-") as scratch:
        copy = Path(scratch)
        scratch_copy(copy)
        # The scratch copy's code is the one the tests import (not an installed one).
        found = subprocess.run(
            [sys.executable, "-c", "import tstat_transport; print(tstat_transport.__file__)"],
            cwd=copy,
            env={**os.environ, "PYTHONPATH": str(copy)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not Path(found).resolve().is_relative_to(copy.resolve()):
            print(f"mutation: the tests would import {found}, not the copy", file=sys.stderr)
            return 2
        for m in chosen:
            original = apply(copy, m)
            if original is None:
                problems.append(
                    f"{m.id}: {m.file} no longer holds its original code "
                    f"{m.count} time(s): update the snippet in {__file__}"
                )
            else:
                (copy / m.file).write_text(original)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 2
        tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        started = time.monotonic()
        code, _, tail = run_tests(copy, tests, args.timeout)
        print(
            f"intact code: pytest exit {code} in {time.monotonic() - started:.0f}s "
            f"({len(tests)} tests)",
            flush=True,
        )
        if code != 0:
            print(tail, file=sys.stderr)
            return 1

        for m in chosen:
            original = apply(copy, m)
            assert original is not None
            started = time.monotonic()
            try:
                code, failed, tail = run_tests(copy, m.tests, args.timeout)
            finally:
                (copy / m.file).write_text(original)
            seconds = time.monotonic() - started
            if code == 1:
                verdict = f"caught: {failed.splitlines()[0][:150] if failed else 'a test failed'}"
            elif code == 0:
                verdict = "NOT CAUGHT: the tests pass with the promise broken"
            elif code is None:
                verdict = f"HUNG: no result within {args.timeout:g}s"
            else:
                verdict = f"ERROR: pytest exit {code}, the tests did not run"
            print(f"{m.id:32} {verdict} ({seconds:.0f}s)", flush=True)
            if code != 1:
                problems.append(f"{m.id} ({m.promise}): {verdict}\n{tail}")
    if problems:
        print("\n".join(["", *problems]), file=sys.stderr)
        return 1
    print(f"all {len(chosen)} mutations caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
