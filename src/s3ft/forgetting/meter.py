"""The forgetting meter over one run directory: what stage `forgetting` writes and `compare` reads.

    <run>/forgetting/probe_responses.jsonl   the base model's greedy responses to the instruction probe
    <run>/forgetting/drift_<label>.jsonl     per probe item and model: tokens, base NLL, NLL, KL (sums)
    <run>/forgetting/lm_eval/                lm-eval per-item results of the labelled probe (a cache)
    <run>/forgetting/summary.json            every measurement with its 95% CI, per model

A label is `base` (the base model against itself: the meter's zero), a method (`sft`, `s3ft`, ...)
or a control (`control-untrained`, `control-planted`). Every measurement is kept per item as a
`records.Paired` so that `compare` can pool seeds item by item.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..artifacts import StageArtifact, fingerprint, write_json
from ..config import ForgettingConfig, ModelConfig
from ..errors import S3FTError
from ..layout import TRAIN_META, RunLayout
from ..progress import progress_bar
from . import drift, likelihood
from .lm_eval_bridge import GeneralEvalConfig, evaluate_general
from .records import Estimate, Paired
from .targets import encode_target

FOLDER = RunLayout().forgetting.name
CONTROLS = {"untrained": "control-untrained", "planted": "control-planted"}
BUILTIN_PROBE_DIR = drift.PACKAGE_DATA / "probe"


def probe_messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def adapter_fingerprint(adapter: str | None) -> str | None:
    """What an adapter's drift rows depend on: the fingerprint its training recorded."""
    if adapter is None:
        return None
    meta = Path(adapter).parent / TRAIN_META
    if not meta.is_file():
        raise S3FTError(f"{adapter}: no {meta.name} beside it (not an adapter trained by s3ft)")
    return json.loads(meta.read_text(encoding="utf-8"))["fingerprint"]


def probe_items(tok, fc: ForgettingConfig, responses: list[dict]) -> list[drift.ProbeItem]:
    """The text passages and the (prompt, base response) pairs, tokenized for scoring."""
    items = [drift.ProbeItem(f"text/{r['id']}", "text", drift.encode_text(tok, r["text"], fc.text_max_tokens))
             for r in drift.load_text_probe(fc.text_file, fc.text_limit)]
    for r in responses:
        ids, start = encode_target(tok, probe_messages(r["prompt"]), r["text"])
        items.append(drift.ProbeItem(f"response/{r['id']}", "response", (ids, start)))
    return items


def measure_drift(run_dir: Path, model_path: str, model_cfg: ModelConfig, model_id: dict, fc: ForgettingConfig,
                  adapters: dict[str, str | None], responses: list[dict], force: bool = False) -> None:
    """Score every probe item under every labelled model; resumes per item and label."""
    scorer = None
    arts: dict[str, StageArtifact] = {}
    items: list[drift.ProbeItem] = []
    for label, adapter in adapters.items():
        if scorer is None:
            scorer = drift.DriftScorer(model_path, model_cfg, fc.batch_size)
            items = probe_items(scorer.tok, fc, responses)
        inputs = {"model": model_id, "adapter": adapter_fingerprint(adapter), "scoring": drift.SCORING_VERSION,
                  "probe": fingerprint([[it.id, it.encoded] for it in items])}
        arts[label] = StageArtifact(RunLayout(run_dir).drift(label), inputs, force=force)
    todo = [it for it in items if any(it.id not in a.rows for a in arts.values())]
    if todo:
        need = {label: adapters[label] for label, a in arts.items() if any(it.id not in a.rows for it in todo)}
        with progress_bar(f"drift ({len(need)} models)", len(items), len(items) - len(todo)) as advance:
            for n, rows in scorer.score(todo, need):
                for label, part in rows.items():
                    arts[label].append([r.to_dict() for r in part])
                advance(n)
    for label, art in arts.items():
        art.finish({"rows": len(art.rows)})


def probe_benchmark_config(fc: ForgettingConfig, data_dir: str | None, model_cfg: ModelConfig):
    """The lm-eval settings of the labelled probe (None when it has no benchmarks)."""
    if not fc.benchmarks:
        return None
    where = str(BUILTIN_PROBE_DIR) if fc.benchmark_data_dir == "builtin" else (fc.benchmark_data_dir or data_dir)
    return GeneralEvalConfig(tasks=list(fc.benchmarks), data_dir=where, limit=fc.benchmark_limit,
                             batch_size=16, dtype=model_cfg.dtype, device=model_cfg.device)


