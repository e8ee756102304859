"""The package's layers: each module imports only modules below it, function-level imports included.

The graph is read from the source with ``ast`` (every ``import`` and ``from ... import``,
wherever it stands, except inside ``if TYPE_CHECKING:`` blocks, which never run). A lazy
import that points up is still an arrow up, so it counts. The checks: no import cycle, every
module placed in one of the layers of docs/architecture.md, no import from a lower layer to
a higher one, and the rules that matter most named on their own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import seqapp

PACKAGE = Path(seqapp.__file__).resolve().parent

# From the bottom up; a module may import its own layer or those below (docs/architecture.md).
LAYERS = {
    "base": {"seqapp", "version", "errors", "files", "config", "datafiles", "backend", "faults", "distribute",
             "progress"},
    "shared": {"text", "text_graph", "layers", "metrics", "plots", "sampling", "pipeline", "litert", "fastrnn",
               "serving", "embeddings"},
    "runs": {"runs", "provenance"},
    "tasks": {"tasks", "tasks.*"},
    "flow": {"checkpoint", "drafts", "training", "engines", "finetune", "tensorboard_log"},
    "faces": {"cli", "__main__", "exporting", "serve", "serve_service", "serve_app", "serve_batching", "serve_guard",
              "serve_metrics", "launch", "listing", "configdoc", "tune", "api", "interactive", "completion",
              "progress_bar"},
}


def module_names(root: Path) -> dict[str, Path]:
    """Dotted names below ``seqapp`` (``seqapp`` itself for the package) -> source files."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts) or "seqapp"] = path
    return names


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every dotted name ``tree`` imports from seqapp (relative imports resolved), outside TYPE_CHECKING."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join(["seqapp", *[p for p in package if p != "seqapp"], *([base] if base else [])])
            found.update(f"{base}.{alias.name}" for alias in node.names)  # a name, or a submodule
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name == "seqapp" or name.startswith("seqapp.")}


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted import name lands in: ``from seqapp.tasks import textgen`` is the module
    ``tasks.textgen``, ``from seqapp.tasks import REGISTRY`` the package ``tasks``."""
    parts = name.split(".")[1:]
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the seqapp modules it imports (itself and the bare ``seqapp`` package left out)."""
    modules = module_names(root)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = set()
        for imported in imported_names(tree, name, path.name == "__init__.py"):
            target = resolve(imported, modules)
            if target and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def layer_of(module: str) -> int:
    for rank, members in enumerate(LAYERS.values()):
        if module in members or (module.startswith("tasks.") and "tasks.*" in members):
            return rank
    raise KeyError(module)


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    names = list(LAYERS)
    return [f"{source} ({names[layer_of(source)]}) imports {target} ({names[layer_of(target)]})"
            for source, targets in sorted(graph.items()) for target in sorted(targets)
            if layer_of(target) > layer_of(source)]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_package_has_no_import_cycle(graph):
    assert cycles(graph) == []


def test_every_module_has_a_layer(graph):
    unplaced = []
    for module in graph:
        try:
            layer_of(module)
        except KeyError:
            unplaced.append(module)
    assert unplaced == [], "add new modules to LAYERS here and to docs/architecture.md"


def test_no_module_imports_a_layer_above_its_own(graph):
    assert layer_violations(graph) == []


def test_the_rules_that_matter_most(graph):
    def imports(module: str, prefix: str) -> list[str]:
        return sorted(t for t in graph[module] if t == prefix or t.startswith(prefix + "."))

    assert imports("runs", "tasks") == [], "runs knows no task: callers pass the registry's config reader"
    assert imports("exporting", "tasks") == [], "exporting writes what a Serving gives, for any task"
    for module in graph:
        if module.startswith("serve"):
            assert "cli" not in graph[module], f"{module} imports cli"
        if module.startswith("tasks"):
            assert not {"cli", "training"} & graph[module], f"{module} imports cli or training"


def test_the_checks_catch_what_they_guard_against(graph):
    """Each check fails on the mistake it exists for: a registry import in runs.py (as in 0.1.0,
    where runs.load resolved configs through seqapp.tasks) closes a cycle through the tasks."""
    broken = {module: set(targets) for module, targets in graph.items()}
    broken["runs"].add("tasks")
    assert any({"runs", "tasks"} <= set(cycle) for cycle in cycles(broken))
    assert "runs (runs) imports tasks (tasks)" in layer_violations(broken)
    broken = {module: set(targets) for module, targets in graph.items()}
    broken["tasks.textgen"].add("training")  # a lazy import of the flow from a task
    assert cycles(broken) and layer_violations(broken)


def test_function_level_and_type_checking_imports_are_read_as_they_run(tmp_path):
    package = tmp_path / "seqapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from seqapp import high\n")
    (package / "high.py").write_text("def later():\n    from . import low\n    return low\n")
    assert import_graph(package) == {"seqapp": set(), "low": set(), "high": {"low"}}
