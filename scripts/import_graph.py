"""The import graph of the `s3ft` package, from its source: cycles, layers, imports running back up.

    python scripts/import_graph.py [SRC_DIR] [--edges] [--json]

Every `import` / `from ... import` of an s3ft module is an edge, wherever it stands (module top,
inside a function, under `if TYPE_CHECKING:`). A module's layer is its height in the graph of
top-level imports only (a leaf is layer 0; cycles are collapsed first); an import "runs back up"
when a module imports one of the same or a higher layer from inside a function or a type-only
block (the ways code dodges a cycle at import time). `--edges` prints each module's dependencies.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path


def module_name(src: Path, path: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _top_level(tree: ast.Module) -> set[int]:
    """ids of import nodes that run when the module is imported (not in functions or TYPE_CHECKING)."""
    out: set[int] = set()

    def walk(stmts):
        for s in stmts:
            if isinstance(s, (ast.Import, ast.ImportFrom)):
                out.add(id(s))
            elif isinstance(s, ast.If) and "TYPE_CHECKING" not in ast.unparse(s.test):
                walk(s.body), walk(s.orelse)
            elif isinstance(s, ast.Try):
                walk(s.body), walk(s.orelse), walk(s.finalbody)
                for h in s.handlers:
                    walk(h.body)
    walk(tree.body)
    return out


def graph(src: Path) -> dict[str, dict[str, bool]]:
    """{module: {imported module: imported at top level?}} over the s3ft modules under src."""
    files = {module_name(src, p): p for p in sorted(src.rglob("*.py"))}
    edges: dict[str, dict[str, bool]] = {m: {} for m in files}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = _top_level(tree)
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith("s3ft"):
                    edges[mod][t] = edges[mod].get(t, False) or id(node) in top
    return edges


def sccs(edges: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Strongly connected components (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v), on.add(v)
        for w in edges[v]:
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
            out.append(sorted(comp))
    for v in edges:
        if v not in index:
            visit(v)
    return out


def layers(edges: dict[str, dict[str, bool]]) -> dict[str, int]:
    """Height of each module in the top-level import graph, cycles collapsed."""
    top = {m: {t for t, at_top in ts.items() if at_top} for m, ts in edges.items()}
    comp_of = {m: i for i, c in enumerate(sccs({m: dict.fromkeys(ts) for m, ts in top.items()})) for m in c}
    height: dict[int, int] = {}

    def h(c: int) -> int:
        if c not in height:
            height[c] = 0
            deps = {comp_of[t] for m, cc in comp_of.items() if cc == c for t in top[m]} - {c}
            height[c] = 1 + max((h(d) for d in deps), default=-1)
        return height[c]
    return {m: h(c) for m, c in comp_of.items()}


def report(src: Path) -> dict:
    edges = graph(src)
    cycles = [c for c in sccs(edges) if len(c) > 1]
    lay = layers(edges)
    back_up = sorted(f"{m} -> {t}" for m, ts in edges.items() for t, at_top in ts.items()
                     if not at_top and lay[t] >= lay[m])
    return {"modules": len(edges), "cycles": cycles, "layers": max(lay.values()) + 1,
            "back_up_imports": back_up, "edges": {m: sorted(ts) for m, ts in sorted(edges.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="?", default=str(Path(__file__).resolve().parents[1] / "src"))
    ap.add_argument("--edges", action="store_true", help="print each module's s3ft dependencies")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = report(Path(args.src))
    if args.json:
        print(json.dumps(r, indent=1))
        return
    print(f"modules {r['modules']}  cycles {len(r['cycles'])}  layers {r['layers']}  "
          f"imports back up {len(r['back_up_imports'])}")
    for c in r["cycles"]:
        print("  cycle: " + " <-> ".join(c))
    for e in r["back_up_imports"]:
        print("  back up: " + e)
    if args.edges:
        for m, ts in r["edges"].items():
            print(f"{m}: {', '.join(ts)}")


if __name__ == "__main__":
    main()
