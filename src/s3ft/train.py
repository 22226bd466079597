"""Fine-tuning: a thin wrapper over TRL's SFTTrainer with a PEFT LoRA config.

Targets are conversational prompt-completion pairs, so TRL applies the chat template
exactly as generation does, masks the prompt out of the loss, and trains the
end-of-turn token. Checkpoints every `save_steps` let a killed run resume.

Memory: TRL's fused LM head already computes the loss in vocabulary tiles without the full
logits; what grows with the batch is the activations kept for the backward pass. So a batch
whose predicted peak exceeds `train.memory_budget_gib` runs as micro-batches with gradient
accumulation (`memory.plan_training`), which gives the same token-averaged loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any, Callable

from .config import ModelConfig, TrainConfig
from .errors import S3FTError
from .memory import MemoryPlan, meta_model_shape, plan_training
from .models import load_tokenizer, pick_device, pick_dtype
from .progress import console


def to_sft_dataset(rows: list[dict]):
    """Selected targets -> a `datasets.Dataset` in TRL's conversational prompt-completion form."""
    from datasets import Dataset
    return Dataset.from_list([{"prompt": r["messages"],
                               "completion": [{"role": "assistant", "content": r["target"]}]} for r in rows])


def sequence_lengths(tok, rows: list[dict]) -> list[int]:
    """Tokens of each row as TRL renders it for training (prompt + target), before truncation."""
    texts = [tok.apply_chat_template(r["messages"] + [{"role": "assistant", "content": r["target"]}], tokenize=False)
             for r in rows]
    return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]] if texts else []


def memory_plan(model_path: str, model_cfg: ModelConfig, cfg: TrainConfig, lengths: list[int],
                **step) -> MemoryPlan:
    """Micro-batch, accumulation and checkpointing that keep training within its memory budget.
    `step`: `plan_training`'s batch_size, grad_accum and full_logits_row, for a trainer of its own (opsd)."""
    import torch
    device = pick_device(model_cfg.device)
    dtype = pick_dtype(model_cfg.dtype, device) if device.startswith("cuda") else torch.float32
    elem = torch.finfo(dtype).bits // 8
    return plan_training(meta_model_shape(model_path, model_cfg.trust_remote_code), lengths, cfg, device,
                         weight_elem=elem, act_elem=elem, **step)


def build_trainer(model_path: str, model_cfg: ModelConfig, cfg: TrainConfig, rows: list[dict], out_dir: Path,
                  max_steps: int | None = None):
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    cfg.check("train")  # a TrainConfig made in code has not been through load_config
    device, dtype, on_gpu = training_device(model_cfg)
    tok = load_tokenizer(model_path, model_cfg.trust_remote_code)
    tok.padding_side = "right"
    plan = memory_plan(model_path, model_cfg, cfg, sequence_lengths(tok, rows))
    # The config comes first: under `accelerate launch` with DeepSpeed ZeRO-3 creating it makes
    # from_pretrained below load each weight straight into its shard (zero.Init).
    args = training_arguments(SFTConfig, cfg, model_cfg, out_dir, batch=plan.micro_batch, accum=plan.grad_accum,
                              logging_steps=max(1, math.ceil(len(rows) / cfg.batch_size / 5)), max_steps=max_steps,
                              gradient_checkpointing=plan.gradient_checkpointing, options=cfg.sft_args,
                              max_length=cfg.max_length, packing=cfg.packing, completion_only_loss=True)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype,
                                                 trust_remote_code=model_cfg.trust_remote_code)
    trainer = SFTTrainer(model=model, args=args, train_dataset=to_sft_dataset(rows), processing_class=tok,
                         peft_config=lora_config(cfg))
    trainer.s3ft_memory_plan = plan
    return trainer


def training_arguments(args_cls: type, cfg: TrainConfig, model_cfg: ModelConfig, out_dir: Path, *, batch: int,
                       accum: int, logging_steps: int, max_steps: int | None, gradient_checkpointing: bool,
                       options: dict, **method_args: Any):
    """The TrainingArguments every trainer shares (`args_cls`: TRL's `SFTConfig`, or a method's own config
    class), from `train:`; `method_args`: the trainer's own; `options` (`train.sft_args`) override s3ft's
    choices for the options it does not own (the config check keeps them off the ones it owns)."""
    import torch
    _, dtype, on_gpu = training_device(model_cfg)
    # transformers 5.x renamed gradient_checkpointing (the old name still works, with a warning).
    fields = {f.name for f in dataclasses.fields(args_cls)}
    ckpt = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    defaults = dict(
        lr_scheduler_type="cosine",
        logging_steps=logging_steps,
        save_total_limit=1,
        report_to="none",
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every trainable weight gets a gradient; searching costs a pass
    )
    return args_cls(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=max_steps if max_steps is not None else -1,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accum,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio of total steps
        save_strategy="steps",
        save_steps=cfg.save_steps,
        **{ckpt: gradient_checkpointing},
        bf16=on_gpu and dtype == torch.bfloat16,
        fp16=on_gpu and dtype == torch.float16,
        use_cpu=not on_gpu,
        seed=cfg.seed,
        data_seed=cfg.seed,
        **method_args,
        **{**defaults, **options},
    )


