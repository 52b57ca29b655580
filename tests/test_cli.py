"""The command line as an operator meets it in the first week: typos in options and in the
config, secrets that must not leak, signals, pipes, ownership, cron and systemd files.

Each case runs the real command (in-process through send_main/cull_main, or as a
subprocess of bin/) and asserts the exit code and the exact line it prints.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pika
import pytest
from broker import Broker, Proxy
from test_delivery import _wait_for

from tstat_transport import __version__, cli
from tstat_transport.cli import cull_main, send_main
from tstat_transport.state import LOCK_NAME, PROCESSED_NAME, STATE_NAME

REPO = Path(__file__).resolve().parents[1]
SECRET = "Sekret-4711"
FIRST = "2026_11_24_19_18.out"


def run_send(capsys, *argv: str) -> tuple[int, str, str]:
    code = send_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"config-{uuid.uuid4().hex[:6]}.ini"
    path.write_text(text)
    return path


def rabbit_config(broker: Broker, queue: str, port: int | None = None, **extra) -> str:
    rabbit = {
        "host": broker.host,
        "port": port or broker.port,
        "username": broker.username,
        "password": broker.password,
        "queue": queue,
        "connect_retries": 0,
        "retry_delay": 0,
        "timeout": 5,
        **extra,
    }
    return "[rabbit]\n" + "".join(f"{k} = {v}\n" for k, v in rabbit.items())


def script_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def one_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- 10.7 secrets never reach the output -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # A `password` line that lost its '=': configparser would echo the whole line.
        (
            f"[rabbit]\nhost = 127.0.0.1\npassword {SECRET}\nqueue = q\n",
            "line 3: not a `key = value` line (is the '=' missing?)",
        ),
        # An indented `password=` is joined to `host`, and the host printed in every error.
        (
            f"[rabbit]\nhost = 127.0.0.1\n    password={SECRET}\nqueue = q\n",
            "line 3: indented line, which INI joins to the value of the key above it",
        ),
        # A URL with userinfo where a host name belongs.
        (
            f"[rabbit]\nhost = amqp://tstat:{SECRET}@127.0.0.1:5672/\nqueue = q\n",
            "[rabbit] host = 'amqp://tstat:***@127.0.0.1:5672/': expected a host name, not a URL",
        ),
        (
            f"[rabbit]\nhost = 127.0.0.1\npassword = {SECRET}\npassword = x{SECRET}\n",
            "line 4: [rabbit] password: set twice",
        ),
        (f"password = {SECRET}\n[rabbit]\nqueue = q\n", "line 1: a key before any [section]"),
        # Two lines run together.
        (
            f"[rabbit]\nhost = 127.0.0.1 password = {SECRET}\nqueue = q\n",
            "[rabbit] host = '127.0.0.1 password = ***': expected a host name, found spaces",
        ),
        (
            f"[http]\nurl = ftp://u:{SECRET}@example.org/\n",
            "[http] url = 'ftp://example.org/': expected http://",
        ),
    ],
)
def test_config_typos_never_show_a_secret(capsys, tstat_root, tmp_path, text, message):
    cfg = write_config(tmp_path, text)
    transport = "http" if "[http]" in text else "rabbit"
    root = str(tstat_root())
    code, out, err = run_send(capsys, "-c", str(cfg), "-t", transport, "-D", "-d", root)
    assert code == 2
    assert SECRET not in out + err  # not even in the -D detail
    assert message in err
    code, out, err = run_send(capsys, "-c", str(cfg), "-t", transport, "-d", root)
    assert code == 2 and message in one_error(err)  # without -D: one line, no traceback


def test_a_secret_echoed_anywhere_in_the_log_is_masked(capsys, tstat_root, tmp_path, monkeypatch):
    """Defence in depth: the password's variable given for the user name by mistake, and
    the lines that name the user (the connection error, -D detail) still do not show it."""
    monkeypatch.setenv("TSTAT_TEST_PASSWORD", SECRET)
    cfg = write_config(
        tmp_path,
        "[rabbit]\nhost = 127.0.0.1\nport = 1\nusername = ${TSTAT_TEST_PASSWORD}\n"
        "password = ${TSTAT_TEST_PASSWORD}\nqueue = q\nconnect_retries = 0\ntimeout = 1\n",
    )
    code, out, err = run_send(capsys, "-c", str(cfg), "-D", "-d", str(tstat_root()))
    assert code == 75
    assert SECRET not in out + err
    assert "***" in err


# -- 13.4 config typos are errors, with what to do ---------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            f"pasword = {SECRET}",
            "[rabbit] pasword (line 3): unknown key (did you mean 'password'?)",
        ),
        ("hots = 127.0.0.1", "[rabbit] hots (line 3): unknown key (did you mean 'host'?)"),
        (
            "queue = q   # archive",
            "line 3: [rabbit] queue: the value holds an inline comment (' #' or ' ;'), which INI "
            "keeps as part of the value: move the comment to a line of its own",
        ),
        (
            "routing_key =",
            "[rabbit] routing_key: is empty, and with the default exchange messages go to "
            "the queue the routing key names: remove the line",
        ),
    ],
)
def test_config_typo_is_exit_2_naming_the_fix(capsys, tstat_root, tmp_path, line, message):
    cfg = write_config(tmp_path, f"[rabbit]\nqueue = q\n{line}\n")
    root = tstat_root()
    code, out, err = run_send(capsys, "-c", str(cfg), "-T", "0", "-d", str(root))
    assert code == 2
    assert f"{cfg}: {message}" in one_error(err) or f"{cfg} {message}" in one_error(err)
    assert SECRET not in err
    assert not list(root.glob(f"*/{PROCESSED_NAME}")) and not (root / LOCK_NAME).exists()


def test_a_misspelled_queue_flag_is_an_error(capsys, tstat_root, tmp_path):
    """[rabbit_queue_options] takes any x- queue argument; `durabel` is neither."""
    cfg = write_config(tmp_path, "[rabbit]\nqueue = q\n[rabbit_queue_options]\ndurabel = false\n")
    code, _, err = run_send(capsys, "-c", str(cfg), "-d", str(tstat_root()))
    assert code == 2
    assert one_error(err).endswith(
        f"{cfg}: [rabbit_queue_options] durabel: unknown key (did you mean 'durable'?)"
    )


def test_a_misspelled_section_is_an_error(capsys, tstat_root, tmp_path):
    cfg = write_config(tmp_path, "[rabit]\nqueue = q\n")
    code, _, err = run_send(capsys, "-c", str(cfg), "-d", str(tstat_root()))
    assert code == 2
    assert one_error(err).endswith(f"{cfg}: unknown section [rabit] (did you mean [rabbit]?)")


def test_sections_of_other_transports_are_not_typos(capsys, tstat_root, tmp_path):
    """One config for every transport: -t http does not complain about [rabbit], and an
    unrelated section is a warning only."""
    cfg = write_config(
        tmp_path,
        (REPO / "config.ini.example").read_text()
        + "\n[monitoring]\nnote = kept for another tool\n",
    )
    text = cfg.read_text().replace("url = ", "url = http://127.0.0.1:1/flows\n;url = ", 1)
    cfg.write_text(text.replace(";retries = 3", "retries = 0"))
    code, _, err = run_send(
        capsys, "-c", str(cfg), "-t", "http", "-T", "0", "-d", str(tstat_root())
    )
    assert code == 75, err  # nothing listens on port 1
    assert "[rabbit]" not in err and "[ssl_options]" not in err
    assert f"{cfg}: unknown section [monitoring] is ignored" in err


# -- 13.7 config lookup -------------------------------------------------------------------


def test_config_found_in_etc_when_not_given(
    capsys, tstat_root, tmp_path, monkeypatch, broker, queue_name
):
    system = write_config(tmp_path, rabbit_config(broker, queue_name))
    monkeypatch.setattr(cli, "SYSTEM_CONFIG", system)
    monkeypatch.chdir(tmp_path)  # no ./config.ini here
    code, _, err = run_send(capsys, "-T", "0", "-v", "-d", str(tstat_root()))
    assert code == 0, err
    assert f"config: {system}" in err
    assert len(broker.fetch(queue_name)) == 19
    (tmp_path / "config.ini").write_text("[rabbit]\nqueue = q\nport = x\n")
    code, _, err = run_send(capsys, "-d", str(tstat_root("core")))
    assert code == 2 and "config.ini: [rabbit] port = 'x'" in err  # ./config.ini comes first
    (tmp_path / "config.ini").unlink()
    monkeypatch.setattr(cli, "SYSTEM_CONFIG", tmp_path / "absent.ini")
    code, _, err = run_send(capsys, "-d", str(tstat_root("advanced")))
    assert code == 2
    assert one_error(err).endswith(
        f"no config file: neither ./config.ini nor {tmp_path / 'absent.ini'} exists "
        "(give one with -c/--config)"
    )


# -- 13.5 the two commands parse alike -----------------------------------------------------


@pytest.mark.parametrize(
    ("main", "argv", "message"),
    [
        (
            send_main,
            ["-V"],
            "tstat_send: error: unrecognized arguments: -V (see tstat_send --help)",
        ),
        (
            cull_main,
            ["-V"],
            "tstat_cull: error: unrecognized arguments: -V (see tstat_cull --help)",
        ),
        (
            send_main,
            ["--thresold", "0"],
            "unrecognized arguments: --thresold 0 (did you mean --threshold?)",
        ),
        (send_main, ["-d", ".", "--thres", "0"], "unrecognized arguments: --thres 0"),
        (
            cull_main,
            ["-d", ".", "--dry"],
            "unrecognized arguments: --dry (did you mean --dry-run?)",
        ),
        (send_main, [], "the following arguments are required: -d/--directory"),
        (cull_main, ["-d", ".", "-v", "-q"], "argument -q/--quiet: not allowed with argument -v"),
        (send_main, ["-d", ".", "--pretty"], "--pretty works only with -N/--no-transport"),
    ],
)
def test_usage_errors_name_the_bad_option(capsys, main, argv, message):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in one_error(err)


@pytest.mark.parametrize("main", [send_main, cull_main])
def test_d_names_the_same_problem_in_both_commands(capsys, tmp_path, main):
    (tmp_path / "file").write_text("")
    prog = "tstat_send" if main is send_main else "tstat_cull"
    assert main(["-d", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err == f"{prog}: error: -d {tmp_path / 'file'}: not a directory\n"
    assert main(["-d", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"{prog}: error: -d {tmp_path / 'nope'}: no such directory\n"


def test_both_commands_have_version_and_the_short_options_of_065(capsys, data_dir):
    assert cull_main(["--version"]) == 0
    assert capsys.readouterr().out == f"tstat_cull {__version__}\n"
    assert send_main(["--version"]) == 0
    assert capsys.readouterr().out == f"tstat_send {__version__}\n"
    # Short options still combine as cron lines write them (-sN: single, no transport).
    code, out, _ = run_send(
        capsys, "-sN", "-T", "0", "-S", "x", "-I", "2", "-d", str(data_dir / "full")
    )
    assert code == 0
    objects = [o for line in out.splitlines() for o in json.loads(line)]
    assert len(objects) == 506 and {o["meta"]["instance_id"] for o in objects} == {"2"}


def test_help_lists_every_exit_code(capsys):
    for main in (send_main, cull_main):
        assert main(["--help"]) == 0
        out = capsys.readouterr().out
        codes = re.findall(r"^  (\d+) ", out.split("exit codes:")[1], re.MULTILINE)
        assert codes == ["0", "1", "2", "75", "130", "141", "143"]


# -- sensor and instance ids fit every message id --------------------------------------------

# AMQP carries a message id in at most 255 bytes; it is sensor:instance:directory:log:chunk,
# with 20 bytes for the shortest directory, 16 for the longest log, 19 for a chunk number.
ID_ROOM = 255 - 20 - 16 - 19 - 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["-S", "x" * ID_ROOM],
            "-S/--sensor and -I/--instance take 197 bytes together, over "
            f"the {ID_ROOM} a message id leaves them: AMQP limits an id to 255 bytes",
        ),
        (["-S", "s", "-I", "é" * 98], "-S/--sensor and -I/--instance take 197 bytes together"),
        (
            ["-S", "site\nsensor"],
            "-S/--sensor 'site\\nsensor': control characters (a newline, "
            "a tab...) are not allowed: it goes into every flow and message id",
        ),
        (["-S", "s", "-I", "eth0\t"], "-I/--instance 'eth0\\t': control characters"),
        (["-S", "s\udcff"], "-S/--sensor 's\\udcff': not valid UTF-8 text"),
    ],
)
def test_a_sensor_or_instance_id_that_cannot_be_sent_is_a_usage_error(
    capsys, tstat_root, argv, message
):
    root = tstat_root("full")
    code, out, err = run_send(capsys, "-N", "-T", "0", "-d", str(root), *argv)
    assert code == 2
    assert out == "" and message in one_error(err)


def test_the_longest_sensor_and_instance_ids_allowed_reach_the_broker(
    capsys, broker, queue_name, tstat_root, tmp_path
):
    root = tstat_root("full")
    sensor = "s" * (ID_ROOM - 2)  # and -I 10: exactly the room
    cfg = write_config(tmp_path, rabbit_config(broker, queue_name))
    code, _, err = run_send(
        capsys, "-c", str(cfg), "-T", "0", "-S", sensor, "-I", "10", "-d", str(root)
    )
    assert code == 0, err
    ids = [props.message_id for props, _ in broker.fetch(queue_name)]
    assert len(ids) == 19
    assert f"{sensor}:10:{FIRST}:log_tcp_complete:0" in ids


# -- 13.6 a closed pipe ends quietly --------------------------------------------------------


@pytest.mark.parametrize("command", ["tstat_send", "tstat_cull"])
def test_closed_stdout_ends_quietly(data_dir, tstat_root, command):
    if command == "tstat_send":
        argv = ["-N", "-T", "0", "--include-newest", "-d", str(data_dir / "full")]
    else:
        root = tstat_root()
        for d in root.glob("*.out"):
            (d / PROCESSED_NAME).write_text("{}")
            os.utime(d / PROCESSED_NAME, (0, 0))
        argv = ["-D", "-d", str(root)]
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bin" / command), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=script_env(),
    )
    proc.stdout.read(10) if command == "tstat_send" else None
    proc.stdout.close()  # `| head` has read what it wanted
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 141
    assert err == ""


# -- 10.8 SIGTERM: one line, confirmed progress kept -------------------------------------


def test_sigterm_stops_with_one_line_and_keeps_progress(
    broker, queue_name, tstat_root, tmp_path, capsys
):
    root = tstat_root("full")
    # One message in flight at a time, and replies stop once the 9th message (the third
    # of directory 2) is out: the first directory is marked and two messages of the second
    # are confirmed by then, and the run cannot finish before the signal.
    with Proxy(hold_after_publish=9) as proxy:
        cfg = write_config(
            tmp_path, rabbit_config(broker, queue_name, port=proxy.port, window=1, timeout=2)
        )
        args = ["-T", "0", "-S", "s1", "-d", str(root)]
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "bin/tstat_send"), "-c", str(cfg), *args],
            env=script_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for(lambda: proxy.publishes >= 9, "the 9th message")
        time.sleep(0.5)  # the run waits with messages in flight
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
        err = proc.stderr.read()
    line = one_error(err)
    assert line.endswith(
        "tstat_transport ERROR: terminated (SIGTERM); the next run resumes where this one stopped"
    )
    first = broker.fetch(queue_name)
    assert (root / FIRST / PROCESSED_NAME).exists()
    assert not (root / "2026_11_24_19_22.out" / PROCESSED_NAME).exists()  # stopped before
    # The directory under way keeps its progress, whole: written on the way out, not cut.
    states = list(root.glob(f"*/{STATE_NAME}"))
    assert [state.parent.name for state in states] == ["2026_11_24_19_20.out"]
    assert json.loads(states[0].read_text())["files"]["log_tcp_complete"]["messages"] == 2
    cfg = write_config(tmp_path, rabbit_config(broker, queue_name))
    code, _, err = run_send(capsys, "-c", str(cfg), *args)
    assert code == 0, err
    ids = [p.message_id for p, _ in first + broker.fetch(queue_name)]
    assert len(set(ids)) == 19  # every message of the three complete directories arrived
    assert len(ids) - len(set(ids)) <= 1  # resent at most the window in flight


# -- 13.2 ownership traps -------------------------------------------------------------------


def as_user(name: str) -> dict:
    """subprocess arguments that run as `name` with its own groups only, as su would."""
    entry = pwd.getpwnam(name)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _python_for(user: str, where: Path) -> list[str]:
    """A command line running this checkout's Python code as `user`.

    The code, bin/ and pika are copied into `where` (readable by all): the checkout and
    its venv may sit where `user` cannot go (under /root, or in a 0700 temporary folder).
    """
    lib = where / "lib"
    shutil.copytree(REPO / "bin", where / "bin")
    shutil.copytree(REPO / "tstat_transport", lib / "tstat_transport")
    shutil.copytree(Path(pika.__file__).parent, lib / "pika")
    for path in [lib, *lib.rglob("*"), where / "bin", *(where / "bin").iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    env_path = str(lib)
    for python in (sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3"):
        try:
            probe = subprocess.run(
                [python, "-c", "import pika, tstat_transport"],
                capture_output=True,
                env={**os.environ, "PYTHONPATH": env_path},
                cwd="/",
                **as_user(user),
            )
        except OSError:  # cannot even be executed by that user
            continue
        if probe.returncode == 0:
            return ["env", f"PYTHONPATH={env_path}", python]
    pytest.skip(f"no Python that {user} may run")  # a failure under CI (conftest)


@pytest.fixture
def shared_tmp():
    """A directory every user can reach (tmp_path is root's alone)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user (as in CI)")
    path = Path(tempfile.mkdtemp(prefix="tstat-cli-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_a_lock_file_left_by_root_names_the_fix(shared_tmp, data_dir):
    root = shared_tmp / "root"
    shutil.copytree(data_dir / "full", root)
    subprocess.run(["chown", "-R", "nobody:", str(root)], check=True)
    python = _python_for("nobody", shared_tmp)
    command = [*python, "-m", "tstat_transport", "-N", "-T", "0", "-d", str(root)]
    # A root run left the lock behind, 0644 as it creates it: the service user still runs.
    lock = root / LOCK_NAME
    lock.touch(mode=0o644)
    os.chown(lock, 0, 0)
    cull = [*python, str(shared_tmp / "bin/tstat_cull"), "-d", str(root)]
    done = subprocess.run(cull, **as_user("nobody"), capture_output=True, text=True, cwd="/")
    assert (done.returncode, done.stderr) == (0, "")
    # A lock file it cannot even read (0600 root): one line with the chown that fixes it.
    lock.chmod(0o600)
    done = subprocess.run(cull, **as_user("nobody"), capture_output=True, text=True, cwd="/")
    assert done.returncode == 1
    assert one_error(done.stderr).endswith(
        f"cannot open lock file {lock}: Permission denied ({lock} belongs to root, this run "
        f"is nobody: as root, `chown nobody: {lock}`)"
    )
    assert (
        subprocess.run(command, **as_user("nobody"), capture_output=True).returncode == 0
    )  # -N: no lock


def test_root_warns_in_a_root_owned_by_another_user(
    shared_tmp, data_dir, capsys, broker, queue_name
):
    root = shared_tmp / "root"
    shutil.copytree(data_dir / "full", root)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    os.chown(root, 65534, 65534)
    warning = (
        f"running as root in {root}, which belongs to nobody: files this run creates will "
        "belong to root; run as that user instead (sudo -u nobody ...)"
    )
    cfg = write_config(shared_tmp, rabbit_config(broker, queue_name))
    assert send_main(["-c", str(cfg), "-T", "0", "-d", str(root)]) == 0
    assert one_error(capsys.readouterr().err).endswith(warning)
    assert len(broker.fetch(queue_name)) == 19  # a warning, not a refusal
    assert cull_main(["-d", str(root)]) == 0
    assert one_error(capsys.readouterr().err).endswith(warning)
    assert send_main(["-N", "-d", str(root)]) == 0  # -N writes nothing there: no warning
    assert capsys.readouterr().err == ""


def test_deploy_recipe_makes_a_config_the_service_user_can_read(shared_tmp):
    """doc/deploy.md's `install` lines, run as written but below a scratch prefix: the
    service user must be able to read the config they make."""
    doc = (REPO / "doc/deploy.md").read_text()
    recipe = doc.split("## Install", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    lines = recipe.replace("\\\n", " ").splitlines()
    steps = [line for line in lines if line.startswith(("install ", "TSTAT_USER="))]
    assert len(steps) == 3
    etc = shared_tmp / "etc/tstat_transport"
    share = shared_tmp / "opt/share/doc/tstat_transport"
    share.mkdir(parents=True)
    shutil.copy(REPO / "config.ini.example", share / "config.ini.example")
    script = (
        "\n".join(steps)
        .replace("/etc/tstat_transport", str(etc))
        .replace("/opt/tstat_transport/share/doc/tstat_transport", str(share))
        .replace("TSTAT_USER=tstat", "TSTAT_USER=nobody")
    )
    (shared_tmp / "etc").mkdir()
    (shared_tmp / "etc").chmod(0o755)
    subprocess.run(["sh", "-e", "-c", script], check=True)
    config = etc / "config.ini"
    probe = subprocess.run(["head", "-1", str(config)], **as_user("nobody"), capture_output=True)
    assert probe.returncode == 0, probe.stderr
    assert config.stat().st_mode & 0o007 == 0  # others may not read a file holding a password


# -- 13.7 cron and systemd files ------------------------------------------------------------


def test_crontab_names_commands_cron_can_find():
    commands = []
    for line in (REPO / "contrib/crontab.example").read_text().splitlines():
        if line.startswith("#") or "=" in line.split(" ")[0] or not line.strip():
            continue
        commands.append(line.split()[6])
    # Both jobs, named in full (where deploy.md links them): a filter that skipped every
    # line must not pass.
    assert commands == ["/usr/local/bin/tstat_send", "/usr/local/bin/tstat_cull"]
    assert "ln -sf /opt/tstat_transport/bin/tstat_send" in (REPO / "doc/deploy.md").read_text()


def test_units_documentation_is_installed_with_the_package():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"share/doc/tstat_transport" = [' in pyproject
    for unit in ("tstat-send.service", "tstat-cull.service"):
        text = (REPO / "contrib" / unit).read_text()
        url = re.search(r"^Documentation=file://(\S+)$", text, re.MULTILINE).group(1)
        prefix = "/opt/tstat_transport/share/doc/tstat_transport/"  # the venv of deploy.md
        assert url.startswith(prefix) and (REPO / "doc" / url[len(prefix) :]).is_file()
        assert "143" in re.search(r"^SuccessExitStatus=(.*)$", text, re.MULTILINE).group(1)


# -- 13.8 small things a person notices ------------------------------------------------------


def test_log_lines_carry_a_time_zone(capsys, data_dir):
    code, _, err = run_send(capsys, "-N", "-T", "0", "-v", "-d", str(data_dir / "full"))
    assert code == 0
    lines = err.splitlines()
    assert len(lines) >= 4  # -v: a line per directory and the summary
    for line in lines:
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d tstat_transport", line), line


def test_changed_threshold_is_told_in_mb_and_one_message_is_singular(
    capsys, broker, queue_name, tstat_root, tmp_path
):
    root = tstat_root("full")
    for name in ("2026_11_24_19_20.out", "2026_11_24_19_22.out"):
        (root / name / PROCESSED_NAME).write_text("{}")
    # A run with -T 0 had started the first directory (nothing confirmed yet).
    state = {
        "version": 1,
        "files": {},
        "options": {"threshold_bits": 0.0, "sensor": "s1", "instance": 0, "transport": "rabbit"},
    }
    (root / FIRST / STATE_NAME).write_text(json.dumps(state))
    cfg = write_config(tmp_path, rabbit_config(broker, queue_name))
    code, _, err = run_send(capsys, "-c", str(cfg), "-T", "1000", "-S", "s1", "-v", "-d", str(root))
    assert code == 0, err
    assert (
        f"{root / FIRST}: options changed since this directory was started "
        "(-T/--threshold 0 MB -> 1000 MB); finishing it with the options it was started with"
    ) in err
    assert f"{root / FIRST}: done, 6 messages, 253 rows" in err
    # One message: singular.
    root2 = tstat_root("core")
    code, _, err = run_send(
        capsys, "-c", str(cfg), "-T", "1000", "-S", "s1", "-v", "-d", str(root2)
    )
    assert code == 0, err
    assert re.search(r": done, 1 message, \d+ rows", err), err
