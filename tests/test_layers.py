"""The project's layers, read from the source (ast, imports inside functions included):
the core never imports figure_scripts (a leaf built on the core), and no project module
imports itself through others (no import cycles)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = {".venv", "data", "logs", "docs", "configs", ".git", "__pycache__"}
LEAVES = ("figure_scripts", "tests", "benchmarks")  # may import the core; the core not them


def project_files() -> dict[str, Path]:
    """{module name: file} of every .py file of the project."""
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if SKIPPED & set(parts):
            continue
        names = list(parts[:-1]) + ([] if path.name == "__init__.py" else [path.stem])
        if names:
            modules[".".join(names)] = path
    return modules


def imported(path: Path, module: str, modules) -> set[str]:
    """The project modules that ``module`` (the file ``path``) imports anywhere in it."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()

    def resolve(name: str) -> None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([p for p in anchor if p] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}" if base else alias.name
                resolve(full if full in modules else base)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_files()
    return {name: imported(path, name, modules) for name, path in modules.items()}


def is_leaf(module: str) -> bool:
    return module.split(".")[0] in LEAVES


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "causal_controller.CausalController" in graph["saved_run"]  # inside __init__
    assert "label_stats" in graph["figure_scripts.pairwise"]


def test_the_core_never_imports_figure_scripts():
    graph = import_graph()
    wrong = {module: sorted(m for m in targets if m.split(".")[0] == "figure_scripts")
             for module, targets in graph.items() if not is_leaf(module)}
    wrong = {module: targets for module, targets in wrong.items() if targets}
    assert not wrong, f"core modules import figure_scripts: {wrong}"


def test_no_import_cycles():
    graph = import_graph()
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
