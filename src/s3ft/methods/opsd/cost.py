"""What `opsd` cost, beside SFT on the same rows, for report.md's cost section."""

from __future__ import annotations


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
