"""Generation speed: s3ft's HF backend vs a naive one-prompt-at-a-time `model.generate` loop,
and vs llama.cpp's server answering the same prompts one at a time.

Same model (the demo's SmolLM2-135M), same prompts (the demo's training queries, rendered
with the same chat template), same greedy decoding and token limit, measured side by side
in one run. llama.cpp serves the GGUF file itself (Q4_1 weights, its own kernels); the HF
sides run the de-quantized model in the config's dtype. Prints the ratios of wall times
and tokens/s; `--json` writes the figures. The batched sides take well under a minute, so they
run `--repeats` times, alternating, and report the median (run to run this VM varies by ~10%);
the naive loop (7 min) and llama.cpp run once, over many prompts in a row. A last side has
llama.cpp batch the prompts itself (`llamacpp_batched.py`, its low-level API), to show what
its engine reaches here when it is not answering one prompt at a time.

    python bench/gen_speed.py --n 48 --json bench/results/gen_speed.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import llamacpp_batched
from emit import emit, peak_rss_mib
from s3ft.backends import GenRequest
from s3ft.backends.hf import HFBackend, render_prompt
from s3ft.config import load_config
from s3ft.models import load_model, load_tokenizer, materialize, resolve
from s3ft.tasks import get_task

DEMO = Path(__file__).resolve().parents[1] / "src" / "s3ft" / "configs" / "demo.yaml"


def naive(model, tok, requests, max_new_tokens, eos_ids) -> tuple[float, int]:
    t0, tokens = time.perf_counter(), 0
    for r in requests:
        enc = tok(render_prompt(tok, r), return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos_ids,
                                 pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
        tokens += out.shape[1] - enc["input_ids"].shape[1]
    return time.perf_counter() - t0, tokens


def llamacpp(gguf: str, tok, requests, max_new_tokens, threads: int) -> tuple[float, int]:
    """llama.cpp's OpenAI-compatible server, one request at a time (how a serial client uses it)."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from llama_server import serve_gguf
    from openai import OpenAI

    prompts = [render_prompt(tok, r) for r in requests]
    with serve_gguf(gguf, n_threads=threads) as base_url:
        client = OpenAI(base_url=base_url, api_key="none", timeout=600)
        ask = dict(model="m", max_tokens=max_new_tokens, temperature=0.0)
        client.completions.create(prompt=prompts[0], **{**ask, "max_tokens": 8})  # warm-up
        t0, tokens = time.perf_counter(), 0
        for p in prompts:
            tokens += client.completions.create(prompt=p, **ask).usage.completion_tokens
        return time.perf_counter() - t0, tokens


