"""crgpu's layers point down only and no modules import each other in a circle, read from the
modules' own imports (function-level and type-checking ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "crgpu"
# Bottom to top; packages of one rank do not import each other.
RANKS = {"host": 0, "criu": 1, "options": 1, "nvidia": 2, "runtimes": 3, "image": 4, "core": 5, "doctor": 6,
         "cli": 7, "__main__": 8}  # fmt: skip


def _modules() -> dict[str, set[str]]:
    """Each module's crgpu imports, as module names (a name imported from a package that is a
    submodule counts as that submodule)."""
    found: dict[str, set[str]] = {}
    names = {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py")
    }
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        imports: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("crgpu"):
                subs = {f"{node.module}.{alias.name}" for alias in node.names} & names
                imports |= subs or {node.module}
            elif isinstance(node, ast.Import):
                imports |= {alias.name for alias in node.names if alias.name.startswith("crgpu")}
        found[module] = imports - {module}
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package root, importable by all


def test_the_top_level_holds_only_the_subpackages() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert loose == []
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} == set(RANKS) - {"__main__"}


def test_every_import_points_down() -> None:
    upward = []
    for module, imports in _modules().items():
        layer = _layer(module)
        for imported in imports:
            target = _layer(imported)
            if layer is None or target is None or target == layer:
                continue
            if RANKS[target] >= RANKS[layer]:
                upward.append(f"{module} -> {imported}")
    assert upward == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    graph = _modules()
    circles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph.get(module, ())):
            if imported not in graph or imported == "crgpu":
                continue
            if state.get(imported) == 1:
                circles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_every_package_says_what_it_owns() -> None:
    for package in RANKS:
        init = PACKAGE / package / "__init__.py"
        if package != "__main__":
            assert ast.get_docstring(ast.parse(init.read_text())), package
