"""Training memory: peak RSS of a few optimizer steps of `s3ft.train`, on a config's real rows.

Trains on the config's first `--rows` training rows with their gold answers as targets (what
`sft` trains on) or, with `--target-tokens N`, with answers of N tokens (what `s3ft` trains on
when the model's own answers are long: the gold reasoning repeated and cut at N tokens), longest
rows first so the first step holds the largest batch, for `--steps` optimizer steps, and reports
the process's peak RSS while loading and while training, beside the prediction of the memory plan
training ran with (the one `--dry-run` prints).

    python bench/train_memory.py configs/gsm8k-qwen05b.yaml --rows 8 --steps 1 --target-tokens 512 \\
        --set data.data_dir=../shared/data --set train.memory_budget_gib=6 --json bench/results/train_memory.json
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
from pathlib import Path

import torch

from emit import emit
from s3ft.config import load_config
from s3ft.memory import RSSMonitor, rss_gib
from s3ft.models import materialize
from s3ft.tasks import get_task
from s3ft.train import build_trainer


def long_targets(rows: list[dict], path: str, n: int) -> list[dict]:
    """Each row's gold answer repeated until it holds `n` tokens, cut there: an answer as long as a
    model's own reasoning can be, in the task's own words."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    out = []
    for r in rows:
        ids = tok(r["target"], add_special_tokens=False)["input_ids"] or [tok.eos_token_id]
        ids = (ids * (n // len(ids) + 1))[:n]
        out.append({**r, "target": tok.decode(ids)})
    return out


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", type=Path)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--target-tokens", type=int, default=None,
                    help="answers of this many tokens instead of the gold ones (long own answers)")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    cfg = load_config(args.config, [f"data.train_limit={args.rows}", *args.overrides])
    task = get_task(cfg.data)
    rows = [{"messages": task.messages(e), "target": e.gold} for e in task.load("train")]
    path = materialize(cfg.model)
    if args.target_tokens:
        rows = long_targets(rows, path, args.target_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with RSSMonitor() as build:
            trainer = build_trainer(path, cfg.model, cfg.train, rows, Path(tmp), max_steps=args.steps)
        # longest first: the first batch is the widest one (padding to its longest row)
        ds = trainer.train_dataset
        trainer.train_dataset = ds.select(sorted(range(len(ds)), key=lambda i: -len(ds[i]["input_ids"])))
        trainer.args.data_seed = None
        trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
        with RSSMonitor() as fit:
            trainer.train()
        wall = time.perf_counter() - t0
        plan = dataclasses.asdict(trainer.s3ft_memory_plan)
        lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    t = cfg.train
    result = {
        "config": str(args.config), "model": cfg.model.name_or_path, "rows": len(rows), "steps": args.steps,
        "target_tokens": args.target_tokens or "gold", "budget_gib": plan["budget_gib"],
        "threads": torch.get_num_threads(),
        "settings": {"batch_size": t.batch_size, "grad_accum": t.grad_accum, "max_length": t.max_length,
                     "lora_r": t.lora_r, "gradient_checkpointing": t.gradient_checkpointing,
                     "micro_batch": trainer.args.per_device_train_batch_size,
                     "accumulation": trainer.args.gradient_accumulation_steps,
                     "activation_checkpointing": bool(trainer.args.gradient_checkpointing)},
        "tokens_per_row": {"min": min(lengths), "max": max(lengths), "mean": round(sum(lengths) / len(lengths), 1)},
        "peak_rss_gib": {"load_and_build": round(build.peak_gib, 2), "train": round(fit.peak_gib, 2),
                         "process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)},
        "rss_after_gib": round(rss_gib(), 2),
        "predicted": plan,
        "wall_s": round(wall, 1),
    }
    return emit(result, f"peak RSS {result['peak_rss_gib']['process']} GiB "
                        f"(training {result['peak_rss_gib']['train']} GiB) for {args.steps} step(s) of "
                        f"{len(rows)} rows", args.json)


if __name__ == "__main__":
    main()
