"""The mutation check's list stays in step with the code (the check itself, `make mutation-check`,
runs before a release; this only reads files): every entry's old text is in its file exactly once,
the mutation changes something, and the tests it names exist."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
mutation_check = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mutation_check  # dataclasses look their module up there
spec.loader.exec_module(mutation_check)
MUTATIONS = mutation_check.MUTATIONS


def test_names_are_unique():
    names = [m.name for m in MUTATIONS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("m", MUTATIONS, ids=lambda m: m.name)
def test_old_text_is_found_once_and_the_named_tests_exist(m):
    text = (ROOT / m.file).read_text()
    assert text.count(m.old) == 1, f"{m.name}: old text found {text.count(m.old)} times in {m.file}: update the entry"
    assert m.new != m.old
    for t in m.tests:
        path, _, node = t.partition("::")
        assert (ROOT / path).is_file(), t
        if node:
            func = re.sub(r"\[.*\]$", "", node)
            assert re.search(rf"^def {re.escape(func)}\(", (ROOT / path).read_text(), flags=re.M), t
