"""The longest functions of a source tree, and how many are over a limit.

    python scripts/long_functions.py [SRC_DIR] [--over 80] [--top 12]
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def lengths(src: Path) -> list[tuple[int, str]]:
    """(lines, "path:line name") of every function and method, longest first."""
    out = []
    for p in sorted(src.rglob("*.py")):
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((n.end_lineno - n.lineno + 1, f"{p.relative_to(src)}:{n.lineno} {n.name}"))
    return sorted(out, reverse=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="?", default=str(Path(__file__).resolve().parents[1] / "src"))
    ap.add_argument("--over", type=int, default=80)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    found = lengths(Path(args.src))
    print(f"functions over {args.over} lines: {sum(n > args.over for n, _ in found)}")
    for n, where in found[:args.top]:
        print(f"{n:5d} {where}")


if __name__ == "__main__":
    main()
