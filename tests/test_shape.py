"""The shape docs/design.md describes, checked on the source: no import circle, no probing of a store, no sys.path
edits, and library internals touched only by the fast-path module."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server"
#: The one module allowed to reach into libraries' private internals (docs/design.md, "Where each kind of change
#: goes"): a package, every file under it one kind of patch.
FASTPATH = SERVER / "web" / "fastpath"
#: Third-party packages whose private attributes are off limits outside the fast-path module.
LIBRARIES = {"engineio", "socketio", "flask_socketio", "eventlet", "gevent", "simple_websocket", "flask", "werkzeug"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def python_files(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py"))


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The server modules `path` imports when it is imported (not inside functions, not under TYPE_CHECKING)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def add(target: str) -> None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and not is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                add(prefix)
                for alias in node.names:  # `from . import x` imports the submodule x
                    if f"{prefix}.{alias.name}" in modules:
                        add(f"{prefix}.{alias.name}")

    visit(ast.parse(path.read_text()).body)
    return out


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of the import graph meets."""
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                found.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                walk(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    files = sorted((root / "server").rglob("*.py"))
    modules = {module_name(p) for p in files}
    graph = {module_name(p): module_level_imports(p, modules) for p in files}
    # a package's __init__ importing its own submodules is how Python packages work, not a circle
    return {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}


def test_the_server_package_has_no_import_circle():
    assert circles(import_graph(ROOT)) == []


def test_the_import_check_finds_a_circle(tmp_path, monkeypatch):
    """The checker itself: two modules importing each other are a circle."""
    pkg = tmp_path / "server"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("from . import a\nx = 1\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert circles(import_graph(tmp_path)) == [["server.a", "server.b", "server.a"]]


def test_no_code_probes_a_store_for_attributes_the_protocol_does_not_declare():
    offenders = []
    for path in python_files("server", "scripts", "benchmark"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and node.args
                and "store" in ast.unparse(node.args[0]).lower()
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []


def test_nothing_edits_sys_path():
    offenders = []
    for path in python_files("server", "scripts", "benchmark", "tests"):
        for node in ast.walk(ast.parse(path.read_text())):
            target = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                target = node.func.value
            elif isinstance(node, (ast.Assign, ast.AugAssign)):
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if target is not None and ast.unparse(target) == "sys.path":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def private_library_attributes(path: Path) -> list[str]:
    """`lib._name` reached through a name imported from one of LIBRARIES (a module or a class of it)."""
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in LIBRARIES:
                    imported.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
            imported.update(alias.asname or alias.name for alias in node.names)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in imported:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def in_fast_path(path: Path) -> bool:
    return path.is_relative_to(FASTPATH)


def test_only_the_fast_path_module_touches_library_internals():
    offenders = [hit for p in python_files("server") if not in_fast_path(p) for hit in private_library_attributes(p)]
    assert offenders == []
    fast_path = [p for p in python_files("server") if in_fast_path(p)]
    assert FASTPATH / "__init__.py" in fast_path and len(fast_path) > 1  # the package and its submodules
    assert [hit for p in fast_path for hit in private_library_attributes(p)]  # the check does see the patches there
