"""GSM8K (hub `openai/gsm8k`, config `main`), or local hub-schema JSONL in `<data_dir>/gsm8k/`."""

from __future__ import annotations

from ._math import MathTask, MathTaskArgs, clean_gsm8k_gold, gsm8k_final
from . import Example, register_task
from .hub import load_rows


@register_task("gsm8k", args=MathTaskArgs)
class GSM8K(MathTask):
    def load_split(self, split: str) -> list[Example]:
        rows = load_rows(self.cfg.data_dir, "gsm8k", split, hub=("openai/gsm8k", "main"),
                         fields=("question", "answer"))
        return [Example(id=f"gsm8k-{split}-{i}", question=r["question"], gold=clean_gsm8k_gold(r["answer"]),
                        meta={"answer": gsm8k_final(r["answer"])}) for i, r in enumerate(rows)]
