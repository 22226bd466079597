"""Training speed: `s3ft.train.train` vs plain TRL `SFTTrainer` + PEFT LoRA, same data.

Same model (the demo's SmolLM2-135M), same rows (the demo's training queries with their
gold answers, shaped like train_sft.jsonl), same LoRA r/alpha/dropout/targets, learning
rate and schedule, batch size, max_length, epochs, dtype and seed. Everything else on the
plain side is TRL's default, so the ratio includes whatever s3ft adds (logging, checkpoints,
dataset building). Runs alternate (s3ft, trl, trl, s3ft, ...) in one process after a
warm-up of each, and both sides are timed end to end: load model, build trainer, train,
save the adapter. Before timing, the two trainers' tokenized datasets are checked equal.

    python bench/train_speed.py --rows 48 --repeats 5 --json bench/results/train_speed.json
    python bench/train_speed.py --shape 1.5b --dtype bfloat16 --repeats 3   # a GPU: Qwen2.5-1.5B's dims

`--shape` trains a random-weight model of a real model's shape (`shapes.py`): speed depends on
the shape, and a GPU machine without network has no weights to load.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from emit import emit, peak_rss_mib
from s3ft.config import load_config
from s3ft.models import materialize, pick_device, pick_dtype
from s3ft.tasks import get_task
from s3ft.train import build_trainer, train
from shapes import SHAPES, random_model_dir

DEMO = Path(__file__).resolve().parents[1] / "src" / "s3ft" / "configs" / "demo.yaml"


def plain_trl(model_path: str, cfg, rows: list[dict], out: Path, build_only: bool = False):
    """What a TRL user writes by hand: SFTTrainer on prompt-completion pairs with a LoraConfig."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    t = cfg.train
    on_gpu = pick_device(cfg.model.device).startswith("cuda")
    dtype = pick_dtype(cfg.model.dtype, "cuda") if on_gpu else torch.float32  # as s3ft: fp32 on CPU
    args = SFTConfig(output_dir=str(out), num_train_epochs=t.epochs, per_device_train_batch_size=t.batch_size,
                     gradient_accumulation_steps=t.grad_accum, learning_rate=t.learning_rate,
                     lr_scheduler_type="cosine", warmup_steps=t.warmup_ratio, max_length=t.max_length,
                     packing=t.packing, gradient_checkpointing=t.gradient_checkpointing, seed=t.seed,
                     bf16=on_gpu and dtype == torch.bfloat16, fp16=on_gpu and dtype == torch.float16,
                     use_cpu=not on_gpu, report_to="none")
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    data = Dataset.from_list([{"prompt": r["messages"], "completion": [{"role": "assistant", "content": r["target"]}]}
                              for r in rows])
    lora = LoraConfig(r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
                      target_modules=t.target_modules, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=lora)
    if build_only:
        return trainer
    result = trainer.train()
    trainer.save_model(str(out / "model"))
    return {"runtime_s": result.metrics["train_runtime"], "steps": trainer.state.global_step}


