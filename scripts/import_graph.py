"""Print the import edges among sendit's modules, their cycles, and the package-level graph.

    python scripts/import_graph.py              # top-level imports only (what runs at import time)
    python scripts/import_graph.py --all        # also imports inside functions (lazy imports)
    python scripts/import_graph.py --root /tmp/old/src   # another tree's src (e.g. `git archive 4521853 src`)

Edges come from each module's `import` / `from ... import` statements (read with ast, nothing is imported);
`if TYPE_CHECKING:` blocks are skipped, as they never run. A cycle is a strongly connected component of more
than one module.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "sendit"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(tree: ast.Module, lazy: bool) -> list[ast.stmt]:
    """The import statements that run at import time (module body, outside TYPE_CHECKING), or all of them."""
    found: list[ast.stmt] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                continue
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not lazy:
                continue
            elif isinstance(node, ast.ClassDef) or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(node.body)
            else:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        visit([child])

    visit(tree.body)
    return found


def imports(path: Path, modules: set[str], lazy: bool) -> set[str]:
    """The sendit modules that `path` imports (a `from pkg import name` counts `pkg.name` when it is a module)."""
    here = module_name(path)
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in _statements(ast.parse(path.read_text(), str(path)), lazy):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = here.split(".") if is_pkg else here.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for t in targets:
            while t and t not in modules:  # `import sendit.x.y` of a name inside a module: the module
                t = t.rpartition(".")[0]
            if t and t.split(".")[0] == PACKAGE and t != here:
                out.add(t)
    return out


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative), components of more than one node, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return sorted(found)


def package_of(module: str) -> str:
    """`sendit.config.schema` -> `sendit.config`; a top-level module (`sendit.cli`) is its own package."""
    parts = module.split(".")
    return ".".join(parts[:2])


def main(argv: list[str] | None = None) -> int:
    global ROOT
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--all", action="store_true", help="include imports inside functions (lazy imports)")
    p.add_argument("--edges", action="store_true", help="print every module edge, not only the summary")
    p.add_argument("--root", type=Path, default=ROOT, help="the src folder that holds the package (default: this checkout's)")
    args = p.parse_args(argv)
    ROOT = args.root.resolve()
    if not (ROOT / PACKAGE).is_dir():
        p.error(f"no {PACKAGE}/ package in {ROOT}")
    files = sorted((ROOT / PACKAGE).rglob("*.py"))
    modules = {module_name(f) for f in files}
    graph = {module_name(f): imports(f, modules, args.all) for f in files}
    kind = "top-level and function-level" if args.all else "top-level"
    print(f"{len(modules)} modules, {sum(map(len, graph.values()))} {kind} import edges")
    if args.edges:
        for m in sorted(graph):
            for t in sorted(graph[m]):
                print(f"  {m} -> {t}")
    cycles = strongly_connected(graph)
    print(f"module cycles: {len(cycles)}")
    for c in cycles:
        print("  " + " <-> ".join(c))
    packages: dict[str, set[str]] = {}
    for m, targets in graph.items():
        packages.setdefault(package_of(m), set()).update(package_of(t) for t in targets if package_of(t) != package_of(m))
    print("package graph:")
    for pkg in sorted(packages):
        print(f"  {pkg} -> {', '.join(sorted(packages[pkg])) or '-'}")
    pkg_cycles = strongly_connected(packages)
    print(f"package cycles: {len(pkg_cycles)}")
    for c in pkg_cycles:
        print("  " + " <-> ".join(c))
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
