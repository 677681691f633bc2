"""Imports run one way (pipelines -> actors -> orchestra_ray), and the algorithmic modules are
plain Python and torch: importable and testable without Ray."""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALGORITHMIC = ["reward", "advantages", "loss", "parsing", "tools", "preferences", "grading", "policy_update", "episode",
               "baselines", "report_figures", "router_env"]


def imported_modules(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def files(package):
    for root, _, names in os.walk(os.path.join(REPO, package)):
        for n in names:
            if n.endswith(".py"):
                yield os.path.join(root, n)


def test_library_never_imports_actors_or_pipelines():
    for f in files("orchestra_ray"):
        bad = [m for m in imported_modules(f) if m.split(".")[0] in ("actors", "pipelines")]
        assert not bad, f"{f} imports {bad}"


def test_actors_never_import_pipelines():
    for f in files("actors"):
        bad = [m for m in imported_modules(f) if m.split(".")[0] == "pipelines"]
        assert not bad, f"{f} imports {bad}"


def test_algorithmic_modules_do_not_use_ray():
    for name in ALGORITHMIC:
        mods = list(imported_modules(os.path.join(REPO, "orchestra_ray", f"{name}.py")))
        assert not [m for m in mods if m.split(".")[0] == "ray"], f"orchestra_ray/{name}.py imports ray"
