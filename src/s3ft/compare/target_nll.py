"""Distribution shift of training targets: the base model's NLL of each method's targets (S3FT Fig. 2)."""

from __future__ import annotations

import hashlib
import json
from typing import Callable

from ..artifacts import StageArtifact, fingerprint, read_jsonl
from ..forgetting.targets import NLLScorer, encode_target
from ..progress import progress_bar
from ..strategies import source_group, source_groups
from .runs import RunDir


def histogram_groups() -> list[str]:
    """The display groups of target sources, gold first: 'gold', 'paraphrase', 'own answer'."""
    return list(reversed(source_groups()))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _key(row: dict) -> tuple[str, str, str]:
    """What a target's score depends on besides the scoring setup: its row, prompt and text."""
    return row["id"], _sha(json.dumps(row["messages"], sort_keys=True)), _sha(row["target"])


def target_nll(run: RunDir, methods: list[str], get_scorer: Callable[[], NLLScorer],
               say: Callable[[str], None], memo: dict | None = None) -> dict:
    """Per-row NLL of each method's training targets under the base model, cached in the run dir.

    Pass one `memo` dict to several runs (the seeds of a sweep train on the same targets) to score each
    target once; it is keyed by the same scoring setup (model, dtype, `max_length`) that the cache is.
    """
    max_length = run.get("train", "max_length")
    setup = {"model": {k: run.get("model", k) for k in ("name_or_path", "gguf_file", "dtype")},
             "max_length": max_length, "scoring": "trl-prompt-completion-v1"}
    known = ({} if memo is None else memo).setdefault(fingerprint(setup), {})  # _key(row) -> NLL row
    results = {}
    for method in methods:
        path = run.layout.train(method)
        if method == "base" or not path.is_file():
            continue
        rows = read_jsonl(path)
        if not rows or "target" not in rows[0]:  # opsd: no fixed targets, the student samples its own
            continue
        inputs = {**setup, "targets": fingerprint([[r["id"], r["messages"], r["target"]] for r in rows])}
        # force=True: a cache made for other targets (the run was redone) is recomputed, not an error
        art = StageArtifact(run.layout.nll(method), inputs, force=True)
        keys = {r["id"]: _key(r) for r in rows}
        for r in rows:  # the cache's inputs fingerprint these rows' prompts and targets
            if r["id"] in art.rows:
                known.setdefault(keys[r["id"]], art.rows[r["id"]])
        todo = [r for r in rows if r["id"] not in art.rows]
        if todo:
            with progress_bar(f"nll {run.label}/{method}", len(rows), len(rows) - len(todo)) as advance:
                reuse = [r for r in todo if keys[r["id"]] in known]
                if reuse:
                    art.append([{**known[keys[r["id"]]], "source": r["source"]} for r in reuse])
                    advance(len(reuse))
                fresh = [r for r in todo if keys[r["id"]] not in known]
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
                            known[keys[r["id"]]] = row
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
    groups: dict[str, list[float]] = {g: [] for g in histogram_groups()}
    for m in methods:
        path = run.layout.nll(m)
        if not path.is_file():
            continue
        for r in read_jsonl(path):
            key = (r["id"], r["target_sha"])
            if key in seen or r["tokens"] <= 0:
                continue
            seen.add(key)
            groups.setdefault(source_group(r["source"]), []).append(-r["nll"])
    return groups


