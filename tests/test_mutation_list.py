"""The mutation check's list follows the code: every snippet it breaks is still there, and
every test it names still exists. A change that moves the code behind a promise fails
here, in the suite everyone runs, and not only in CI's mutation step.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation_run", REPO / "tests/mutation/run.py")
assert _spec is not None and _spec.loader is not None
run = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = run  # dataclasses look their module up while it loads
_spec.loader.exec_module(run)


@pytest.mark.parametrize("mutation", run.MUTATIONS, ids=lambda m: m.id)
def test_each_mutation_still_finds_its_code_and_tests(mutation):
    text = (REPO / mutation.file).read_text()
    assert text.count(mutation.original) == mutation.count, (
        f"{mutation.file} no longer holds the code of mutation {mutation.id!r} "
        f"{mutation.count} time(s): update it in tests/mutation/run.py"
    )
    for test in mutation.tests:
        path, _, name = test.partition("::")
        source = (REPO / path).read_text()
        function = name.split("[")[0]
        assert re.search(rf"^def {re.escape(function)}\(", source, re.M), (
            f"mutation {mutation.id!r} names {test}, which no longer exists"
        )


def test_mutation_ids_are_unique():
    ids = [m.id for m in run.MUTATIONS]
    assert len(ids) == len(set(ids)) >= 39
