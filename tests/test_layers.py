"""The architecture's rules, checked on every module of the three packages: imports run one way
(pipelines -> actors -> orchestra_ray), the library imports no Ray anywhere (so all of it is
importable and testable without a cluster), no two modules import each other (directly or round a
cycle), and no source file grows past ~400 lines (one concept per file)."""

import ast
import os
from typing import Dict, Iterator, List, Set

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("orchestra_ray", "actors", "pipelines")
LAYER = {"orchestra_ray": 0, "actors": 1, "pipelines": 2}
MAX_LINES = 400


def files(package: str) -> Iterator[str]:
    for root, _, names in os.walk(os.path.join(REPO, package)):
        for n in sorted(names):
            if n.endswith(".py"):
                yield os.path.join(root, n)


def module_name(path: str) -> str:
    name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


MODULES: Dict[str, str] = {module_name(p): p for pkg in PACKAGES for p in files(pkg)}


def imported_names(path: str) -> Iterator[str]:
    """Every absolute name an import statement of the file reaches: `from a.b import c` gives a.b and
    a.b.c (c may be a module), wherever the statement sits (function bodies included)."""
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def project_module(name: str):
    """The project module a dotted name lives in (the longest prefix that is one), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> Dict[str, Set[str]]:
    graph = {}
    for mod, path in MODULES.items():
        deps = {project_module(n) for n in imported_names(path)}
        graph[mod] = {d for d in deps if d and d != mod}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_of_the_three_packages_is_seen():
    # A guard on the walk itself: the checks below are only as good as the modules they see.
    assert {"orchestra_ray.grpo.scoring", "actors.learner", "pipelines.train"} <= set(MODULES)
    assert len(MODULES) > 80


def test_imports_run_one_way():
    bad = []
    for mod, deps in import_graph().items():
        for dep in deps:
            if LAYER[dep.split(".")[0]] > LAYER[mod.split(".")[0]]:
                bad.append(f"{mod} imports {dep}")
    assert not bad, "imports against the layers (pipelines -> actors -> orchestra_ray):\n" + "\n".join(sorted(bad))


def test_the_library_imports_no_ray_anywhere():
    bad = [f"{mod} imports {name}" for mod, path in MODULES.items() if mod.split(".")[0] == "orchestra_ray"
           for name in imported_names(path) if name.split(".")[0] == "ray"]
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_source_file_over_400_lines():
    long = {os.path.relpath(p, REPO): n for p in MODULES.values() if (n := sum(1 for _ in open(p))) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines, each to be split along a seam: {long}"
