"""The layers hold: `tools` -> `gateway`/`replicas` -> `eventlog`, imports only downward (the
gateway may use the replicas, never the reverse), and no import cycle anywhere, counting
imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("eventlog", "replicas", "gateway", "tools")
#: what each package may import from the others
ALLOWED = {
    "eventlog": set(),
    "replicas": {"eventlog"},
    "gateway": {"eventlog", "replicas"},
    "tools": {"eventlog", "replicas", "gateway"},
}


def _modules() -> dict[str, set[str]]:
    files = {
        (f"{pkg}.{path.stem}" if path.stem != "__init__" else pkg): path
        for pkg in PACKAGES
        for path in (ROOT / pkg).glob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] in PACKAGES:
                    for alias in node.names:
                        sub = f"{node.module}.{alias.name}"
                        deps.add(sub if sub in files else node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.split(".")[0] in PACKAGES)
        # a module's own package __init__ is not a dependency worth a cycle
        graph[name] = {d for d in deps if d in files and d != name and d != name.split(".")[0]}
    return graph


def test_imports_go_only_downward() -> None:
    wrong = [
        f"{name} imports {dep}"
        for name, deps in _modules().items()
        for dep in deps
        if dep.split(".")[0] != name.split(".")[0]
        and dep.split(".")[0] not in ALLOWED[name.split(".")[0]]
    ]
    assert wrong == []


def test_there_is_no_import_cycle() -> None:
    graph = _modules()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert cycles == []
