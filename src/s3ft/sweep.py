"""`s3ft sweep`: the pipeline once per training seed, each seed in its own run directory.

The seed is `train.seed`: LoRA initialisation, data order and dropout. Nothing before training
depends on it when decoding is greedy, so the data split, the base model's answers and
paraphrases with their verdicts, the base model's in-domain evaluation and the forgetting meter's
base-model artifacts are computed once, for the first seed, and copied into the others' run
directories before they start. Their fingerprints do not include `train.seed`, so each run
accepts them as its own (and would refuse them, naming the file, if they did not fit).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .config import RunConfig, load_config
from .layout import seed_independent
from .errors import S3FTError
from .pipeline import run_pipeline
from .progress import console


def seed_dir(root: Path, seed: int) -> Path:
    return root / f"seed{seed}"


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise S3FTError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise S3FTError(f"--seeds {text!r}: give distinct seeds, e.g. 0,1,2")
    return seeds


def reuse_seed_independent(src: Path, dst: Path) -> list[str]:
    """Copy the seed-independent artifacts of a finished seed into a new seed's run directory."""
    copied = []
    for pattern in seed_independent():  # each artifact declares it (s3ft.layout)
        for f in sorted(src.glob(pattern)):
            target = dst / f.relative_to(src)
            if f.is_file() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)
                copied.append(str(f.relative_to(src)))
    return copied


def run_sweep(config: Path | None, overrides: list[str], seeds: list[int], force: bool = False) -> list[Path]:
    """Run every seed (each resumes where it stopped); returns the run directories in seed order."""
    base: RunConfig = load_config(config, overrides)
    if base.generation.temperature > 0:
        console.print("[yellow]generation.temperature > 0: base answers still come from the first seed's run "
                      "(sampled once), which keeps every seed on the same targets[/]")
    root = Path(base.output_dir)
    dirs = []
    for seed in seeds:
        out = seed_dir(root, seed)
        if dirs:
            copied = reuse_seed_independent(dirs[0], out)
            if copied:
                console.print(f"seed {seed}: reusing {len(copied)} seed-independent files from {dirs[0]}")
        console.rule(f"seed {seed} -> {out}")
        run_pipeline(load_config(config, list(overrides) + [f"train.seed={seed}", f"output_dir={out}"]), force=force)
        dirs.append(out)
    return dirs
