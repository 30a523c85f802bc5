"""The package's rooms stay apart: no private name crosses a package, no import cycle.

Read from the source with :mod:`ast` (nothing is imported), so the rule holds
for lazy imports inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import xbzrle

SRC = Path(xbzrle.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rpartition(".")[0]


def modules() -> dict[str, tuple[Path, ast.Module, bool]]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        found[module_name(path)] = (path, ast.parse(path.read_text()), path.name == "__init__.py")
    return found


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = package_of(importer, is_package).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(importer: str, tree: ast.Module, is_package: bool, known: set[str]):
    """(imported module, private names taken from it, the node) for every import."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("xbzrle"):
                    yield alias.name, [], node
        elif isinstance(node, ast.ImportFrom):
            target = resolve(importer, is_package, node)
            if not target.startswith("xbzrle"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known or sub == "xbzrle._core":  # ``from . import module``
                    yield sub, [], node
                else:
                    private = [alias.name] if alias.name.startswith("_") and not \
                        alias.name.startswith("__") else []
                    yield target, private, node


def top_package(module: str) -> str:
    """``xbzrle.<package>``, or ``xbzrle`` for the root and its loose modules."""
    parts = module.split(".")
    if len(parts) > 1 and (SRC / parts[1]).is_dir():
        return ".".join(parts[:2])
    return "xbzrle"


def module_aliases(importer: str, tree: ast.Module, is_package: bool, known: set[str]):
    """Local names bound to a module of the package (``from .. import stream``)."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = resolve(importer, is_package, node)
            for alias in node.names:
                if f"{target}.{alias.name}" in known or alias.name == "_core":
                    bound[alias.asname or alias.name] = f"{target}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("xbzrle") and alias.asname:
                    bound[alias.asname] = alias.name
    return bound


def test_no_private_name_crosses_a_package():
    found = modules()
    known = set(found)
    offences = []
    for name, (_path, tree, is_pkg) in found.items():
        for target, private, node in imports(name, tree, is_pkg, known):
            if private and top_package(target) != top_package(name):
                offences.append(f"{name}:{node.lineno} takes {private} from {target}")
            leaf = target.rpartition(".")[2]
            # A private module of another package; the root's _backend (the core
            # loader) and compiled _core are the documented exceptions.
            if (leaf.startswith("_") and not leaf.startswith("__")
                    and leaf not in ("_backend", "_core")
                    and top_package(target) != top_package(name)):
                offences.append(f"{name}:{node.lineno} imports private module {target}")
        aliases = module_aliases(name, tree, is_pkg, known)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and top_package(aliases[node.value.id]) != top_package(name)
                    and not aliases[node.value.id].endswith("._core")):
                offences.append(f"{name}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert offences == []


def test_no_import_cycle():
    found = modules()
    known = set(found)
    graph: dict[str, set[str]] = {name: set() for name in found}
    for name, (_path, tree, is_pkg) in found.items():
        for target, _private, _node in imports(name, tree, is_pkg, known):
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            # A package's __init__ importing its own modules (and they it) is how a
            # package hands names on, not a cycle between rooms.
            if target != name and not name.startswith(target + ".") \
                    and not target.startswith(name + "."):
                graph[name].add(target)
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


def test_qemu_imports_nothing_from_migration():
    found = modules()
    known = set(found)
    for name, (_path, tree, is_pkg) in found.items():
        if name.startswith("xbzrle.qemu"):
            for target, _private, node in imports(name, tree, is_pkg, known):
                assert not target.startswith("xbzrle.migration"), f"{name}:{node.lineno}"
