"""`opsd:` section of a run config: on-policy self-distillation (Shenfeld et al. 2026, arXiv 2601.19897)."""

from __future__ import annotations

from dataclasses import dataclass

PAPER_TEMPLATE = ("{question}\n\nThis is an example for a response to the question:\n{demonstration}\n\n"
                  "Now answer with a response of your own, including the thinking process.")
"""The teacher's user turn in the paper's code: the question, the demonstration, a request for an own answer."""

DISTILLATION_MODES = ("full_logits", "topk_logits", "sampled_token")
TEACHERS = ("base", "ema", "live")


@dataclass
class OPSDConfig:
    """On-policy self-distillation, trained by TRL's `experimental.sdft.SDFTTrainer`.

    The student (the model given the question alone) samples completions; the teacher (the same
    model with the question and the gold answer in context) scores them token by token; the loss
    is a divergence between the two next-token distributions on every completion token. LoRA,
    learning rate, epochs, batch size and seed come from the `train:` section, as for the other
    methods; `train.batch_size` counts completions (rows x `generations_per_row`).
    """

    generations_per_row: int = 1
    """Completions the student samples per training row in each epoch (TRL's `num_generations`; the paper's
    code samples 1). `train.batch_size x train.grad_accum` must be a multiple of it."""
    temperature: float = 1.0
    """Sampling temperature of the student's completions; TRL also divides both models' logits by it in the loss."""
    top_p: float = 1.0
    """Nucleus-sampling mass of the student's completions, in (0, 1]."""
    max_completion_length: int = 256
    """Tokens a sampled completion may have; must be below `train.max_length`, which bounds prompt + completion."""
    distillation_alpha: float = 1.0
    """Direction of the per-token divergence, TRL's `distillation_alpha`: 1 = reverse KL(student ‖ teacher), the
    paper's objective; 0 = forward KL(teacher ‖ student); in between, the generalised Jensen-Shannon
    divergence with that weight (TRL's default, 0.5)."""
    distillation_mode: str = "full_logits"
    """`full_logits`: the divergence over the whole vocabulary (exact); `topk_logits`: over the student's
    `distillation_topk` most likely tokens, renormalised (TRL's default, less memory on large vocabularies);
    `sampled_token`: a one-sample estimate on the sampled token (reverse KL only)."""
    distillation_topk: int = 100
    """Tokens in the support of `topk_logits`."""
    teacher: str = "base"
    """Whose weights the teacher uses (TRL's `teacher_model_kind`): `base`, the model before training (the
    LoRA adapter switched off: no second copy); `ema`, a moving average of the student (a second LoRA
    adapter, as in the paper's code); `live`, the current student."""
    teacher_update_rate: float = 0.05
    """`teacher: ema`: weight of the student in each update of the average, in (0, 1] (the paper's code: 0.01)."""
    loss_tokens_to_skip: int = 0
    """Leading completion tokens left out of the loss (TRL's `num_loss_tokens_to_skip`; the paper's code: 3)."""
    teacher_template: str | None = None
    """The teacher's user turn, with `{question}` (the student's user turn: question and instruction) and
    `{demonstration}` (the gold answer); any system prompt stays. Unset: the task's `teacher_template`,
    which by default is the paper's (`PAPER_TEMPLATE`)."""

    def problems(self) -> list[tuple[str, str]]:
        """(field, what is wrong) for values no range rule covers; empty when fine."""
        out = []
        if self.distillation_mode not in DISTILLATION_MODES:
            out.append(("distillation_mode", f"expected one of {', '.join(DISTILLATION_MODES)}, "
                                             f"got {self.distillation_mode!r}"))
        elif self.distillation_mode == "sampled_token" and self.distillation_alpha != 1.0:
            out.append(("distillation_alpha", "must be 1 (reverse KL) with distillation_mode: sampled_token"))
        if self.teacher not in TEACHERS:
            out.append(("teacher", f"expected one of {', '.join(TEACHERS)}, got {self.teacher!r}"))
        if self.teacher_template is not None and "{demonstration}" not in self.teacher_template:
            out.append(("teacher_template", "must contain {demonstration}: the teacher has to see the gold answer"))
        return out
