"""On-policy self-distillation with TRL's `experimental.sdft.SDFTTrainer`.

TRL does the method: it samples the student's completions (transformers `generate`, or vLLM),
builds the teacher's input (teacher prompt + the same completion), masks the prompt and the
padding out of the loss (completion mask up to the first end-of-turn), and computes the
per-token divergence; with a LoRA `peft_config` its `base` teacher is the model with the
adapter switched off and its `ema` teacher a second adapter. s3ft adds the rest, as for SFT:
the LoRA settings, device, dtype (float32 on CPU), seeds and checkpoints of `train:`, a local
tokenizer and model (offline), and two small pieces, each marked below: the teacher prompt is
taken as s3ft rendered it, and the samples are counted and timed (the method's cost).

Batches: `train.batch_size x train.grad_accum` completions make one optimizer step, that is
`/ generations_per_row` rows. TRL samples whole steps of rows, so each epoch leaves out the
remainder of rows (a different one each epoch: the order is shuffled); with fewer rows than
one step holds, the step shrinks to all of them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # s3ft pins what it uses of trl.experimental; tests cover it
from trl.experimental.sdft import SDFTConfig, SDFTTrainer
from trl.experimental.sdft.sdft_trainer import DemonstrationTeacherContextBuilder

from ...config import ModelConfig, TrainConfig
from ...errors import S3FTError
from ...models import load_tokenizer
from ...progress import console
from ...memory import MemoryPlan
from ...train import (loss_stats, lora_config, memory_plan, train_and_save, training_arguments,
                      training_device)
from .config import OPSDConfig
from .cost import step_shape


@dataclasses.dataclass
class SampleCount:
    """What the student sampled: completions, their prompt and completion tokens, seconds spent sampling."""
    completions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


class RenderedTeacherPrompt(DemonstrationTeacherContextBuilder):
    # TRL str.formats one template over the user turn; s3ft renders each teacher conversation per task: taken as is.
    def _compose_teacher_prompt(self, prompt, privileged_context):
        return privileged_context


class OPSDTrainer(SDFTTrainer):
    """`SDFTTrainer` that takes s3ft's teacher conversations as they are and counts what the student samples."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher_context_builder = RenderedTeacherPrompt(self)
        self.sampled = SampleCount()

    def _generate(self, prompt_ids):
        # counted here because TRL keeps no total of its samples, and timed apart from the gradient steps
        t0 = time.perf_counter()
        prompts, completions = super()._generate(prompt_ids)
        s = self.sampled
        s.completions += len(completions)
        s.prompt_tokens += sum(len(p) for p in prompt_ids)
        s.completion_tokens += sum(len(c) for c in completions)
        s.seconds += time.perf_counter() - t0
        return prompts, completions


def to_dataset(rows: list[dict]):
    """train_opsd.jsonl rows -> TRL's columns: `prompt` (the student's) and `privileged_context` (here: the
    teacher's whole conversation, see `RenderedTeacherPrompt`)."""
    from datasets import Dataset
    return Dataset.from_list([{"prompt": r["messages"], "privileged_context": r["teacher_messages"]} for r in rows])


def opsd_memory_plan(model_path: str, model_cfg: ModelConfig, cfg: TrainConfig, opsd: OPSDConfig, tok,
                     rows: list[dict]) -> MemoryPlan:
    """`train.memory_plan` for opsd's steps: each completion is the student's prompt plus up to
    `max_completion_length` sampled tokens, whose whole logits the student and the teacher hold."""
    batch, accum = step_shape(cfg, opsd, len(rows))
    prompts = [len(ids) for ids in tok([tok.apply_chat_template(r["messages"], tokenize=False,
                                                                add_generation_prompt=True) for r in rows],
                                       add_special_tokens=False)["input_ids"]] if rows else []
    return memory_plan(model_path, model_cfg, cfg, [p + opsd.max_completion_length for p in prompts],
                       batch_size=batch, grad_accum=accum, full_logits_row=opsd.max_completion_length)


def build_trainer(model_path: str, model_cfg: ModelConfig, cfg: TrainConfig, opsd: OPSDConfig, rows: list[dict],
                  out_dir: Path, max_steps: int | None = None) -> OPSDTrainer:
    from transformers import AutoModelForCausalLM

    if opsd.max_completion_length >= cfg.max_length:
        raise S3FTError(f"opsd.max_completion_length: must be below train.max_length ({cfg.max_length}), "
                        f"got {opsd.max_completion_length}")
    device, dtype, on_gpu = training_device(model_cfg)
    tok = load_tokenizer(model_path, model_cfg.trust_remote_code)
    batch, accum = step_shape(cfg, opsd, len(rows))
    plan = opsd_memory_plan(model_path, model_cfg, cfg, opsd, tok, rows)
    fields = {f.name for f in dataclasses.fields(SDFTConfig)}
    # train.sft_args options that SDFTConfig also has (TrainingArguments': weight_decay, lr_scheduler_type...)
    # apply here too; SFT-only ones (dataset_text_field...) mean nothing to this trainer.
    options = {k: v for k, v in cfg.sft_args.items() if k in fields}
    args = training_arguments(
        SDFTConfig, cfg, model_cfg, out_dir, batch=plan.micro_batch, accum=plan.grad_accum,  # same completions per step
        logging_steps=max(1, math.ceil(len(rows) * opsd.generations_per_row / (batch * accum) / 5)),
        max_steps=max_steps, gradient_checkpointing=plan.gradient_checkpointing, options=options,
        disable_dropout=False,  # train.lora_dropout applies, as it does for the other methods
        max_prompt_length=cfg.max_length - opsd.max_completion_length,
        max_completion_length=opsd.max_completion_length,
        num_generations=opsd.generations_per_row,
        temperature=opsd.temperature,
        top_p=opsd.top_p,
        distillation_alpha=opsd.distillation_alpha,
        distillation_mode=opsd.distillation_mode,
        distillation_topk=opsd.distillation_topk,
        teacher_model_kind=opsd.teacher,
        teacher_update_rate=opsd.teacher_update_rate,
        num_loss_tokens_to_skip=opsd.loss_tokens_to_skip,
    )
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype,
                                                 trust_remote_code=model_cfg.trust_remote_code)
    trainer = OPSDTrainer(model=model, args=args, train_dataset=to_dataset(rows), processing_class=tok,
                          peft_config=lora_config(cfg))
    trainer.s3ft_memory_plan = plan
    return trainer


def _drop_teacher(model) -> None:
    if "teacher" in getattr(model, "peft_config", {}):  # the `ema` teacher's adapter: not part of the result
        model.delete_adapter("teacher")


def train(model_path: str, model_cfg: ModelConfig, cfg: TrainConfig, opsd: OPSDConfig, rows: list[dict],
          out_dir: Path) -> dict:
    """Train on `rows` (train_opsd.jsonl); save the adapter (or full model) to `out_dir/model`; return the stats."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(model_path, model_cfg, cfg, opsd, rows, out_dir)
    result = train_and_save(trainer, cfg, out_dir, before_save=_drop_teacher)
    if result is None:
        return {}
    s = trainer.sampled
    return {**loss_stats(trainer, result), "rows": len(rows), "tokens": s.prompt_tokens + s.completion_tokens,
            "runtime_s": result.metrics.get("train_runtime"),
            "generations": s.completions, "generations_per_row": round(s.completions / len(rows), 3) if rows else 0.0,
            "generated_tokens": s.completion_tokens, "sampling_s": round(s.seconds, 3)}
