#!/usr/bin/env python3
"""Check the package's import graph: leaves stay leaves, and top-level parts form no cycle.

Reads every ``import`` / ``from ... import`` of ``src/datacomp`` with ``ast`` (module level and inside
functions alike; nothing is imported) and fails, one line per finding, when

- a module imports ``datacomp.synth`` (the embedded world), ``datacomp.cli`` or ``datacomp.demo``
  without being allowed to (``ALLOWED``: synth itself, the CLI, the demo and ``__main__`` entry
  points);
- the top-level parts (subpackages such as ``filters`` and top-level modules such as ``models``)
  import each other in a cycle.

    python scripts/check_imports.py [--src src/datacomp] [--graph]
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "datacomp"
# Imported part -> module patterns (relative to the package, "/"-separated; "dir/*" = the whole folder)
# allowed to import it.
ALLOWED = {
    "synth": ("synth/*", "demo.py", "cli/synth.py", "cli/demo.py"),
    "cli": ("cli/*", "__main__.py", "*/__main__.py"),
    "demo": ("demo.py", "cli/demo.py"),
}


def module_name(path: Path, src: Path) -> str:
    rel = path.relative_to(src).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, src: Path) -> Iterator[tuple[int, str]]:
    """``(line, imported module)`` for each import of a package module in ``path`` (relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    me = module_name(path, src).split(".")
    base = me if path.name == "__init__.py" else me[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == PACKAGE or a.name.startswith(PACKAGE + "."):
                    yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod != PACKAGE and not mod.startswith(PACKAGE + "."):
                continue
            if mod == PACKAGE:  # ``from datacomp import uids``: the names that are modules
                for a in node.names:
                    if (src / f"{a.name}.py").is_file() or (src / a.name / "__init__.py").is_file():
                        yield node.lineno, f"{PACKAGE}.{a.name}"
            else:
                yield node.lineno, mod


def part_of(module: str) -> str:
    """Top-level part: ``datacomp.filters.run`` -> ``filters``; ``datacomp.models`` -> ``models``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _allowed(rel: str, patterns: tuple[str, ...]) -> bool:
    for p in patterns:
        if p.endswith("/*") and rel.startswith(p[:-1]):
            return True
        if p.startswith("*/") and rel.endswith(p[1:]):
            return True
        if rel == p:
            return True
    return False


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one part (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(src: Path) -> tuple[list[str], dict[str, set[str]], dict[tuple[str, str], str]]:
    """(problems, part graph, one example import per edge)."""
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    example: dict[tuple[str, str], str] = {}
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        me = part_of(module_name(path, src))
        me = me or "__init__"
        graph.setdefault(me, set())
        for line, mod in imports(path, src):
            target = part_of(mod)
            if not target:
                continue
            if target in ALLOWED and not _allowed(rel, ALLOWED[target]) and target != me:
                problems.append(f"{src.name}/{rel}:{line}: imports {mod}; only {', '.join(ALLOWED[target])} may "
                                f"import {PACKAGE}.{target}")
            # (an entry point, ``__main__.py``, is imported by nothing: it closes no cycle)
            if target != me and me not in ("__init__", "__main__") and path.name != "__main__.py":
                graph[me].add(target)
                example.setdefault((me, target), f"{rel}:{line}")
    for comp in find_cycles(graph):
        edges = [f"{a}->{b} ({example[(a, b)]})" for a in comp for b in sorted(graph[a]) if b in comp]
        problems.append(f"import cycle between {', '.join(comp)}: {'; '.join(edges)}")
    return problems, graph, example


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", type=Path, default=Path(__file__).resolve().parent.parent / "src" / PACKAGE)
    ap.add_argument("--graph", action="store_true", help="print the part graph")
    args = ap.parse_args(argv)
    if not args.src.is_dir():
        print(f"error: {args.src}: package folder not found (--src)", file=sys.stderr)
        return 2
    problems, graph, _ = check(args.src)
    if args.graph:
        for part in sorted(graph):
            print(f"{part} -> {', '.join(sorted(graph[part])) or '-'}")
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print(f"imports ok: {len(graph)} parts, no forbidden import, no cycle")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