def run_probe_benchmarks(run_dir: Path, model_path: str, gcfg, adapters: dict[str, str | None],
                         say: Callable[[str], None]) -> dict[str, dict]:
    """lm-eval results per label (cached under forgetting/lm_eval: a rerun loads nothing)."""
    results = {}
    with progress_bar(f"probe benchmarks ({len(adapters)} models)", len(adapters)) as advance:
        for label, adapter in adapters.items():
            results[label] = evaluate_general(model_path, adapter, gcfg, RunLayout(run_dir).probe_lm_eval, progress=say)
            advance()
    return results


def benchmark_pairs(base: dict, res: dict, benchmarks: list[str]) -> dict[str, Paired]:
    """{"<bench>/accuracy" | "<bench>/logp_correct" | "<bench>/margin": per-item tuned - base}."""
    out: dict[str, Paired] = {}
    for bench in benchmarks:
        b, t = base["tasks"].get(bench, {}), res["tasks"].get(bench, {})
        if b.get("skipped") or t.get("skipped") or b.get("value") is None or t.get("value") is None:
            continue
        bi = {str(i["doc_id"]): i["score"] for i in b["items"]}
        ti = {str(i["doc_id"]): i["score"] for i in t["items"]}
        if bi.keys() != ti.keys():
            raise S3FTError(f"{bench}: base and tuned model were scored on different items "
                            f"({len(bi)} vs {len(ti)}); settings differ?")
        ids = sorted(bi)
        out[f"{bench}/accuracy"] = ([ti[i] - bi[i] for i in ids], [1.0] * len(ids))
        for measure, pair in likelihood.paired_items(bench, b["items"], t["items"]).items():
            out[f"{bench}/{measure}"] = pair
    return out


def run_pairs(run_dir: Path, labels: list[str], probe_results: dict[str, dict] | None,
              benchmarks: list[str]) -> dict[str, dict[str, Paired]]:
    """{label: {measure key: Paired}} from a run's forgetting artifacts (and lm-eval results)."""
    out: dict[str, dict[str, Paired]] = {}
    for label in labels:
        path = RunLayout(run_dir).drift(label)
        pairs: dict[str, Paired] = {}
        if path.is_file():
            rows = sorted(drift.read_rows(path), key=lambda r: r.id)  # item order pairs models item by item
            pairs.update({f"drift/{k}": v for k, v in drift.paired_items(rows).items()})
        if probe_results and label in probe_results and "base" in probe_results:
            pairs.update({f"probe/{k}": v for k, v in
                          benchmark_pairs(probe_results["base"], probe_results[label], benchmarks).items()})
        out[label] = pairs
    return out


def estimates(pairs: dict[str, Paired], iters: int = 2000, seed: int = 0) -> dict[str, dict]:
    return {key: Estimate.pooled([p], iters, seed).to_dict() for key, p in pairs.items()}


def probe_accuracy(results: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """{label: {bench: {value, n}}}: each model's own accuracy on the labelled probe."""
    return {label: {t: {"value": r.get("value"), "n": r.get("n", 0), "metric": r.get("metric")}
                    for t, r in res["tasks"].items()} for label, res in results.items()}


def write_summary(run_dir: Path, pairs: dict[str, dict[str, Paired]], accuracy: dict, fc: ForgettingConfig) -> dict:
    summary = {
        "measures": {**{f"drift/{k}": v for k, v in drift.MEASURES.items()},
                     **{f"probe/<benchmark>/{k}": v for k, v in likelihood.MEASURES.items()},
                     "probe/<benchmark>/accuracy": "accuracy change, tuned - base (fraction; < 0 = forgetting)"},
        "ci": "95% percentile bootstrap over probe items (2000 resamples); token-weighted for drift",
        "models": {label: estimates(p) for label, p in pairs.items()},
        "probe_accuracy": accuracy,
        "controls": {c: CONTROLS[c] for c in fc.controls},
    }
    write_json(RunLayout(run_dir).forgetting_summary, summary)
    return summary
