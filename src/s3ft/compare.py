"""`s3ft compare`: in-domain gains against general-benchmark drops, with paired error bars.

For every method a run directory holds (base, sft, sdft, ssr, s3ft):

* in-domain accuracy, read from ``eval/<method>.metrics.json`` and the per-id verdicts in
  ``eval/<method>_verdicts.jsonl`` (the two are cross-checked);
* general benchmarks through ``general_eval.evaluate_general`` for the base model and every
  adapter, all with one ``GeneralEvalConfig`` (recorded in compare.json);
* the difference to the base model per benchmark, and the *average drop* as the SSR/S3FT papers
  report it: the mean over benchmarks of (base - method), in accuracy points;
* 95% CIs from a paired bootstrap over the same items (in-domain: per-id correctness; general:
  per-item scores matched by lm-eval doc_id; the average drop resamples items within each benchmark);
* with several run directories of the same task and model but different seeds: mean ± sd over
  seeds (the per-seed tables keep the per-seed bootstrap CIs);
* a distribution-shift statistic: the base model's mean per-token NLL of each method's training
  targets, tokenized the way TRL trains (cached per run in ``nll_<method>.jsonl``), and the
  histogram of per-token log-probabilities of gold / paraphrase / own-answer targets (S3FT Fig. 2);
* a judge audit: a second judge re-judges a seeded sample of the selection decisions.

Everything shown in ``report.md`` / ``report.html`` comes from ``compare.json``.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .artifacts import StageArtifact, fingerprint, read_jsonl, write_json
from .errors import S3FTError
from .progress import console, progress_bar
from .stats import mean_sd, paired_bootstrap_diff, stratified_paired_bootstrap, wilson_ci

METHOD_ORDER = ["base", "sft", "sdft", "ssr", "s3ft"]
# Fields that must agree between run directories compared together (a different seed is fine).
IDENTITY_FIELDS = [("model", "name_or_path"), ("model", "gguf_file"), ("data", "task"), ("data", "task_args")]
SEED_FIELDS = [("data", "seed"), ("train", "seed"), ("generation", "seed")]
SOURCE_GROUP = {"self": "own answer", "paraphrase": "paraphrase", "rewrite": "paraphrase", "gold": "gold"}
GROUPS = ["gold", "paraphrase", "own answer"]


@dataclass
class CompareOptions:
    """Knobs of `compare` besides the general-benchmark settings."""

    bootstrap_iters: int = 2000
    bootstrap_seed: int = 0
    nll: bool = True
    nll_batch_size: int = 16
    audit_judge: str | None = "auto"
    """Second judge for the audit; "auto": `exact` unless the task's judge is `exact` (then `math`); None: no audit."""
    audit_size: int = 50
    audit_seed: int = 0
    cache_dir: str | None = None
    """General-eval cache; default `<out_dir>/cache`."""
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- run directories


@dataclass
class RunDir:
    path: Path
    config: dict
    label: str
    methods: list[str]

    def get(self, section: str, key: str):
        return self.config.get(section, {}).get(key)

    @property
    def seeds(self) -> dict:
        return {f"{s}.{k}": self.get(s, k) for s, k in SEED_FIELDS}


def load_run(path: str | Path) -> RunDir:
    path = Path(path)
    cfg_path = path / "config.json"
    if not path.is_dir():
        raise S3FTError(f"{path}: not a directory (expected a run directory made by `s3ft run` or `s3ft demo`)")
    if not cfg_path.is_file():
        raise S3FTError(f"{path}: no config.json (not a run directory made by `s3ft run` or `s3ft demo`)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise S3FTError(f"{cfg_path}: invalid JSON ({e.msg})") from None
    for section, key in (("model", "name_or_path"), ("data", "task")):
        if not isinstance(config.get(section), dict) or key not in config[section]:
            raise S3FTError(f"{cfg_path}: no {section}.{key}")
    wanted = (["base"] if config.get("eval", {}).get("base", True) else []) + list(config.get("methods", []))
    missing = [m for m in wanted if not (path / "eval" / f"{m}.metrics.json").is_file()]
    if missing:
        raise S3FTError(f"{path}: no in-domain evaluation for {', '.join(missing)} "
                        f"(eval/{missing[0]}.metrics.json missing); finish the run first (`s3ft evaluate`)")
    if "base" not in wanted:
        raise S3FTError(f"{path}: the base model was not evaluated (eval.base: false); nothing to compare against")
    methods = sorted(dict.fromkeys(wanted), key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else 99, m))
    return RunDir(path, config, path.name, methods)


