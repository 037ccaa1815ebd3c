"""The layout's import rules, read from the source with `ast`: what each part may import,
and no circles.

    gen (nova) <- interceptors <- services.runtime <- services.<service> <- services.registry
    <- services.cli;   gateway <- interceptors.client + gen only

Every import counts, including those inside functions and under TYPE_CHECKING: a
function-level import still ties the two modules together, and is how circles hide.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("interceptors", "services", "gateway")
"""The product's packages (gen/ is generated, tests/ and tools/ are not the product)."""
FIRST_PARTY = (*PACKAGES, "nova", "tests", "tools")


@dataclass(frozen=True)
class Import:
    module: str
    """The importing module, e.g. "services.user.servicer"."""
    target: str
    """The module imported, e.g. "services.runtime.errors" (or a package)."""
    line: int


def modules(root: Path) -> dict[str, Path]:
    """Every product module under `root`, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(root: Path) -> Iterator[Import]:
    """Every first-party import of every product module: `from a.b import c` is an import
    of a.b.c when that is a module, else of a.b."""
    known = modules(root)
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(name, is_package, node.module, node.level)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                if target.split(".")[0] in FIRST_PARTY:
                    yield Import(name, target, node.lineno)


def _absolute(module: str, is_package: bool, target: str | None, level: int) -> str:
    if level == 0:
        return target or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def service_of(module: str) -> str | None:
    """ "services.user.servicer" -> "services.user"; None outside a service's package."""
    parts = module.split(".")
    if parts[0] != "services" or len(parts) < 2 or parts[1] in ("runtime", "registry", "cli"):
        return None
    return ".".join(parts[:2])


def allowed(module: str, target: str) -> bool:
    """Whether `module` may import `target` (both first-party)."""
    if _within(target, "tests") or _within(target, "tools"):
        return False
    if _within(target, "nova"):
        return True
    if _within(module, "gateway"):
        return _within(target, "gateway") or _within(target, "interceptors.client")
    if _within(module, "interceptors.context"):
        return False
    if _within(module, "interceptors.server"):
        return _within(target, "interceptors.server") or _within(target, "interceptors.context")
    if _within(module, "interceptors.client"):
        return _within(target, "interceptors.client") or _within(target, "interceptors.context")
    if _within(module, "interceptors"):
        return _within(target, "interceptors")
    if _within(module, "services.runtime"):
        return _within(target, "services.runtime") or _within(target, "interceptors")
    own = service_of(module)
    if own is not None:
        return (
            _within(target, own)
            or _within(target, "services.runtime")
            or _within(target, "interceptors")
        )
    if _within(module, "services.registry"):
        return not _within(target, "services.cli") and not _within(target, "gateway")
    if _within(module, "services.cli"):
        return True
    return _within(module, "services") and target == "services"


def violations(root: Path) -> list[str]:
    """Each import that breaks the rules, as "file:line: module imports target"."""
    found = modules(root)
    return [
        f"{found[i.module].relative_to(root)}:{i.line}: {i.module} imports {i.target}"
        for i in imports(root)
        if not allowed(i.module, i.target)
    ]


def circles(root: Path) -> list[list[str]]:
    """The groups of modules that import each other, directly or round a loop (Tarjan's
    strongly connected components of more than one module, or a module importing itself)."""
    known = modules(root)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for found in imports(root):
        if found.target in known and found.target != found.module:
            graph[found.module].add(found.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups
