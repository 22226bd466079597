"""On-policy self-distillation (`opsd`; Shenfeld et al. 2026, "Self-Distillation Enables Continual
Learning", arXiv 2601.19897), not to be confused with the `sdft` strategy (Yang et al. 2024's rewrites).

- `config.OPSDConfig`: the run config's `opsd:` section;
- `selection.select_rows`: train_opsd.jsonl, the student's and the teacher's prompts per row;
- `cost`: what the student sampled, for the cost table and report.md;
- registered as a method with its own trainer (`s3ft.methods.register_method`);
- `trainer.train`: TRL's `SDFTTrainer` on s3ft's LoRA settings (imports TRL: load it only to train).
"""

from .. import register_method
from .config import PAPER_TEMPLATE, OPSDConfig
from .cost import cost_lines, sampling_cost, training_shape
from .selection import SOURCE, select_rows, teacher_messages

METHOD = "opsd"


def problems(cfg) -> list[tuple[str, str]]:
    """The section's own problems, then its fit with `train:` (TRL samples whole groups of generations
    per optimizer step; a prompt and its completion share `train.max_length`)."""
    oc, tc = cfg.opsd, cfg.train
    out = [(f"opsd.{name}", problem) for name, problem in oc.problems()]
    if out or METHOD not in cfg.methods:
        return out[:1]
    per_step = tc.batch_size * tc.grad_accum
    if per_step % oc.generations_per_row:
        out.append(("opsd.generations_per_row", f"must divide train.batch_size x train.grad_accum ({per_step}), "
                                                f"got {oc.generations_per_row}"))
    elif oc.max_completion_length >= tc.max_length:
        out.append(("opsd.max_completion_length", f"must be below train.max_length ({tc.max_length}), "
                                                  f"got {oc.max_completion_length}"))
    return out


register_method(METHOD, config=OPSDConfig, select=select_rows, train="s3ft.methods.opsd.trainer:train",
                check=problems, sampling_cost=sampling_cost, cost_lines=cost_lines, training_shape=training_shape, ranges={
                    "generations_per_row": ">= 1", "temperature": "> 0", "top_p": "in (0, 1]",
                    "max_completion_length": ">= 1", "distillation_alpha": "in [0, 1]", "distillation_topk": ">= 1",
                    "teacher_update_rate": "in (0, 1]", "loss_tokens_to_skip": ">= 0"})

__all__ = ["METHOD", "OPSDConfig", "PAPER_TEMPLATE", "SOURCE", "cost_lines", "sampling_cost", "select_rows",
           "teacher_messages"]