def load_runs(run_dirs: list[Path]) -> list[RunDir]:
    if not run_dirs:
        raise S3FTError("compare: give at least one run directory")
    seen = {}
    runs = []
    for d in run_dirs:
        key = Path(d).resolve()
        if key in seen:
            raise S3FTError(f"{d}: given twice (same directory as {seen[key]})")
        seen[key] = d
        runs.append(load_run(d))
    first = runs[0]
    for r in runs[1:]:
        for section, key in IDENTITY_FIELDS:
            a, b = first.get(section, key), r.get(section, key)
            if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
                raise S3FTError(f"{r.path}: {section}.{key} is {b!r} but {first.path} (the first run directory) "
                                f"has {a!r}; compare only runs of the same task and model")
    labels = [r.label for r in runs]
    for i, r in enumerate(runs):  # unique, readable labels
        if labels.count(r.label) > 1:
            r.label = f"{r.label}#{i + 1}"
    return runs


# ----------------------------------------------------------------------------- in-domain


def in_domain_scores(run: RunDir, method: str) -> tuple[dict, dict[str, float]]:
    """(metrics file contents, {test id: 1.0/0.0}) for one method; the two must agree."""
    mpath = run.path / "eval" / f"{method}.metrics.json"
    metrics = json.loads(mpath.read_text(encoding="utf-8"))
    verdicts = {r["id"]: r for r in read_jsonl(run.path / "eval" / f"{method}_verdicts.jsonl")}
    test_ids = [r["id"] for r in read_jsonl(run.path / "data" / "test.jsonl")]
    absent = [i for i in test_ids if i not in verdicts]
    if absent:
        raise S3FTError(f"{run.path}/eval/{method}_verdicts.jsonl: no verdict for {len(absent)} test rows "
                        f"(e.g. {absent[0]}); finish the run first")
    per_id = {i: 1.0 if verdicts[i]["correct"] else 0.0 for i in test_ids}
    k = int(sum(per_id.values()))
    if k != metrics.get("correct") or len(per_id) != metrics.get("n"):
        raise S3FTError(f"{mpath}: says {metrics.get('correct')}/{metrics.get('n')} correct but the verdicts "
                        f"give {k}/{len(per_id)}; the metrics file is stale (re-run `s3ft evaluate`)")
    return metrics, per_id


def _paired(a: dict, b: dict, iters: int, seed: int) -> tuple[float, float, float, int]:
    common = [k for k in a if k in b]
    if not common:
        return (float("nan"), float("nan"), float("nan"), 0)
    d, lo, hi = paired_bootstrap_diff([a[k] for k in common], [b[k] for k in common], iters, seed)
    return d, lo, hi, len(common)


# ----------------------------------------------------------------------------- general benchmarks


def _items(task_result: dict) -> dict:
    return {str(i["doc_id"]): float(i["score"]) for i in task_result.get("items", [])}


def general_block(base: dict, res: dict, tasks: list[str], iters: int, seed: int) -> dict:
    """Per-benchmark value/delta/CI of `res` vs `base` plus the average drop (points)."""
    out: dict[str, Any] = {"benchmarks": {}}
    pairs = []
    for task in tasks:
        b, m = base["tasks"].get(task, {}), res["tasks"].get(task, {})
        row = {"metric": m.get("metric") or b.get("metric"), "value": m.get("value"), "stderr": m.get("stderr"),
               "n": m.get("n", 0), "skipped": m.get("skipped") or b.get("skipped"),
               "delta": None, "delta_ci95": None, "n_paired": 0}
        if row["skipped"] is None and m.get("value") is not None and b.get("value") is not None:
            bi, mi = _items(b), _items(m)
            common = [k for k in mi if k in bi]
            if len(common) != len(mi) or len(common) != len(bi):
                raise S3FTError(f"{task}: base and {res.get('adapter')} were scored on different items "
                                f"({len(bi)} vs {len(mi)}, {len(common)} shared); settings differ?")
            a_scores, b_scores = [mi[k] for k in common], [bi[k] for k in common]
            _, lo, hi = paired_bootstrap_diff(a_scores, b_scores, iters, seed)
            row.update(delta=m["value"] - b["value"], delta_ci95=[lo, hi], n_paired=len(common))
            pairs.append((b_scores, a_scores))  # base - method: a positive number is a drop
        out["benchmarks"][task] = row
    if pairs:
        drop, lo, hi = stratified_paired_bootstrap(pairs, iters, seed)
        used = [t for t, r in out["benchmarks"].items() if r["delta"] is not None]
        exact = -100 * sum(out["benchmarks"][t]["delta"] for t in used) / len(used)
        out.update(avg_drop_pts=exact, avg_drop_ci95_pts=[100 * lo, 100 * hi], avg_drop_over=used)
        assert abs(exact - 100 * drop) < 1e-6, (exact, drop)
    else:
        out.update(avg_drop_pts=None, avg_drop_ci95_pts=None, avg_drop_over=[])
    return out


