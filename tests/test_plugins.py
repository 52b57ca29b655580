"""Third-party transports: the example plugin in tests/plugin_pkg, installed for real with pip.

Each check runs in a fresh interpreter whose PYTHONPATH holds the pip target and this
checkout, as a sensor with the plugin installed next to tstat_transport would be.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SOURCE = Path(__file__).parent / "plugin_pkg"


def can_build_offline() -> bool:
    """setuptools builds a wheel without fetching anything: from 70.1 on, or with `wheel`."""
    import setuptools

    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """A directory into which pip installed the example plugin."""
    if not can_build_offline():
        message = "building tests/plugin_pkg offline needs wheel: pip install -e '.[test]'"
        pytest.skip(message)  # a failure under CI (conftest)
    work = tmp_path_factory.mktemp("plugin")
    # A copy, because setuptools writes build/ and *.egg-info/ beside the sources.
    source = shutil.copytree(PLUGIN_SOURCE, work / "source")
    site = work / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    result = subprocess.run(
        [*pip, *offline, "--target", str(site), str(source)], capture_output=True, text=True
    )
    assert result.returncode == 0, f"pip could not install tests/plugin_pkg:\n{result.stderr}"
    return site


def run_python(code: str, *path: Path, cwd: Path) -> dict:
    """Run `code` in a new interpreter with `path` and this checkout on PYTHONPATH;
    return the JSON object it printed last."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (*path, REPO))}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_plugin_is_found_and_delivers(plugin_site, tmp_path, data_dir):
    flows = json.loads((data_dir / "expected-original/full/2026_11_24_19_22.out.json").read_text())
    bodies = [json.dumps(flows[i : i + 100], indent=1) for i in range(0, 300, 100)]
    (tmp_path / "bodies.json").write_text(json.dumps(bodies))
    (tmp_path / "config.ini").write_text("[jsonl]\npath = flows.jsonl\nwindow = 2\n")

    seen = run_python(
        """
        import json
        import sys
        from pathlib import Path
        from tstat_transport.config import ConfigFile, Settings
        from tstat_transport.transports import Message, available, get_transport

        cls = get_transport("jsonl")
        transport = cls(Settings(directory=Path(".")), ConfigFile(Path("config.ini")))
        confirmed, after_each = [], []
        transport.on_confirm = lambda message: confirmed.append(message.message_id)
        with transport:
            for n, body in enumerate(json.loads(Path("bodies.json").read_text())):
                transport.publish(Message(body.encode(), 100, f"id-{n}", 0))
                after_each.append(list(confirmed))
            transport.flush()
        print(json.dumps({
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "file": sys.modules[cls.__module__].__file__,
            "registered": available()["jsonl"],
            "describe": transport.describe(),
            "after_each": after_each,
            "confirmed": confirmed,
        }))
        """,
        plugin_site,
        cwd=tmp_path,
    )

    assert seen["class"] == "tstat_jsonl.JsonlTransport"
    assert Path(seen["file"]).parent == plugin_site
    assert seen["registered"] == "tstat_jsonl:JsonlTransport"
    assert seen["describe"] == "jsonl file flows.jsonl"
    # A window of 2: the second publish waits for the disk, the third is confirmed by flush.
    assert seen["after_each"] == [[], ["id-0", "id-1"], ["id-0", "id-1"]]
    assert seen["confirmed"] == ["id-0", "id-1", "id-2"]
    lines = (tmp_path / "flows.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [flows[i : i + 100] for i in range(0, 300, 100)]


def test_unknown_name_suggests_the_plugin(plugin_site, tmp_path):
    seen = run_python(
        """
        import json
        from tstat_transport.errors import ConfigError
        from tstat_transport.transports import get_transport

        try:
            get_transport("jsnol")
        except ConfigError as exc:
            print(json.dumps({"error": str(exc), "exit_code": exc.exit_code}))
        """,
        plugin_site,
        cwd=tmp_path,
    )

    assert seen["error"].startswith("unknown transport 'jsnol' (did you mean 'jsonl'?); available:")
    assert "http" in seen["error"] and "jsonl" in seen["error"]
    assert seen["exit_code"] == 2


def test_plugin_cannot_take_over_a_builtin_name(plugin_site, tmp_path):
    # A second distribution, as pip would lay it out, that claims the built-in name "http".
    hijacker = tmp_path / "hijacker"
    dist_info = hijacker / "tstat_hijack-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: tstat-hijack\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[tstat_transport.transports]\nhttp = tstat_jsonl:JsonlTransport\n"
    )

    seen = run_python(
        """
        import json
        from importlib.metadata import entry_points
        from tstat_transport.transports import available, get_transport

        claims = [ep.value for ep in entry_points(group="tstat_transport.transports")
                  if ep.name == "http"]
        print(json.dumps({
            "claims": claims,
            "registered": available()["http"],
            "class": get_transport("http").__qualname__,
        }))
        """,
        hijacker,
        plugin_site,
        cwd=tmp_path,
    )

    assert "tstat_jsonl:JsonlTransport" in seen["claims"]  # the claim is really there
    assert seen["registered"] == "tstat_transport.transports.http:HttpTransport"
    assert seen["class"] == "HttpTransport"
