"""The docs cannot fall behind the code: options, config keys and message fields are documented."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from tstat_transport.cli import build_send_parser
from tstat_transport.transports import BUILTIN, get_transport

REPO = Path(__file__).resolve().parents[1]


def long_options(parser) -> set[str]:
    options = {opt for action in parser._actions for opt in action.option_strings}
    return options - {"-h", "--help"}


def test_every_tstat_send_option_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    missing = {o for o in long_options(build_send_parser()) if f"`{o}" not in readme}
    assert not missing, f"README.md does not document {sorted(missing)}"


def test_every_tstat_cull_option_is_in_the_readme():
    from tstat_transport.cli import build_cull_parser as build_parser

    readme = (REPO / "README.md").read_text()
    missing = {o for o in long_options(build_parser()) if f"`{o}" not in readme}
    assert not missing, f"README.md does not document tstat_cull {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_config_key_is_in_the_example(name):
    example = (REPO / "config.ini.example").read_text()
    sections = re.findall(r"^\[([^\]]+)\]", example, re.MULTILINE)
    for section, keys in get_transport(name).config_sections.items():
        assert section in sections, f"config.ini.example lacks [{section}]"
        body = re.split(rf"^\[{re.escape(section)}\]$", example, flags=re.MULTILINE)[1]
        body = re.split(r"^\[", body, flags=re.MULTILINE)[0]
        for key in keys or ():
            # Set, or shown commented out with its default.
            assert re.search(rf"^[#; ]*{re.escape(key)} *=", body, re.MULTILINE), (
                f"config.ini.example: [{section}] {key} is not documented"
            )


def test_every_field_sent_is_in_the_message_format(capsys, data_dir):
    from tstat_transport.cli import send_main

    assert send_main(["-N", "-T", "0", "--include-newest", "-d", str(data_dir / "full")]) == 0
    objects = [o for line in capsys.readouterr().out.splitlines() for o in json.loads(line)]
    doc = (REPO / "doc/message-format.md").read_text()
    keys = {k for o in objects for k in [*o, *o["values"], *o["meta"]]}
    missing = {k for k in keys if f"`{k}`" not in doc}
    assert not missing, f"doc/message-format.md does not document {sorted(missing)}"


def test_readme_starts_with_the_two_fresh_machine_commands():
    readme = (REPO / "README.md").read_text()
    block = readme.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert commands[0].endswith("tstat_send -N -T 0 --include-newest -d examples/tstat")
    assert commands[1] == "bash .ci/run"
    assert "python -m pytest" in (REPO / ".ci/run").read_text()


def test_readme_first_command_prints_every_example_flow_in_a_fresh_clone(
    capsys, tmp_path, monkeypatch
):
    """A clone dates every file now, inside the settle period: the first command must still
    print the flows of all four example directories, and say nothing else."""
    from tstat_transport.cli import send_main

    readme = (REPO / "README.md").read_text()
    block = readme.split("```sh", 1)[1].split("```", 1)[0]
    first = next(line for line in block.splitlines() if line and not line.startswith("#"))
    command = first.split("/tstat_send ", 1)[1].split()
    clone = tmp_path / "clone"
    # copy, not copy2: the files get the time of the copy, as a checkout gives them.
    shutil.copytree(REPO / "examples", clone / "examples", copy_function=shutil.copy)
    newest = max(p.stat().st_mtime for p in (clone / "examples/tstat").rglob("log_*"))
    assert time.time() - newest < 60
    monkeypatch.chdir(clone)
    assert send_main(command) == 0
    out, err = capsys.readouterr()
    assert err == ""
    flows = [o for line in out.splitlines() for o in json.loads(line)]
    assert len(flows) == 506 + 490 + 634 + 368  # every flow of the four directories, -T 0


def test_readme_exit_codes_are_those_of_the_help():
    from tstat_transport.cli import CULL_EXIT_CODES_HELP, EXIT_CODES_HELP

    readme = (REPO / "README.md").read_text()
    table = readme.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| (\d+) \|", table, re.MULTILINE)
    in_help = re.findall(r"^  (\d+) ", EXIT_CODES_HELP, re.MULTILINE)
    assert sorted(documented, key=int) == sorted(in_help, key=int)
    cull_codes = re.findall(r"^  (\d+) ", CULL_EXIT_CODES_HELP, re.MULTILINE)
    assert f"({', '.join(sorted(cull_codes, key=int))})" in readme  # "Its exit codes are ..."