def base_block(base: dict, tasks: list[str]) -> dict:
    """The base model's own values (no deltas: it is the reference)."""
    rows = {}
    for task in tasks:
        b = base["tasks"].get(task, {})
        rows[task] = {"metric": b.get("metric"), "value": b.get("value"), "stderr": b.get("stderr"),
                      "n": b.get("n", 0), "skipped": b.get("skipped"), "delta": None, "delta_ci95": None,
                      "n_paired": 0}
    return {"benchmarks": rows, "avg_drop_pts": None, "avg_drop_ci95_pts": None, "avg_drop_over": []}


def model_path_of(run: RunDir) -> str:
    from .config import ModelConfig
    from .models import materialize
    return materialize(ModelConfig(**run.config["model"]))


# ----------------------------------------------------------------------------- NLL of targets


def _ids(x) -> list[int]:
    if isinstance(x, dict) or hasattr(x, "keys"):
        x = x["input_ids"]
    return list(x)


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode_target(tok, messages: list[dict], target: str, max_length: int | None = None) -> tuple[list[int], int]:
    """(token ids of prompt + completion, prompt length), as TRL's SFTTrainer builds them for a
    conversational prompt-completion row: the prompt with the generation prompt, the completion
    = the rest of the chat-templated conversation (target + end-of-turn), cut at max_length."""
    prompt = _ids(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    full = _ids(tok.apply_chat_template(messages + [{"role": "assistant", "content": target}], tokenize=True))
    p = common_prefix_length(prompt, full)
    if max_length:
        full = full[:max_length]
    return full, p


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class NLLScorer:
    """Teacher-forced per-token NLL of completions under one model (loaded once)."""

    def __init__(self, model_path: str, model_cfg: dict, batch_size: int = 4):
        import torch
        from .config import ModelConfig
        from .models import load_model, load_tokenizer
        mc = ModelConfig(**model_cfg)
        self.tok = load_tokenizer(model_path, mc.trust_remote_code)
        self.model = load_model(model_path, mc)
        self.batch_size = batch_size
        self.torch = torch

    def score(self, encoded: list[tuple[list[int], int]]) -> list[tuple[float, int]]:
        """[(mean NLL per completion token, completion tokens)] for [(ids, prompt_len)].

        Rows are left-padded (explicit position ids) so every completion ends at the right edge,
        and the LM head runs only on the last positions (`logits_to_keep`): the vocabulary
        projection of the prompt tokens is never computed.
        """
        torch = self.torch
        out = []
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        dev = self.model.device
        with torch.inference_mode():
            for i in range(0, len(encoded), self.batch_size):
                batch = encoded[i:i + self.batch_size]
                width = max(len(ids) for ids, _ in batch)
                inp = torch.full((len(batch), width), pad, dtype=torch.long)
                att = torch.zeros((len(batch), width), dtype=torch.long)
                for j, (ids, _) in enumerate(batch):
                    inp[j, width - len(ids):] = torch.tensor(ids)
                    att[j, width - len(ids):] = 1
                pos = (att.cumsum(1) - 1).clamp(min=0)
                keep = max(len(ids) - p for ids, p in batch) + 1  # position t predicts token t+1
                logits = self.model(input_ids=inp.to(dev), attention_mask=att.to(dev), position_ids=pos.to(dev),
                                    logits_to_keep=keep).logits
                for j, (ids, p) in enumerate(batch):
                    n = len(ids) - p
                    if n <= 0:
                        out.append((float("nan"), 0))
                        continue
                    # the last n+1 kept positions; the final one predicts past the end and is dropped
                    lp = torch.log_softmax(logits[j, keep - n - 1:keep - 1].float(), dim=-1)
                    tgt = torch.tensor(ids[p:], device=lp.device)
                    nll = -lp.gather(1, tgt[:, None]).squeeze(1)
                    out.append((float(nll.mean()), n))
        return out


def target_nll(run: RunDir, methods: list[str], get_scorer: Callable[[], NLLScorer],
               say: Callable[[str], None]) -> dict:
    """Per-row NLL of each method's training targets under the base model, cached in the run dir."""
    max_length = run.get("train", "max_length")
    results = {}
    memo: dict[tuple[str, str], dict] = {}  # (id, target sha) -> row, shared across methods
    for method in methods:
        path = run.path / f"train_{method}.jsonl"
        if method == "base" or not path.is_file():
            continue
        rows = read_jsonl(path)
        inputs = {"model": {k: run.get("model", k) for k in ("name_or_path", "gguf_file", "dtype")},
                  "max_length": max_length, "scoring": "trl-prompt-completion-v1",
                  "targets": fingerprint([[r["id"], r["messages"], r["target"]] for r in rows])}
        # force=True: a cache made for other targets (the run was redone) is recomputed, not an error
        art = StageArtifact(run.path / f"nll_{method}.jsonl", inputs, force=True)
        for r in art.rows.values():
            memo.setdefault((r["id"], r["target_sha"]), r)
        todo = [r for r in rows if r["id"] not in art.rows]
        if todo:
            with progress_bar(f"nll {run.label}/{method}", len(rows), len(rows) - len(todo)) as advance:
                reuse = [r for r in todo if (r["id"], _sha(r["target"])) in memo]
                if reuse:
                    art.append([{**memo[(r["id"], _sha(r["target"]))], "source": r["source"]} for r in reuse])
                    advance(len(reuse))
                fresh = [r for r in todo if (r["id"], _sha(r["target"])) not in memo]
                if fresh:
                    scorer = get_scorer()
                    full = [encode_target(scorer.tok, r["messages"], r["target"]) for r in fresh]
                    enc = [(ids[:max_length] if max_length else ids, p) for ids, p in full]  # TRL: keep_start
                    order = sorted(range(len(fresh)), key=lambda k: -len(enc[k][0]))
                    step = max(1, scorer.batch_size) * 4
                    for s in range(0, len(order), step):
                        part = order[s:s + step]
                        scores = scorer.score([enc[k] for k in part])
                        new = []
                        for k, (nll, ntok) in zip(part, scores):
                            r = fresh[k]
                            row = {"id": r["id"], "source": r["source"], "target_sha": _sha(r["target"]),
                                   "nll": nll, "tokens": ntok,
                                   "truncated": len(enc[k][0]) < len(full[k][0])}
                            memo[(r["id"], row["target_sha"])] = row
                            new.append(row)
                        art.append(new)
                        advance(len(part))
        art.finish({"rows": len(art.rows)})
        scored = [r for r in art.ordered([r["id"] for r in rows]) if r["tokens"] > 0]
        results[method] = summarize_nll(scored)
        say(f"{run.label}/{method}: target NLL {results[method]['nll']:.3f} nats/token over "
            f"{results[method]['tokens']} tokens")
    return results


def summarize_nll(rows: list[dict], iters: int = 2000, seed: int = 0) -> dict:
    """Token-weighted mean NLL (total NLL / total completion tokens) with a bootstrap CI over rows,
    per source too; plus the per-row mean log-probs (for the histogram)."""
    import numpy as np
    if not rows:
        return {"nll": None, "nll_ci95": None, "rows": 0, "tokens": 0, "by_source": {}, "row_logprob": {}}
    nll = np.array([r["nll"] * r["tokens"] for r in rows])
    tok = np.array([r["tokens"] for r in rows], dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(rows), size=(iters, len(rows)))
    boots = nll[idx].sum(1) / tok[idx].sum(1)
    by_source = {}
    for s in sorted({r["source"] for r in rows}):
        sel = [r for r in rows if r["source"] == s]
        by_source[s] = {"nll": sum(r["nll"] * r["tokens"] for r in sel) / sum(r["tokens"] for r in sel),
                        "rows": len(sel), "tokens": sum(r["tokens"] for r in sel)}
    return {"nll": float(nll.sum() / tok.sum()), "nll_ci95": [float(np.percentile(boots, 2.5)),
                                                             float(np.percentile(boots, 97.5))],
            "rows": len(rows), "tokens": int(tok.sum()), "by_source": by_source,
            "truncated": sum(bool(r.get("truncated")) for r in rows)}


def logprob_histogram_data(run: RunDir, methods: list[str]) -> dict[str, list[float]]:
    """Per-row mean per-token log-prob of distinct targets, grouped as gold / paraphrase / own answer."""
    seen: set = set()
    groups: dict[str, list[float]] = {g: [] for g in GROUPS}
    for m in methods:
        path = run.path / f"nll_{m}.jsonl"
        if not path.is_file():
            continue
        for r in read_jsonl(path):
            key = (r["id"], r["target_sha"])
            if key in seen or r["tokens"] <= 0:
                continue
            seen.add(key)
            groups[SOURCE_GROUP.get(r["source"], r["source"])].append(-r["nll"])
    return groups


# ----------------------------------------------------------------------------- judge audit


def judge_audit(run: RunDir, judge_name: str, size: int = 50, seed: int = 0) -> dict:
    """Re-judge a seeded sample of the selection decisions (own answers and paraphrases) with a
    second judge; agreement rate, confusion counts and a few disagreements.

    Rows the primary judge never saw are left out: truncated generations (always rejected,
    whatever the judge) and paraphrases rejected by the pre-filter (too short, mentions the
    reference...). Both counts are reported.
    """
    from .config import DataConfig
    from .judges import get_judge, judge_generations
    from .tasks import Example, get_task
    task = get_task(DataConfig(**run.config["data"]))
    primary = task.judge
    second = get_judge(judge_name)
    examples = {r["id"]: Example.from_dict(r).to_dict() for r in read_jsonl(run.path / "data" / "train.jsonl")}
    selected = {}
    for m in run.methods:
        p = run.path / f"train_{m}.jsonl"
        if m != "base" and p.is_file():
            for r in read_jsonl(p):
                if r["source"] != "gold":
                    selected.setdefault((r["id"], SOURCE_GROUP[r["source"]]), []).append(m)
    population, truncated, filtered = [], 0, 0
    for kind, gens_file, prefill in (("answer", "answers", ""), ("paraphrase", "paraphrases", task.paraphrase_prefill)):
        if not (run.path / f"{gens_file}_verdicts.jsonl").is_file():
            continue
        verdicts = {v["id"]: v for v in read_jsonl(run.path / f"{gens_file}_verdicts.jsonl")}
        for g in read_jsonl(run.path / f"{gens_file}.jsonl"):
            v = verdicts.get(g["id"])
            if v is None:
                continue
            if g.get("finish_reason") == "length":
                truncated += 1
                continue
            if str(v.get("reason", "")).startswith("filtered:"):
                filtered += 1
                continue
            population.append({"kind": kind, "id": g["id"], "text": prefill + g["text"],
                               "finish_reason": g.get("finish_reason"), "primary": bool(v["correct"]),
                               "primary_reason": v.get("reason")})
    population.sort(key=lambda r: (r["kind"], r["id"]))
    sample = random.Random(f"s3ft-judge-audit:{seed}").sample(population, min(size, len(population)))
    verdicts = judge_generations(second, [examples[r["id"]] for r in sample], sample) if sample else []
    counts = {"both_accept": 0, "primary_only": 0, "second_only": 0, "both_reject": 0}
    disagreements = []
    for r, v in zip(sample, verdicts):
        key = ("both_accept" if v.correct else "primary_only") if r["primary"] else \
              ("second_only" if v.correct else "both_reject")
        counts[key] += 1
        if r["primary"] != v.correct and len(disagreements) < 5:
            disagreements.append({"kind": r["kind"], "id": r["id"], "primary": r["primary"],
                                  "primary_reason": r["primary_reason"], "second": v.correct,
                                  "second_reason": v.reason, "text_tail": r["text"][-160:]})
    n = len(sample)
    agree = counts["both_accept"] + counts["both_reject"]
    sel_in_sample = [r for r in sample if (r["id"], "own answer" if r["kind"] == "answer" else "paraphrase")
                     in selected]
    sel_kept = sum(v.correct for r, v in zip(sample, verdicts)
                   if (r["id"], "own answer" if r["kind"] == "answer" else "paraphrase") in selected)
    return {"primary_judge": primary, "second_judge": judge_name, "seed": seed, "requested": size,
            "population": len(population), "left_out_truncated": truncated, "left_out_prefiltered": filtered,
            "n": n, "counts": counts, "agreement": agree / n if n else None,
            "agreement_ci95": list(wilson_ci(agree, n)) if n else None,
            "selected_in_sample": len(sel_in_sample), "selected_also_accepted": sel_kept,
            "disagreements": disagreements}


# ----------------------------------------------------------------------------- aggregation


def aggregate_seeds(per_run: dict[str, dict], methods: list[str], tasks: list[str]) -> dict:
    """Mean ± sd over run directories (seeds) of every headline number, per method."""
    out = {}
    for m in methods:
        rows = [r[m] for r in per_run.values() if m in r]
        if not rows:
            continue
        agg = {"n_runs": len(rows),
               "in_domain_accuracy": mean_sd([r["in_domain"]["accuracy"] for r in rows]),
               "in_domain_delta": mean_sd([r["in_domain"].get("delta") for r in rows])}
        if any("general" in r for r in rows):
            agg["general"] = {t: {"value": mean_sd([r["general"]["benchmarks"][t]["value"] for r in rows
                                                    if "general" in r]),
                                  "delta": mean_sd([r["general"]["benchmarks"][t]["delta"] for r in rows
                                                    if "general" in r])} for t in tasks}
            agg["avg_drop_pts"] = mean_sd([r["general"]["avg_drop_pts"] for r in rows if "general" in r])
        if any(r.get("nll") for r in rows):
            agg["nll"] = mean_sd([(r.get("nll") or {}).get("nll") for r in rows])
        out[m] = agg
    return out


# ----------------------------------------------------------------------------- main entry


def compare(run_dirs: list[Path], general, out_dir: Path, options: CompareOptions | None = None,
            progress: Callable[[str], None] | None = None) -> dict:
    """Compare the methods of one or more run directories; writes compare.json, report.md/html.

    Args:
        run_dirs: Run directories of the same task and model (several = several seeds).
        general: A `general_eval.GeneralEvalConfig` used identically for every model, or None to
            skip general benchmarks.
        out_dir: Where compare.json, report.md, report.html and plots/ go.
    """
    opts = options or CompareOptions()
    say = progress or (lambda msg: console.print(f"[dim]{msg}[/]"))
    out_dir = Path(out_dir)
    t_all = time.time()
    timings: dict[str, float] = {}
    runs = load_runs([Path(d) for d in run_dirs])
    out_dir.mkdir(parents=True, exist_ok=True)
    methods = sorted({m for r in runs for m in r.methods},
                     key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else 99, m))
    tasks = list(general.tasks) if general is not None else []
    it, bs = opts.bootstrap_iters, opts.bootstrap_seed

    # in-domain (cheap, and validates the run dirs before anything heavy)
    t0 = time.time()
    per_run: dict[str, dict] = {}
    for run in runs:
        _, base_ids = in_domain_scores(run, "base")
        block = {}
        for m in run.methods:
            metrics, ids = in_domain_scores(run, m)
            row = {"accuracy": metrics["accuracy"], "ci95": metrics["ci95"], "n": metrics["n"],
                   "correct": metrics["correct"], "truncated": metrics.get("truncated"),
                   "metrics_file": str(run.path / "eval" / f"{m}.metrics.json")}
            if m != "base":
                d, lo, hi, n = _paired(ids, base_ids, it, bs)
                row.update(delta=d, delta_ci95=[lo, hi], n_paired=n)
            block[m] = {"in_domain": row}
            stats_path = run.path / f"train_{m}.stats.json"
            if stats_path.is_file():
                block[m]["target_mix"] = json.loads(stats_path.read_text(encoding="utf-8"))["target_mix"]
        per_run[run.label] = block
    timings["in_domain_s"] = round(time.time() - t0, 2)

    # judge audit
    t0 = time.time()
    audits = {}
    if opts.audit_judge:
        from .config import DataConfig
        from .tasks import get_task
        for run in runs:
            name = opts.audit_judge
            if name == "auto":
                primary = get_task(DataConfig(**run.config["data"])).judge
                name = "math" if primary == "exact" else "exact"
            if (run.path / "answers_verdicts.jsonl").is_file():
                audits[run.label] = judge_audit(run, name, opts.audit_size, opts.audit_seed)
                a = audits[run.label]
                rate = "n/a" if a["agreement"] is None else f"{a['agreement']:.2f}"
                say(f"{run.label}: judge audit {a['primary_judge']} vs {a['second_judge']}: "
                    f"{a['n']} rows, agreement {rate}")
    timings["judge_audit_s"] = round(time.time() - t0, 2)

    # NLL of training targets under the base model
    t0 = time.time()
    hist = {}
    if opts.nll:
        scorers: dict[str, NLLScorer] = {}
        for run in runs:
            def get_scorer(run=run):
                path = model_path_of(run)
                if path not in scorers:
                    with console.status(f"loading {path} for target NLL"):
                        scorers[path] = NLLScorer(path, run.config["model"], opts.nll_batch_size)
                return scorers[path]
            nll = target_nll(run, run.methods, get_scorer, say)
            for m, s in nll.items():
                per_run[run.label][m]["nll"] = s
            hist[run.label] = logprob_histogram_data(run, run.methods)
        scorers.clear()
    timings["nll_s"] = round(time.time() - t0, 2)

    # general benchmarks
    t0 = time.time()
    settings = None
    skipped: dict[str, str] = {}
    if general is not None:
        from .general_eval import evaluate_general, settings_differences
        cache = Path(opts.cache_dir) if opts.cache_dir else out_dir / "cache"
        for run in runs:
            model = model_path_of(run)
            say(f"{run.label}: general benchmarks for base ({model})")
            base_res = evaluate_general(model, None, general, cache, progress=say)
            settings = base_res["settings"]
            per_run[run.label]["base"]["general"] = base_block(base_res, tasks)
            per_run[run.label]["base"]["general"]["cache_keys"] = _cache_keys(base_res)
            for t, r in base_res["tasks"].items():
                if r.get("skipped"):
                    skipped[t] = r["skipped"]
            for m in run.methods:
                if m == "base":
                    continue
                adapter = run.path / "adapters" / m / "model"
                if not adapter.is_dir():
                    raise S3FTError(f"{run.path}: no adapter for {m} ({adapter} missing)")
                say(f"{run.label}: general benchmarks for {m}")
                res = evaluate_general(model, str(adapter), general, cache, progress=say)
                diff = settings_differences(base_res, res)
                if diff:
                    raise S3FTError(f"{run.path}: general-eval settings of {m} differ from base's: {', '.join(diff)}")
                per_run[run.label][m]["general"] = general_block(base_res, res, tasks, it, bs)
                per_run[run.label][m]["general"]["cache_keys"] = _cache_keys(res)
    timings["general_s"] = round(time.time() - t0, 2)

    data = {
        "schema": 1,
        "task": runs[0].get("data", "task"),
        "model": runs[0].get("model", "name_or_path"),
        "runs": [{"label": r.label, "dir": str(r.path.resolve()), "methods": r.methods, "seeds": r.seeds}
                 for r in runs],
        "methods": methods,
        "benchmarks": tasks,
        "general_settings": settings,
        "skipped_benchmarks": skipped,
        "bootstrap": {"iters": it, "seed": bs, "ci": "95% percentile, paired over the same items"},
        "units": "accuracies and deltas are fractions (0-1); fields ending in _pts are accuracy points (x100)",
        "per_run": per_run,
        "aggregate": aggregate_seeds(per_run, methods, tasks),
        "logprob_histogram": hist,
        "judge_audit": audits,
        "timings": timings,
    }
    t0 = time.time()
    from .compare_report import write_reports
    write_reports(data, out_dir)
    timings["report_s"] = round(time.time() - t0, 2)
    timings["total_s"] = round(time.time() - t_all, 2)
    write_json(out_dir / "compare.json", data)
    return data


def _cache_keys(res: dict) -> dict:
    return {t: r.get("cache_key") for t, r in res["tasks"].items()}
