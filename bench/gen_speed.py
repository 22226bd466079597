"""Generation speed: s3ft's HF backend vs a naive one-prompt-at-a-time `model.generate` loop,
and vs llama.cpp's server answering the same prompts one at a time.

Same model (the demo's SmolLM2-135M), same prompts (the demo's training queries, rendered
with the same chat template), same greedy decoding and token limit, measured side by side
in one run. llama.cpp serves the GGUF file itself (Q4_1 weights, its own kernels); the HF
sides run the de-quantized model in the config's dtype. Prints the ratios of wall times
and tokens/s; `--json` writes the figures. The batched sides take well under a minute, so they
run `--repeats` times, alternating, after one full-size warm-up run (the first full batch pays
allocation and first-call costs), and report the min and
median (run to run this VM varies by ~10%); the naive loop (7 min) and llama.cpp run once, over
many prompts in a row (`--naive-n` of them: its tokens/s is what is compared). A last side has
llama.cpp batch the prompts itself (`llamacpp_batched.py`, its low-level API), to show what
its engine reaches here when it is not answering one prompt at a time.

The HF backend against vLLM: `engines.py`. `steps` times one decode step at each batch size
(an eager forward), next to the step's floor:
the weights' bytes over the memory bandwidth a device-to-device copy reaches in the same run.
`--shape` times a random-weight model of a real model's shape (`shapes.py`), no weights needed:

    python bench/gen_speed.py --n 48 --json bench/results/gen_speed.json
    python bench/gen_speed.py --shape 1.5b --dtype bfloat16 --n 256 --max-new-tokens 256 --skip-llamacpp
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path

import torch

import llamacpp_batched
from emit import emit, peak_rss_mib
from s3ft.backends import GenRequest, render_prompt
from s3ft.backends.hf import HFBackend
from s3ft.backends.hf_decode import growing_cache
from s3ft.config import load_config
from s3ft.models import load_model, load_tokenizer, materialize, resolve
from s3ft.tasks import get_task
from shapes import SHAPES, random_model_dir

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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, mib: int) -> float:
    """Bytes/s a device-to-device copy moves (each byte read once and written once)."""
    src = torch.empty(mib << 20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(device)
    t0, n = time.perf_counter(), 5
    for _ in range(n):
        dst.copy_(src)
    sync(device)
    return 2 * src.numel() * n / (time.perf_counter() - t0)


def weight_bytes_per_step(model) -> int:
    """Bytes of weights one decode step reads: all parameters, less an untied input embedding (a lookup)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return total - (emb.numel() * emb.element_size() if emb.data_ptr() != head.data_ptr() else 0)


