"""On-policy self-distillation (`opsd`; Shenfeld et al. 2026, "Self-Distillation Enables Continual
Learning", arXiv 2601.19897), not to be confused with the `sdft` strategy (Yang et al. 2024's rewrites).

- `config.OPSDConfig`: the run config's `opsd:` section;
- `selection.select_rows`: train_opsd.jsonl, the student's and the teacher's prompts per row;
- `cost`: what the student sampled, for the cost table and report.md;
- `trainer.train`: TRL's `SDFTTrainer` on s3ft's LoRA settings (imports TRL: load it only to train).
"""

from ...config import register_section
from .config import PAPER_TEMPLATE, OPSDConfig
from .cost import cost_lines, sampling_cost
from .selection import SOURCE, select_rows, teacher_messages

METHOD = "opsd"

register_section(METHOD, OPSDConfig, ranges={
    "generations_per_row": ">= 1", "temperature": "> 0", "top_p": "in (0, 1]", "max_completion_length": ">= 1",
    "distillation_alpha": "in [0, 1]", "distillation_topk": ">= 1", "teacher_update_rate": "in (0, 1]",
    "loss_tokens_to_skip": ">= 0"})

__all__ = ["METHOD", "OPSDConfig", "PAPER_TEMPLATE", "SOURCE", "cost_lines", "sampling_cost", "select_rows",
           "teacher_messages"]
