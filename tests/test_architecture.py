"""The layering stays as designed: theory <- pruning <- benchmarks <- checks, and no module imports itself back.

Every import in the four packages is read from the source (``ast``), including imports inside functions, which
hide a dependency as well as a top-level one does."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"theory": 0, "pruning": 1, "benchmarks": 2, "checks": 3}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    return {_module_name(p): p for pkg in LAYERS for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, module: str, known):
    """``(line, imported project module)`` for every import of a project module in ``path``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from pkg import mod" names the module pkg.mod when there is one
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out += [(node.lineno, n) for n in names if n.split(".")[0] in LAYERS]
    return out


def test_every_import_goes_down_the_layers():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        own = LAYERS[name.split(".")[0]]
        upward += [f"{path.relative_to(ROOT)}:{line} imports {imp}" for line, imp in _imports(path, name, modules)
                   if LAYERS[imp.split(".")[0]] > own]
    assert upward == [], "imports that go up the layers (theory <- pruning <- benchmarks <- checks):\n" + \
        "\n".join(upward)


def test_no_module_imports_itself_back():
    modules = _modules()
    graph = {name: {imp for _, imp in _imports(path, name, modules) if imp in modules and imp != name}
             for name, path in modules.items()}
    # a package's __init__ re-exports its modules; an edge into it from its own modules would be a cycle
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycles == [], "import cycles between modules:\n" + "\n".join(cycles)


@pytest.mark.parametrize("source, expected", [
    ("from pruning import x", ["pruning"]),
    ("def f():\n    from checks.registry import REGISTRY", ["checks.registry"]),
    ("from . import covariance", ["pruning.covariance"]),
])
def test_the_walker_sees_hidden_and_relative_imports(tmp_path, source, expected):
    # the test above can only fail if the walker finds imports inside functions and relative ones
    path = tmp_path / "pruning" / "probe.py"
    path.parent.mkdir()
    path.write_text(source)
    known = {"pruning", "pruning.covariance", "checks.registry"}
    assert [imp for _, imp in _imports(path, "pruning.probe", known)] == expected
