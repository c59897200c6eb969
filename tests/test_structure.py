"""The package's layers point one way: a test that fails on an import cycle or an upward import.

data and model sit below train and evaluate (which do not import each other); export, chat and
quickstart above them; cli on top. errors, files, config, rundir and plan are used by all.
Imports inside functions are kept to cli.py (its start-up path); elsewhere they would hide a cycle.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tunewise"
# the layer of every package or top-level module, and the layers it may import
BASE = {"errors", "files", "config", "rundir", "plan", "device", "__init__"}
ALLOWED = {
    "base": {"base"},
    "data": {"base", "data"},
    "model": {"base", "model"},
    "train": {"base", "data", "model", "train"},
    "evaluate": {"base", "data", "model", "evaluate"},
    "export": {"base", "data", "model", "evaluate", "export"},
    "app": {"base", "data", "model", "train", "evaluate", "export", "app"},  # chat, quickstart, advise
    "cli": {"base", "data", "model", "train", "evaluate", "export", "app", "cli"},
}


def layer(module: str) -> str:
    top = module.split(".")[0]
    if top in BASE:
        return "base"
    if top in ALLOWED:
        return top
    return "cli" if top == "cli" else "app"


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported tunewise module relative to the package, inside a function?) for one file."""
    return imports_in(path.read_text(), path.relative_to(SRC).with_suffix("").parts)


def imports_in(source: str, module: tuple[str, ...]) -> list[tuple[str, bool]]:
    """Every import form the ast can show: `import a.b [as c]`, `from a import b`, `from . import b`,
    `from ..a import b`, and importlib.import_module("a") / __import__("a") with a literal name."""
    tree = ast.parse(source)
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
              for n in ast.walk(f) if n is not f}
    found = []
    for node in ast.walk(tree):
        for name in _absolute_names(node, ("tunewise", *module[:-1])):
            if name.startswith("tunewise."):  # the package itself (`from .. import x`) is not a layer
                found.append((name.removeprefix("tunewise."), id(node) in nested))
    return found


def _absolute_names(node: ast.AST, package: tuple[str, ...]) -> list[str]:
    """The absolute module names one statement or call imports (`from X import name` gives X.name
    too: name may be a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
        target = ".".join(part for part in (base, node.module) if part)
        return [target, *(f"{target}.{a.name}" for a in node.names if a.name != "*")]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
            return [node.args[0].value]
    return []


def test_the_import_finder_sees_every_form():
    """Each form inside a function in data/masking.py, the way a stray upward import would look."""
    forms = ["import tunewise.train.loop", "import tunewise.train.loop as loop", "from tunewise import train",
             "from tunewise.train import loop", "from ..train import loop", "from .. import train",
             "importlib.import_module('tunewise.train.loop')", "__import__('tunewise.train')"]
    for form in forms:
        found = imports_in(f"def f():\n    {form}\n", ("data", "masking"))
        assert found and all(layer(t) == "train" and inside for t, inside in found), (form, found)
        at_top = imports_in(f"{form}\n", ("data", "masking"))
        assert at_top and not any(inside for _, inside in at_top), (form, at_top)
    assert imports_in("import torch\nfrom collections import deque\n", ("data", "masking")) == []


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down_the_layers(path):
    own = layer(".".join(path.relative_to(SRC).with_suffix("").parts))
    for target, _ in imports(path):
        assert layer(target) in ALLOWED[own], f"{own} module {path.name} imports {target} ({layer(target)})"


@pytest.mark.parametrize("path", [p for p in FILES if p.name != "cli.py"], ids=lambda p: str(p.relative_to(SRC)))
def test_no_imports_inside_functions_outside_the_cli(path):
    assert [t for t, inside in imports(path) if inside] == []


def test_no_package_import_cycle():
    """Between packages (data, model, train, evaluate, export) and top-level modules."""
    edges = {}
    for path in FILES:
        unit = path.relative_to(SRC).parts[0].removesuffix(".py")
        edges.setdefault(unit, set()).update(t.split(".")[0] for t, _ in imports(path))
    edges = {u: {t for t in ts if t in edges and t != u} for u, ts in edges.items()}
    state = {}

    def visit(unit, stack):
        state[unit] = "open"
        for nxt in sorted(edges[unit]):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[unit] = "done"

    for unit in sorted(edges):
        if unit not in state:
            visit(unit, [unit])


TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("path", sorted(TESTS.glob("*.py")), ids=lambda p: p.name)
def test_test_modules_import_no_test_module_nor_conftest(path):
    """Shared helpers are conftest fixtures: importing conftest directly can load it a second time under
    another name, and importing a test module ties its tests to another module's internals."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "tests"):
            found.append("." * node.level + (node.module or "") + ": " + ", ".join(a.name for a in node.names))
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "tests"]
    assert found == [], f"{path.name} imports from the tests package: {found}"