@torch.inference_mode()
def step_times(backend, prompt_ids: list[int], sizes: list[int], steps: int) -> dict[int, dict]:
    """Seconds per decode step at each batch size: an eager forward over a growing cache holding
    `prompt_ids` (generate's step without its bookkeeping)."""
    model, device, out = backend.model, backend.model.device, {}
    for b in sizes:
        row: dict = {}
        cache = growing_cache(model)
        ids = torch.tensor([prompt_ids] * b, device=device)
        nxt = model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            nxt = model(input_ids=nxt, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
        sync(device)
        row["eager_s"] = (time.perf_counter() - t0) / steps
        out[b] = row
        del cache
    return out


def summary_of(runs: list[tuple[float, int]]) -> dict:
    walls = [r[0] for r in runs]
    wall, tokens = statistics.median(walls), runs[0][1]
    return {"wall_s": round(wall, 3), "min_wall_s": round(min(walls), 3), "tokens": tokens,
            "tokens_per_s": round(tokens / wall, 1), "max_tokens_per_s": round(tokens / min(walls), 1),
            "runs_s": [round(w, 3) for w in walls]}


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=48, help="prompts (the naive loop takes ~5 s each on 2 cores)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each batched side (min, median)")
    ap.add_argument("--model", default=None, help="another model (hub id, directory, .gguf) instead of the demo's")
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None,
                    help="a random-weight model of this shape (shapes.py) with the demo's tokenizer")
    ap.add_argument("--tokenizer", default=os.environ.get("S3FT_TEST_TOKENIZER"),
                    help="tokenizer directory for --shape (default: $S3FT_TEST_TOKENIZER, else the demo model's)")
    ap.add_argument("--naive-n", type=int, default=None, help="prompts for the naive loop (default: all)")
    ap.add_argument("--step-sizes", default="1,8,16,32,64", help="batch sizes of the per-step timings")
    ap.add_argument("--step-count", type=int, default=32, help="decode steps timed per batch size")
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
    if args.shape:
        tokenizer = args.tokenizer or materialize(cfg.model)
        dtype = cfg.model.dtype if cfg.model.dtype not in ("auto", None) else "bfloat16"
        cfg.model.name_or_path = random_model_dir(args.shape, tokenizer, dtype)
    if args.max_new_tokens:
        cfg.generation.max_new_tokens = args.max_new_tokens
    task = get_task(cfg.data)
    requests = [GenRequest(e.id, task.messages(e)) for e in task.load("train")]
    path = materialize(cfg.model)
    tok = load_tokenizer(path)
    model = load_model(path, cfg.model)
    backend = HFBackend(path, cfg.model, cfg.generation, model=model, tokenizer=tok)
    max_new = cfg.generation.max_new_tokens

    # Warm-up at full size: allocation and first calls are not throughput.
    batched(backend, requests, max_new)
    stop_runs, plain_runs = [], []
    for _ in range(args.repeats):
        stop_runs.append(batched(backend, requests, max_new, task.answer_complete))
        plain_runs.append(batched(backend, requests, max_new))  # batching alone, no early stop
    b, plain = summary_of(stop_runs), summary_of(plain_runs)
    b_wall = b["wall_s"]
    device = model.device
    bandwidth = copy_bandwidth(device, 2048 if device.type == "cuda" else 256)
    floor_s = weight_bytes_per_step(model) / bandwidth
    first_ids = tok(render_prompt(tok, requests[0]), add_special_tokens=False)["input_ids"]
    sizes = [int(x) for x in args.step_sizes.split(",") if int(x) <= cfg.generation.batch_size]
    steps = {}  # batch size -> per-step ms and fraction of the floor, per side
    for size, row in step_times(backend, first_ids, sizes, args.step_count).items():
        steps[size] = {"eager_ms": round(row["eager_s"] * 1000, 3),
                       "eager_fraction_of_floor": round(floor_s / row["eager_s"], 3)}
    naive_requests = requests[:args.naive_n] if args.naive_n else requests
    n_wall, n_tok = naive(model, tok, naive_requests, max_new, backend.eos_ids)
    gguf = resolve(cfg.model)
    lc = lcb = None
    parallel = min(cfg.generation.batch_size, len(requests))  # llama.cpp batches as many as s3ft does
    llamacpp_missing = importlib.util.find_spec("llama_cpp") is None  # no extra installs it: it compiles
    if not args.skip_llamacpp and gguf[1] and not llamacpp_missing:
        gguf_file = str(Path(gguf[0]) / gguf[1])
        lc = llamacpp(gguf_file, tok, requests, max_new, torch.get_num_threads())
        if llamacpp_batched.available():
            ids = [tok(render_prompt(tok, r), add_special_tokens=False)["input_ids"] for r in requests]
            lcb = llamacpp_batched.generate(gguf_file, ids, max_new, backend.eos_ids, torch.get_num_threads(),
                                            parallel=parallel)
    import transformers
    n_rate = n_tok / n_wall
    result = {
        "model": cfg.model.name_or_path, "shape": args.shape, "dtype": str(model.dtype), "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "threads": torch.get_num_threads(), "prompts": len(requests), "max_new_tokens": max_new,
        "batch_size": cfg.generation.batch_size, "repeats": args.repeats,
        "s3ft_hf": b,
        "s3ft_hf_without_answer_stop": plain,
        "naive_loop": {"wall_s": round(n_wall, 2), "prompts": len(naive_requests), "tokens": n_tok,
                       "tokens_per_s": round(n_rate, 1)},
        # Ratios of tokens/s: the naive loop may run on fewer prompts (`--naive-n`).
        "speedup_tokens_per_s": round(b["tokens_per_s"] / n_rate, 2),
        "speedup_batching_only_tokens_per_s": round(plain["tokens_per_s"] / n_rate, 2),
        "weight_bytes_per_step": weight_bytes_per_step(model), "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1),
        "floor_step_ms": round(floor_s * 1000, 3),
        "steps_ms": steps,
        **({"llamacpp_server_serial": {"wall_s": round(lc[0], 2), "tokens": lc[1],
                                         "tokens_per_s": round(lc[1] / lc[0], 1), "weights": gguf[1]},
            "speedup_vs_llamacpp": round(lc[0] / b_wall, 2)} if lc else {}),
        **({"llamacpp_batched": {"wall_s": round(lcb[0], 2), "tokens": lcb[1], "tokens_per_s": round(lcb[1] / lcb[0], 1),
                                 "parallel": parallel},
            "llamacpp_batched_vs_serial_tokens_per_s": round((lcb[1] / lcb[0]) / (lc[1] / lc[0]), 2)} if lcb else {}),
        "peak_rss_mib": peak_rss_mib(),
    }
    summary = (f"s3ft HF backend: {b['tokens_per_s']} tokens/s (median of {args.repeats}, best "
               f"{b['max_tokens_per_s']}), {result['speedup_tokens_per_s']}x the naive loop's {n_rate:.1f}")
    summary += f"\nper decode step (the bandwidth floor: {floor_s * 1000:.3f} ms):"
    for size, row in steps.items():
        summary += f"\n  batch {size}: " + ", ".join(
            f"{side} {row[side + '_ms']} ms ({row[side + '_fraction_of_floor']} of the floor)"
            for side in ("eager",))
    if llamacpp_missing and not args.skip_llamacpp and gguf[1]:
        summary += ("\nllama.cpp sides left out: llama-cpp-python is not installed "
                    "(pip install 'llama-cpp-python[server]')")
    if lc:
        summary += (f"\nand {result['speedup_vs_llamacpp']}x faster than llama.cpp's server answering one prompt "
                    f"at a time ({b_wall:.1f} s vs {lc[0]:.1f} s)")
    if lcb:
        summary += (f"\nllama.cpp batching the prompts itself: {result['llamacpp_batched']['tokens_per_s']} tok/s, "
                    f"{result['llamacpp_batched_vs_serial_tokens_per_s']}x its one-at-a-time rate")
    return emit(result, summary, args.json)


if __name__ == "__main__":
    main()
