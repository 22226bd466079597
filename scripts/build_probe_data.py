"""Rebuild the forgetting meter's shipped probe data from hub-schema JSONL mirrors.

    python scripts/build_probe_data.py DATA_DIR     # DATA_DIR holds squad_v2/, mmlu/, ifeval/, ai2_arc/

Writes src/s3ft/data/{general_text,ifeval_prompts}.jsonl and src/s3ft/data/probe/ai2_arc/ARC-Easy/test.jsonl.
The choice of rows is deterministic (seeded), so the files are reproducible byte for byte.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src" / "s3ft" / "data"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write(path: Path, items: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items), encoding="utf-8")
    print(f"{path}: {len(items)} rows")


def main(data: Path) -> None:
    # 64 Wikipedia paragraphs: up to 5 distinct contexts from each of SQuAD v2's articles, in order.
    per_article: dict[str, list[str]] = {}
    for r in rows(data / "squad_v2" / "validation.jsonl"):
        ctx = per_article.setdefault(r["title"], [])
        if r["context"] not in ctx and len(ctx) < 5:
            ctx.append(r["context"])
    wiki = [c for cs in per_article.values() for c in cs][:64]
    # 64 exam questions with their right answer, from MMLU's dev split (few-shot pool, never scored).
    dev = rows(data / "mmlu" / "dev.jsonl")
    random.Random(0).shuffle(dev)
    exams = [f"{r['question'].strip()}\nAnswer: {r['choices'][r['answer']]}" for r in dev[:64]]
    write(OUT / "general_text.jsonl", [{"id": f"wiki-{i}", "text": t} for i, t in enumerate(wiki)]
          + [{"id": f"mmlu-dev-{i}", "text": t} for i, t in enumerate(exams)])
    prompts = rows(data / "ifeval" / "train.jsonl")
    write(OUT / "ifeval_prompts.jsonl", sorted(random.Random(0).sample(prompts, 64), key=lambda r: r["key"]))
    arc = rows(data / "ai2_arc" / "ARC-Easy" / "test.jsonl")
    keep = set(random.Random(0).sample(range(len(arc)), 300))
    write(OUT / "probe" / "ai2_arc" / "ARC-Easy" / "test.jsonl", [r for i, r in enumerate(arc) if i in keep])


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
