"""The shape of the code's dependencies: the generic lifecycle knows none of its consumers, and nothing goes round.

- ``jobs`` (the job, the attempt lifecycle, the kind registry) imports none of the apps that
  do the work; they register their kinds with it instead (``jobs.kinds``).
- Among the apps the imports form no circle, counting imports inside functions too (a
  lazy import is a circle put off, not removed); only ``TYPE_CHECKING`` blocks are left out.
- In the project package, only the modules that wire the apps together (the URLs, the
  staff console's pages, the one-photo command) import apps, and no app imports them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("jobs", "restoration", "animation", "billing")
PROJECT = "rekindle"
WIRING = {
    "rekindle.urls",
    "rekindle.admin_views",
    "rekindle.dashboard",
    "rekindle.management.commands.restore_photo",
}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[str]:
    """Every module an AST imports, at any depth, except under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        stack.extend(ast.iter_child_nodes(node))


def module_imports() -> dict[str, set[str]]:
    """First-party module -> the first-party modules it imports (tests, test support and migrations left out)."""
    graph: dict[str, set[str]] = {}
    for package in (*APPS, PROJECT):
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT)
            if {"tests", "testing", "migrations"} & set(relative.parts):
                continue
            module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
            graph[module] = {
                name for name in _imports(ast.parse(path.read_text())) if name.split(".")[0] in (*APPS, PROJECT)
            }
    return graph


def _app(module: str) -> str:
    return module.split(".")[0]


def test_it_keeps_jobs_free_of_the_apps_that_do_the_work() -> None:
    offending = sorted(
        f"{module} imports {name}"
        for module, names in module_imports().items()
        if _app(module) == "jobs"
        for name in names
        if _app(name) in APPS and _app(name) != "jobs"
    )
    assert offending == []


def test_it_has_no_circle_among_the_apps() -> None:
    depends: dict[str, set[str]] = {app: set() for app in APPS}
    for module, names in module_imports().items():
        if _app(module) in APPS:
            depends[_app(module)] |= {_app(name) for name in names if _app(name) in APPS} - {_app(module)}

    order: list[str] = []
    remaining = {app: set(deps) for app, deps in depends.items()}
    while remaining:
        ready = sorted(app for app, deps in remaining.items() if not deps - set(order))
        assert ready, f"these apps import each other in a circle: {remaining}"
        order.extend(ready)
        for app in ready:
            del remaining[app]
    assert order.index("jobs") < order.index("restoration") < order.index("animation")


def test_it_lets_only_the_wiring_modules_of_the_project_import_apps() -> None:
    graph = module_imports()
    importing_apps = {
        module
        for module, names in graph.items()
        if _app(module) == PROJECT and any(_app(name) in APPS for name in names)
    }
    assert importing_apps <= WIRING, sorted(importing_apps - WIRING)
    into_wiring = sorted(
        f"{module} imports {name}"
        for module, names in graph.items()
        if _app(module) in APPS
        for name in names
        if name in WIRING
    )
    assert into_wiring == []
