"""All benchmarks in one command: prints a table and writes bench/results/bench.json.

    python bench/run.py                      # everything (about 40 minutes on 2 cores)
    python bench/run.py --skip-demo --skip-train

Each part runs in its own process, one after another, so they do not compete for cores.
Every figure that compares two things is a ratio measured side by side in one run on this
machine: generation (s3ft HF backend vs a naive `model.generate` loop and vs llama.cpp's
server, one prompt at a time; and llama.cpp batching the same prompts itself), training
(s3ft vs plain TRL SFTTrainer), code-judge throughput, and the demo's wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_json(cmd: list[str], out: Path) -> dict:
    subprocess.run([sys.executable, *cmd, "--json", str(out)], check=True)
    return json.loads(out.read_text())


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:  # the model name says more than "x86_64"
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__}


def table(res: dict) -> list[tuple[str, str, str]]:
    rows = []
    if "generation" in res:
        g = res["generation"]
        runs = len(g["s3ft_hf"].get("runs_s", [0]))
        rows += [("generation: s3ft HF backend (batched, answer-stop)", f"{g['s3ft_hf']['tokens_per_s']} tok/s",
                  f"{g['s3ft_hf']['wall_s']} s, median of {runs}"),
                 ("generation: naive one-prompt generate loop", f"{g['naive_loop']['tokens_per_s']} tok/s",
                  f"{g['naive_loop']['wall_s']} s"),
                 ("  ratio s3ft / naive (wall)", f"{g['speedup_wall']}x", "target >= 10x")]
        if "llamacpp_server_serial" in g:
            lc = g["llamacpp_server_serial"]
            rows += [("generation: llama.cpp server, one at a time", f"{lc['tokens_per_s']} tok/s", f"{lc['wall_s']} s"),
                     ("  ratio s3ft / llama.cpp (wall)", f"{g['speedup_vs_llamacpp']}x", "target >= 3x")]
        if "llamacpp_batched" in g:
            lb = g["llamacpp_batched"]
            rows += [(f"generation: llama.cpp batching {lb['parallel']} prompts itself", f"{lb['tokens_per_s']} tok/s",
                      f"{lb['wall_s']} s, {g['llamacpp_batched_vs_serial_tokens_per_s']}x its serial tok/s")]
    if "train" in res:
        t = res["train"]
        rows += [("training: s3ft", f"{t['s3ft']['samples_per_s']} rows/s", f"{t['s3ft']['wall_s']} s"),
                 ("training: plain TRL SFTTrainer", f"{t['trl']['samples_per_s']} rows/s", f"{t['trl']['wall_s']} s"),
                 ("  time s3ft / TRL (end to end)", f"{t['ratio_wall']}x", "target <= 1.05x")]
    if "judge" in res:
        j = res["judge"]
        rows.append((f"code judge: MBPP references, {j['workers']} workers", f"{j['programs_per_s']} prog/s",
                     f"{j['passed']}/{j['programs']} pass, {j['isolation']}"))
    if "demo" in res:
        rows.append(("demo (s3ft demo): wall time / peak RSS", f"{res['demo']['wall_s']} s",
                     f"{res['demo']['peak_rss_mib']} MiB"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=48, help="prompts for the generation benchmark")
    ap.add_argument("--data-dir", default=os.environ.get("S3FT_DATA_DIR"), help="holds mbpp/ for the judge benchmark")
    for part in ("gen", "train", "judge", "demo"):
        ap.add_argument(f"--skip-{part}", action="store_true")
    args = ap.parse_args()
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    res: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    if not args.skip_demo:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "s3ft.cli", "demo", "--output", tmp], check=True)
            wall = time.perf_counter() - t0
            summary = json.loads((Path(tmp) / "summary.json").read_text())
        # RUSAGE_CHILDREN is the largest finished child so far: the demo runs first so that it is the demo's.
        res["demo"] = {"wall_s": round(wall, 1),
                       "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
                       "in_domain": summary["in_domain"], "target_mix": summary["target_mix"],
                       "stages_wall_s": {k: v["wall_s"] for k, v in summary["cost"]["stages"].items()},
                       "forgetting": (summary.get("forgetting") or {}).get("models")}
    if not args.skip_gen:
        res["generation"] = run_json([str(HERE / "gen_speed.py"), "--n", str(args.n)], results / "gen_speed.json")
    if not args.skip_train:
        res["train"] = run_json([str(HERE / "train_speed.py")], results / "train_speed.json")
    if not args.skip_judge:
        if args.data_dir:
            res["judge"] = run_json([str(HERE / "judge_speed.py"), "--data-dir", args.data_dir],
                                    results / "judge_speed.json")
        else:
            print("judge benchmark skipped: no --data-dir / S3FT_DATA_DIR with mbpp/", file=sys.stderr)
    (results / "bench.json").write_text(json.dumps(res, indent=2) + "\n")
    rows = table(res)
    m = res["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}; torch {m['torch']}")
    width = max(len(r[0]) for r in rows)
    for name, a, b in rows:
        print(f"{name:<{width}}  {a:>16}  {b}")


if __name__ == "__main__":
    main()
