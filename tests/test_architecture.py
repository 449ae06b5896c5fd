"""The package's shape: no import cycles, layers that follow the data flow, one place for settings.

Read from the source with `ast` (nothing is imported), so a violation names the file and line.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

from .conftest import ROOT

PKG = ROOT / "src" / "autopdm"
# third-party packages that may be imported inside a function: optional extras, or heavy enough that
# commands which do not use them should not pay for the import
LAZY_OK = {"dask", "distributed", "obd", "matplotlib", "evidently", "mlflow", "lightgbm", "sklearn", "bentoml",
           "cantools", "opendbc", "asammdf", "fsspec", "can", "isotp", "playwright", "standardwebhooks",
           "serial"}  # pyserial comes with the optional obd extra
# first-party modules that wrap an optional licence boundary: python-OBD is GPL-2.0-only
LAZY_FIRST_PARTY = {"autopdm.ingest.obd"}
RUNTIME = ("ingest", "pipeline", "modeling", "serving", "delivery")


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """(line, imported module, inside a function?) for every import statement of a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    this = _module(path)
    in_func: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_func.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, id(node) in in_func
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = this.split(".")
                base = base if path.name == "__init__.py" else base[:-1]
                mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [f"{mod}.{a.name}" for a in node.names]
            submodules = [n for n in names if (PKG.parent / (n.replace(".", "/") + ".py")).exists()
                          or (PKG.parent / n.replace(".", "/")).is_dir()]
            # `from autopdm.x import module` imports that module (and its package, which is not the point)
            for n in submodules or [mod]:
                yield node.lineno, n, id(node) in in_func


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PKG.rglob("*.py")}
    graph = {m: set() for m in modules}
    for m, p in modules.items():
        for _, imp, _ in _imports(p):
            if imp in modules and imp != m:
                graph[m].add(imp)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_cycle_detector_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_imports_inside_functions_only_for_heavy_or_optional_packages():
    bad = []
    for p in sorted(PKG.rglob("*.py")):
        for line, mod, in_func in _imports(p):
            if not in_func:
                continue
            top = mod.split(".")[0]
            if top == "autopdm" and mod not in LAZY_FIRST_PARTY:
                bad.append(f"{p.relative_to(ROOT)}:{line}: {mod} (first-party: import at module level)")
            elif top != "autopdm" and top not in LAZY_OK:
                bad.append(f"{p.relative_to(ROOT)}:{line}: {mod} (light package: import at module level)")
    assert not bad, "\n".join(bad)


def test_runtime_path_never_imports_the_simulators():
    graph = _graph()
    bad = [f"{m} imports {n}" for m, deps in graph.items() if m.split(".")[1:2] and m.split(".")[1] in RUNTIME
           for n in deps if n.startswith("autopdm.sim")]
    assert not bad, bad


def test_settings_are_read_in_one_place():
    pattern = re.compile(r"""(os\.environ(\.get)?|os\.getenv)\s*[\[(]\s*["']AUTOPDM_""")
    bad = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in PKG.rglob("*.py") if p.name != "config.py"
           for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not bad, "read AUTOPDM_* through autopdm.config.Settings:\n" + "\n".join(bad)


def test_repository_stands_alone():
    """Nothing shipped cites the design notes the project was started from: docs/ says it in its own words."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    here = Path(__file__).name
    pattern = re.compile(r"\.\./shared|DESIGN\.md|STACK_NOTES|/work/shared")
    bad = []
    for f in files:
        p = ROOT / f
        if f.endswith(here) or p.suffix in (".parquet", ".png", ".csv") or not p.is_file():
            continue
        for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                bad.append(f"{f}:{i}: {line.strip()[:100]}")
    assert not bad, "\n".join(bad)


def test_every_setting_is_documented_in_the_readme():
    from autopdm.config import ENV_PREFIX, Settings

    readme = (ROOT / "README.md").read_text()
    missing = []
    for name, field in Settings.model_fields.items():
        var = field.validation_alias if isinstance(field.validation_alias, str) else ENV_PREFIX + name.upper()
        if f"| `{var}` |" not in readme:
            missing.append(var)
        assert field.description, f"{var}: no description"
    assert not missing, f"settings missing from the README's table: {missing}"