def timed(fn, *args) -> dict:
    gc.collect()
    t0 = time.perf_counter()
    stats = fn(*args)
    return {"wall_s": time.perf_counter() - t0, "train_s": stats["runtime_s"], "steps": stats["steps"]}


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=48, help="training rows (the demo trains on 48)")
    ap.add_argument("--epochs", type=float, default=None, help="default: the demo config's")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each side (this VM drifts ~10%%)")
    ap.add_argument("--model", default=None, help="another model instead of the demo's")
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None,
                    help="a random-weight model of this shape (shapes.py) with the demo's tokenizer")
    ap.add_argument("--tokenizer", default=os.environ.get("S3FT_TEST_TOKENIZER"),
                    help="tokenizer directory for --shape (default: $S3FT_TEST_TOKENIZER, else the demo model's)")
    ap.add_argument("--dtype", default=None, help="model.dtype override, e.g. bfloat16 on a GPU")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    cfg = load_config(DEMO, [f"data.train_limit={args.rows}"])
    if args.model:
        cfg.model.name_or_path = args.model
    if args.epochs:
        cfg.train.epochs = args.epochs
    if args.dtype:
        cfg.model.dtype = args.dtype
    if args.shape:
        tokenizer = args.tokenizer or materialize(cfg.model)
        dtype = cfg.model.dtype if cfg.model.dtype != "auto" else "bfloat16"
        cfg.model.name_or_path = random_model_dir(args.shape, tokenizer, dtype)
    task = get_task(cfg.data)
    rows = [{"id": e.id, "messages": task.messages(e), "target": e.gold, "source": "gold", "reason": "gold"}
            for e in task.load("train")]
    path = materialize(cfg.model)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Same data: both trainers must tokenize the rows identically, with the same loss mask.
        a = build_trainer(path, cfg.model, cfg.train, rows, tmp / "check-s3ft")
        b = plain_trl(path, cfg, rows, tmp / "check-trl", build_only=True)
        cols = ("input_ids", "labels")
        assert all(a.train_dataset[c] == b.train_dataset[c] for c in cols), "s3ft and TRL tokenize or mask differently"
        tokens = sum(min(len(ids), cfg.train.max_length) for ids in a.train_dataset["input_ids"])
        del a, b

        sides = {"s3ft": lambda out, r: train(path, cfg.model, cfg.train, r, out),
                 "trl": lambda out, r: plain_trl(path, cfg, r, out)}
        warm = rows[:2 * cfg.train.batch_size]  # first-call costs (lazy imports, allocator) are not throughput
        for name, fn in sides.items():
            timed(fn, tmp / f"warm-{name}", warm)
        runs: dict[str, list[dict]] = {"s3ft": [], "trl": []}
        for i in range(args.repeats):
            order = ["s3ft", "trl"] if i % 2 == 0 else ["trl", "s3ft"]  # ABBA: drift hits both sides
            for name in order:
                runs[name].append(timed(sides[name], tmp / f"{name}-{i}", rows))
                print(f"repeat {i} {name}: {runs[name][-1]['wall_s']:.1f} s wall, "
                      f"{runs[name][-1]['train_s']:.1f} s in trainer.train", flush=True)

    n = len(rows) * cfg.train.epochs
    side = {}
    for name, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        train_s = statistics.median(r["train_s"] for r in rs)
        side[name] = {"wall_s": round(wall, 2), "train_s": round(train_s, 2), "steps": rs[0]["steps"],
                      "samples_per_s": round(n / wall, 2), "tokens_per_s": round(tokens * cfg.train.epochs / wall, 1),
                      "train_samples_per_s": round(n / train_s, 2), "runs_wall_s": [round(r["wall_s"], 2) for r in rs]}
    t = cfg.train
    result = {
        "model": cfg.model.name_or_path, "shape": args.shape, "device": pick_device(cfg.model.device),
        "threads": torch.get_num_threads(),
        "rows": len(rows), "epochs": t.epochs, "tokens_per_epoch": tokens, "repeats": args.repeats,
        "settings": {"lora_r": t.lora_r, "lora_alpha": t.lora_alpha, "lora_dropout": t.lora_dropout,
                     "learning_rate": t.learning_rate, "batch_size": t.batch_size, "max_length": t.max_length,
                     "dtype": "float32" if pick_device(cfg.model.device) == "cpu" else cfg.model.dtype},
        **side,
        # > 1: s3ft is slower. End to end (load, build, train, save), and trainer.train alone.
        "ratio_wall": round(side["s3ft"]["wall_s"] / side["trl"]["wall_s"], 3),
        "ratio_train": round(side["s3ft"]["train_s"] / side["trl"]["train_s"], 3),
        "peak_rss_mib": peak_rss_mib(),
    }
    return emit(result, f"s3ft training takes {result['ratio_wall']}x the time of plain TRL end to end "
                        f"({result['ratio_train']}x in trainer.train): {side['s3ft']['samples_per_s']} vs "
                        f"{side['trl']['samples_per_s']} samples/s", args.json)


if __name__ == "__main__":
    main()
