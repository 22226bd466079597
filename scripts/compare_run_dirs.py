"""Are two run directories the same run? Byte-equal JSONL, equal adapter tensors, equal fingerprints.

    python scripts/compare_run_dirs.py REFERENCE CANDIDATE

Compares every `*.jsonl` byte for byte, every tensor of every `*.safetensors` with `torch.equal`,
and the `fingerprint` of every `*.meta.json` and `train_meta.json`; timings and costs (the rest of
the meta files, the summary, the reports) may differ. Prints the counts and each difference;
exits 1 when anything differs or a file is on one side only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _files(root: Path, pattern: str) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob(pattern) if p.is_file()}


def _tensors_equal(a: Path, b: Path) -> str | None:
    import torch
    from safetensors.torch import load_file
    ta, tb = load_file(str(a)), load_file(str(b))
    if ta.keys() != tb.keys():
        return f"tensor names differ: {sorted(ta.keys() ^ tb.keys())[:3]}"
    bad = [k for k in ta if ta[k].dtype != tb[k].dtype or not torch.equal(ta[k], tb[k])]
    return f"{len(bad)} of {len(ta)} tensors differ, e.g. {bad[0]}" if bad else None


def _fingerprint(p: Path):
    return json.loads(p.read_text(encoding="utf-8")).get("fingerprint")


CHECKS = {
    "jsonl": ("*.jsonl", lambda a, b: None if a.read_bytes() == b.read_bytes() else "bytes differ"),
    "safetensors": ("*.safetensors", _tensors_equal),
    "fingerprint": ("*meta.json", lambda a, b: None if _fingerprint(a) == _fingerprint(b)
                    else f"fingerprint {_fingerprint(a)} != {_fingerprint(b)}"),
}


def compare_dirs(ref: Path, new: Path) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """({kind: (files equal, files compared)}, [problems])."""
    counts, problems = {}, []
    for kind, (pattern, same) in CHECKS.items():
        a, b = _files(ref, pattern), _files(new, pattern)
        problems += [f"{kind}: {f}: only in {ref}" for f in sorted(a - b)]
        problems += [f"{kind}: {f}: only in {new}" for f in sorted(b - a)]
        equal = 0
        for f in sorted(a & b):
            why = same(ref / f, new / f)
            if why:
                problems.append(f"{kind}: {f}: {why}")
            else:
                equal += 1
        counts[kind] = (equal, len(a & b))
    return counts, problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference", type=Path)
    ap.add_argument("candidate", type=Path)
    args = ap.parse_args()
    counts, problems = compare_dirs(args.reference, args.candidate)
    for kind, (equal, n) in counts.items():
        print(f"{kind}: {equal}/{n} equal")
    for p in problems:
        print("  " + p)
    print("identical" if not problems else f"{len(problems)} differences")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
