"""A run's own contrasts (each method against SFT) from the artifacts in its directory, for report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..config import RunConfig
from ..forgetting import meter
from .contrasts import contrasts_block, default_pairs
from .in_domain import in_domain_scores
from ..forgetting.records import Paired
from .runs import RunDir


def run_pairs(run_dir: Path, config: RunConfig, methods: list[str],
              model_path: Callable[[], str] | None = None) -> dict[str, dict[str, Paired]]:
    """{model: {measure: per-item change vs base}}: in-domain verdicts, the meter's drift rows and, when
    `model_path` is given and the meter has a labelled probe, its (cached) lm-eval results."""
    run = RunDir(Path(run_dir), config, Path(run_dir).name, methods)
    _, base = in_domain_scores(run, "base")
    out: dict[str, dict[str, Paired]] = {}
    for m in methods:
        if m != "base":
            _, ids = in_domain_scores(run, m)
            out[m] = {"in_domain/accuracy": ([ids[k] - base[k] for k in base], [1.0] * len(base))}
    labels = [m for m in methods if (run.path / meter.FOLDER / f"drift_{m}.jsonl").is_file()]
    if labels:
        fc = config.forgetting
        gcfg = meter.probe_benchmark_config(fc, config.data.data_dir, config.model)
        results = None
        if gcfg is not None and model_path is not None:  # cached by the forgetting stage: nothing is recomputed
            results = meter.run_probe_benchmarks(run.path, model_path(), gcfg,
                                                 {m: _adapter(run.path, m) for m in labels}, lambda msg: None)
        for m, pairs in meter.run_pairs(run.path, labels, results, list(fc.benchmarks)).items():
            out.setdefault(m, {}).update(pairs)
    return out


def _adapter(run_dir: Path, label: str) -> str | None:
    return None if label == "base" else str(run_dir / "adapters" / label / "model")


def run_contrasts(run_dir: Path, config: RunConfig, methods: list[str], model_path: Callable[[], str] | None = None,
                  iters: int = 2000, seed: int = 0) -> dict[str, dict]:
    """compare.json's "contrasts" block for one run: every method against SFT ({} when SFT was not run)."""
    if not default_pairs(methods):
        return {}
    return contrasts_block({"run": run_pairs(run_dir, config, methods, model_path)}, methods, [], iters, seed)