def training_device(model_cfg: ModelConfig):
    """(device, torch dtype, on a GPU) for training: the model's dtype on a GPU, float32 on CPU."""
    import torch
    device = pick_device(model_cfg.device)
    dtype = pick_dtype(model_cfg.dtype, device)
    on_gpu = device.startswith("cuda")
    if not on_gpu:
        dtype = torch.float32  # CPU training in pure bf16 loses the small LoRA updates
    return device, dtype, on_gpu


def lora_config(cfg: TrainConfig):
    """The adapter every method trains, a peft `LoraConfig` (None: full fine-tuning, `train.lora: false`)."""
    if not cfg.lora:
        return None
    from peft import LoraConfig  # heavy: imported where a trainer is built
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM")


# What a checkpoint's weights may be saved as: adapter or full model, whole or sharded by size.
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")


def checkpoint_complete(ckpt: Path) -> bool:
    """The Trainer writes trainer_state.json last, after weights, optimizer and RNG states: a checkpoint
    is complete when that file is whole and the weights are there (files, or the folders FSDP and
    DeepSpeed save them in)."""
    try:
        json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any((ckpt / name).is_file() for name in WEIGHT_FILES) or any(p.is_dir() for p in ckpt.iterdir())


def latest_checkpoint(folder: Path, remove_incomplete: bool) -> Path | None:
    """The newest complete checkpoint in `folder`. Newer incomplete ones (a run killed while saving)
    are skipped, and removed if `remove_incomplete` (the main process), with a line saying so."""
    steps = {int(m.group(1)): p for p in folder.glob("checkpoint-*")
             if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))}
    for step in sorted(steps, reverse=True):
        if checkpoint_complete(steps[step]):
            return steps[step]
        if remove_incomplete:
            console.print(f"[yellow]{steps[step]}: incomplete checkpoint (killed while saving): removed[/]",
                          soft_wrap=True)
            shutil.rmtree(steps[step], ignore_errors=True)
    return None


def train(model_path: str, model_cfg: ModelConfig, cfg: TrainConfig, rows: list[dict], out_dir: Path) -> dict:
    """Train on `rows` ({messages, target}); save the adapter (or full model) to `out_dir/model`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(model_path, model_cfg, cfg, rows, out_dir)
    sharded = trainer.is_fsdp_enabled or (trainer.is_deepspeed_enabled
                                          and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3)
    if cfg.lora and cfg.merge and sharded:  # PEFT cannot merge into sharded weights
        raise S3FTError("train.merge is not supported with FSDP or ZeRO-3: merge the saved adapter afterwards")
    result = train_and_save(trainer, cfg, out_dir)
    if result is None:
        return {}
    # tokens trained on: every prepared (tokenized, truncated or packed) sequence, once per epoch
    tokens = round(sum(min(len(ids), cfg.max_length) for ids in trainer.train_dataset["input_ids"]) * cfg.epochs)
    return {**loss_stats(trainer, result), "rows": len(rows), "tokens": tokens,
            "runtime_s": result.metrics.get("train_runtime"),
            "memory_plan": dataclasses.asdict(trainer.s3ft_memory_plan)}


def train_and_save(trainer, cfg: TrainConfig, out_dir: Path, before_save: Callable[[Any], None] | None = None):
    """The tail every trainer shares: resume from the newest complete checkpoint, train, save the adapter (or
    full model) to `out_dir/model` and, with `train.merge`, the merged model to `out_dir/merged`.
    `before_save(model)`: a last change to the trained model (e.g. drop an adapter that is not the result).
    Returns the train result on the main process, None on the others."""
    ckpt = latest_checkpoint(out_dir / "checkpoints", remove_incomplete=trainer.is_world_process_zero())
    if ckpt:
        console.print(f"resuming training from {ckpt}", soft_wrap=True)
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if before_save:
        before_save(model)
    final = out_dir / "model"
    if trainer.is_fsdp_enabled:  # a sharded state dict would leave model/ without adapter weights
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(final))  # collective under FSDP/ZeRO-3; writes on the main process only
    if trainer.is_deepspeed_enabled:  # else every later from_pretrained (evaluation) loads ZeRO-3 partitioned
        from transformers.integrations import unset_hf_deepspeed_config
        unset_hf_deepspeed_config()
    if not trainer.is_world_process_zero():
        return None
    trainer.processing_class.save_pretrained(str(final))
    if cfg.lora and cfg.merge:
        merged = model.merge_and_unload()
        merged.save_pretrained(str(out_dir / "merged"))
        trainer.processing_class.save_pretrained(str(out_dir / "merged"))
    return result


def loss_stats(trainer, result) -> dict:
    """The training loss, the first and last logged losses, and the optimizer steps taken."""
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"train_loss": result.training_loss, "first_logged_loss": losses[0] if losses else None,
            "last_logged_loss": losses[-1] if losses else None, "steps": trainer.state.global_step}
