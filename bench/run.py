"""All benchmarks in one command: prints a table and writes bench/results/bench.json.

    python bench/run.py            # generation speed + demo wall time and peak RSS
    python bench/run.py --skip-demo

Figures are ratios measured side by side in one run on this machine; see README.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_json(cmd: list[str], out: Path) -> dict:
    subprocess.run(cmd + ["--json", str(out)], check=True)
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32, help="prompts for the generation benchmark")
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    res = {"machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                       "cores": __import__("os").cpu_count()}}
    res["generation"] = run_json([sys.executable, str(HERE / "gen_speed.py"), "--n", str(args.n)],
                                 results_dir / "gen_speed.json")
    if not args.skip_demo:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "s3ft.cli", "demo", "--output", tmp], check=True)
            wall = time.perf_counter() - t0
            summary = json.loads((Path(tmp) / "summary.json").read_text())
        res["demo"] = {"wall_s": round(wall, 1),
                       "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
                       "in_domain": summary["in_domain"], "target_mix": summary["target_mix"]}
    (results_dir / "bench.json").write_text(json.dumps(res, indent=2) + "\n")
    g = res["generation"]
    rows = [("generation: s3ft HF backend", f"{g['s3ft_hf']['tokens_per_s']} tok/s", f"{g['s3ft_hf']['wall_s']} s"),
            ("generation: HF backend without answer-stop", f"{g['s3ft_hf_without_answer_stop']['tokens_per_s']} tok/s",
             f"{g['s3ft_hf_without_answer_stop']['wall_s']} s"),
            ("generation: naive one-prompt loop", f"{g['naive_loop']['tokens_per_s']} tok/s", f"{g['naive_loop']['wall_s']} s"),
            ("speedup vs naive (wall)", f"{g['speedup_wall']}x", f"batching alone {g['speedup_batching_only']}x")]
    if "demo" in res:
        rows.append(("demo wall time / peak RSS", f"{res['demo']['wall_s']} s", f"{res['demo']['peak_rss_mib']} MiB"))
    width = max(len(r[0]) for r in rows)
    for name, a, b in rows:
        print(f"{name:<{width}}  {a:>14}  {b}")


if __name__ == "__main__":
    main()
