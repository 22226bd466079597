"""What `opsd` cost, beside SFT on the same rows, for report.md's cost section."""

from __future__ import annotations

from .. import TrainingShape
from .config import OPSDConfig


SAMPLING_KEYS = ("generations", "generations_per_row", "generated_tokens", "sampling_s")


def sampling_cost(stats: dict) -> dict:
    """From training stats (train_meta.json), what the student sampled, for the stage's cost; {} for other methods."""
    return {k: stats[k] for k in SAMPLING_KEYS if k in stats}


def cost_lines(stages: dict[str, dict], method: str = "opsd") -> list[str]:
    """Markdown lines on the method's sampling and its training time against `train:sft`'s; [] if it did not train."""
    c = stages.get(f"train:{method}")
    if not c or "generations" not in c:
        return []
    line = (f"{method} sampled {c['generations']} completions while training ({c['generations_per_row']} per row, "
            f"{c['generated_tokens']} tokens, {c['sampling_s']:.1f} s of its {c['wall_s']:.1f} s)")
    sft = stages.get("train:sft")
    if sft and sft["rows"] == c["rows"] and sft["wall_s"] > 0:
        line += f"; its training took {c['wall_s'] / sft['wall_s']:.1f}x the time of SFT on the same {c['rows']} rows"
    return [line + "."]


def step_shape(cfg, opsd: OPSDConfig, rows: int) -> tuple[int, int]:
    """(completions per device batch, gradient accumulation): `train`'s, or one step of every row when fewer."""
    if rows * opsd.generations_per_row < cfg.batch_size * cfg.grad_accum:
        return rows * opsd.generations_per_row, 1
    return cfg.batch_size, cfg.grad_accum


def training_shape(opsd: OPSDConfig, cfg, prompts: list[int]) -> TrainingShape:
    """Each epoch, every row's `generations_per_row` completions of up to `max_completion_length` tokens are
    sampled, then trained on (prompt + completion, whole logits held: `opsd_memory_plan`'s step shape)."""
    completions = [n for n in prompts for _ in range(opsd.generations_per_row)]
    batch, accum = step_shape(cfg, opsd, len(prompts))
    epochs = -(-cfg.epochs // 1)
    return TrainingShape([n + opsd.max_completion_length for n in completions], batch, accum,
                         full_logits_row=opsd.max_completion_length,
                         sampled_prompts=completions * int(epochs), sample_max_tokens=opsd.max_completion_length)