def batched(backend, requests, max_new_tokens, stop_regex=None) -> tuple[float, int]:
    t0, tokens = time.perf_counter(), 0
    for batch in backend.generate(requests, max_new_tokens, stop_regex=stop_regex):
        tokens += sum(g.completion_tokens for g in batch)
    return time.perf_counter() - t0, tokens


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=48, help="prompts (the naive loop takes ~5 s each on 2 cores)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each batched side (median)")
    ap.add_argument("--model", default=None, help="another model (hub id, directory, .gguf) instead of the demo's")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--dtype", default=None, help="model.dtype override, e.g. bfloat16 on a GPU")
    ap.add_argument("--skip-llamacpp", action="store_true", help="leave out the llama.cpp server side")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    cfg = load_config(DEMO, [f"data.train_limit={args.n}"])
    if args.batch_size:
        cfg.generation.batch_size = args.batch_size
    if args.model:
        cfg.model.name_or_path = args.model
    if args.dtype:
        cfg.model.dtype = args.dtype
    if args.max_new_tokens:
        cfg.generation.max_new_tokens = args.max_new_tokens
    task = get_task(cfg.data)
    requests = [GenRequest(e.id, task.messages(e)) for e in task.load("train")]
    path = materialize(cfg.model)
    tok = load_tokenizer(path)
    model = load_model(path, cfg.model)
    backend = HFBackend(path, cfg.model, cfg.generation, model=model, tokenizer=tok)
    max_new = cfg.generation.max_new_tokens

    batched(backend, requests[:2], 8)  # warm-up: first-call costs (CUDA context, kernels) are not throughput
    stop_runs, plain_runs = [], []
    for _ in range(args.repeats):
        stop_runs.append(batched(backend, requests, max_new, task.answer_complete))
        plain_runs.append(batched(backend, requests, max_new))  # batching alone, no early stop
    b_wall, b_tok = statistics.median(r[0] for r in stop_runs), stop_runs[0][1]
    plain_wall, plain_tok = statistics.median(r[0] for r in plain_runs), plain_runs[0][1]
    n_wall, n_tok = naive(model, tok, requests, max_new, backend.eos_ids)
    gguf = resolve(cfg.model)
    lc = lcb = None
    parallel = min(cfg.generation.batch_size, len(requests))  # llama.cpp batches as many as s3ft does
    if not args.skip_llamacpp and gguf[1]:
        gguf_file = str(Path(gguf[0]) / gguf[1])
        lc = llamacpp(gguf_file, tok, requests, max_new, torch.get_num_threads())
        if llamacpp_batched.available():
            ids = [tok(render_prompt(tok, r), add_special_tokens=False)["input_ids"] for r in requests]
            lcb = llamacpp_batched.generate(gguf_file, ids, max_new, backend.eos_ids, torch.get_num_threads(),
                                            parallel=parallel)
    result = {
        "model": cfg.model.name_or_path, "dtype": str(model.dtype), "device": str(model.device),
        "threads": torch.get_num_threads(), "prompts": len(requests), "max_new_tokens": max_new,
        "batch_size": cfg.generation.batch_size,
        "s3ft_hf": {"wall_s": round(b_wall, 2), "tokens": b_tok, "tokens_per_s": round(b_tok / b_wall, 1),
                    "runs_s": [round(r[0], 2) for r in stop_runs]},
        "s3ft_hf_without_answer_stop": {"wall_s": round(plain_wall, 2), "tokens": plain_tok,
                                        "tokens_per_s": round(plain_tok / plain_wall, 1),
                                        "runs_s": [round(r[0], 2) for r in plain_runs]},
        "naive_loop": {"wall_s": round(n_wall, 2), "tokens": n_tok, "tokens_per_s": round(n_tok / n_wall, 1)},
        "speedup_wall": round(n_wall / b_wall, 2),
        "speedup_batching_only": round(n_wall / plain_wall, 2),
        **({"llamacpp_server_serial": {"wall_s": round(lc[0], 2), "tokens": lc[1],
                                         "tokens_per_s": round(lc[1] / lc[0], 1), "weights": gguf[1]},
            "speedup_vs_llamacpp": round(lc[0] / b_wall, 2)} if lc else {}),
        **({"llamacpp_batched": {"wall_s": round(lcb[0], 2), "tokens": lcb[1], "tokens_per_s": round(lcb[1] / lcb[0], 1),
                                 "parallel": parallel},
            "llamacpp_batched_vs_serial_tokens_per_s": round((lcb[1] / lcb[0]) / (lc[1] / lc[0]), 2)} if lcb else {}),
        "peak_rss_mib": peak_rss_mib(),
    }
    summary = (f"s3ft HF backend is {result['speedup_wall']}x faster than the naive loop "
               f"({b_wall:.1f} s vs {n_wall:.1f} s for {len(requests)} prompts)")
    if lc:
        summary += (f"\nand {result['speedup_vs_llamacpp']}x faster than llama.cpp's server answering one prompt "
                    f"at a time ({b_wall:.1f} s vs {lc[0]:.1f} s)")
    if lcb:
        summary += (f"\nllama.cpp batching the prompts itself: {result['llamacpp_batched']['tokens_per_s']} tok/s, "
                    f"{result['llamacpp_batched_vs_serial_tokens_per_s']}x its one-at-a-time rate")
    return emit(result, summary, args.json)


if __name__ == "__main__":
    main()
