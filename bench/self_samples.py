"""Best-of-k own answers on the demo setting: the target mix of SSR and S3FT, and the base model's NLL of
their targets, for `generation.self_samples` k = 1, 4, 8 (README, "Best-of-k own answers").

    python bench/self_samples.py --out runs/self-samples --k 1,4,8

Each k is a run of configs/demo.yaml up to selection (no training) with methods sft, ssr, s3ft. The
greedy answers are made once, in the first k's directory, and copied into the others (same fingerprint).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from s3ft.compare.runs import RunDir, model_path_of
from s3ft.compare.target_nll import target_nll
from s3ft.forgetting.targets import NLLScorer
from s3ft.config import load_config, to_dict
from s3ft.pipeline import run_pipeline

DEMO = Path(__file__).resolve().parent.parent / "src/s3ft/configs/demo.yaml"
METHODS = ["sft", "ssr", "s3ft"]
GREEDY = ["data", "answers.jsonl", "answers.meta.json", "answers_verdicts.jsonl", "answers_verdicts.meta.json"]


def one_k(k: int, out: Path, first: Path | None) -> dict:
    if first is not None and not (out / "answers.jsonl").exists():
        out.mkdir(parents=True, exist_ok=True)
        for name in GREEDY:
            (shutil.copytree if (first / name).is_dir() else shutil.copy)(first / name, out / name)
    cfg = load_config(DEMO, [f"output_dir={out}", f"generation.self_samples={k}", f"methods=[{', '.join(METHODS)}]"])
    run_pipeline(cfg, until="select")
    run = RunDir(out, to_dict(cfg), out.name, METHODS)
    scorer: list[NLLScorer] = []

    def get_scorer() -> NLLScorer:
        if not scorer:
            scorer.append(NLLScorer(model_path_of(run), to_dict(cfg.model)))
        return scorer[0]
    nll = target_nll(run, METHODS, get_scorer, print)
    stats = {m: json.loads((out / f"train_{m}.stats.json").read_text()) for m in METHODS}
    samples = out / "self_samples_verdicts.jsonl"
    verdicts = [json.loads(line) for line in samples.read_text().splitlines()] if samples.exists() else []
    return {"k": k, "samples": len(verdicts), "accepted": sum(v["correct"] for v in verdicts),
            "mix": {m: stats[m]["target_mix"] for m in METHODS},
            "self_from_samples": {m: stats[m].get("self_from_samples", 0) for m in METHODS},
            "target_nll": {m: {"nll": nll[m]["nll"], "ci95": nll[m]["nll_ci95"],
                               "by_source": {s: v["nll"] for s, v in nll[m]["by_source"].items()}} for m in METHODS}}


def k_values(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,4,8") from None
    if any(k < 1 for k in ks):
        raise argparse.ArgumentTypeError(f"{text!r}: every k must be >= 1")
    return ks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/self-samples"))
    ap.add_argument("--k", default="1,4,8", type=k_values, help="comma-separated values of generation.self_samples")
    args = ap.parse_args()
    results, first = [], None
    for k in args.k:
        out = args.out / f"k{k}"
        results.append(one_k(k, out, first))
        first = first or out
        r = results[-1]
        print(f"k={k}: {r['samples']} samples, {r['accepted']} accepted; mix {r['mix']['ssr']} (ssr), "
              f"{r['mix']['s3ft']} (s3ft); target NLL " +
              ", ".join(f"{m} {r['target_nll'][m]['nll']:.3f}" for m in METHODS))
    (args.out / "self_samples.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
