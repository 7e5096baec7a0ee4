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
    files = _files()
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
        # a module's own packages' __init__ are not dependencies worth a cycle
        parents = {name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1)}
        graph[name] = {d for d in deps if d in files and d != name and d not in parents}
    return graph


def _name(path: Path) -> str:
    """The dotted module name of a file under ROOT (a package's ``__init__`` is the package)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_subpackage_is_seen() -> None:
    assert "tools.bench.command" in _modules()  # the walk reaches into subpackages


def test_every_module_has_one_job_under_600_lines() -> None:
    """Files stay small enough to read in one sitting (the target is ~500 lines)."""
    long = {
        name: count
        for name, path in _files().items()
        if (count := len(path.read_text().splitlines())) > 600
    }
    assert long == {}


def _files() -> dict[str, Path]:
    return {_name(path): path for pkg in PACKAGES for path in (ROOT / pkg).rglob("*.py")}


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
