"""Distribution shift of training targets: the base model's NLL of each method's targets (S3FT Fig. 2)."""

from __future__ import annotations

import hashlib
from typing import Callable

from ..artifacts import StageArtifact, fingerprint, read_jsonl
from ..config import ModelConfig
from ..models import load_model, load_tokenizer
from ..progress import progress_bar
from ..strategies import source_group, source_groups
from .runs import RunDir
from .scoring import Encoded, completion_logprobs, token_nll


def histogram_groups() -> list[str]:
    """The display groups of target sources, gold first: 'gold', 'paraphrase', 'own answer'."""
    return list(reversed(source_groups()))


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
        mc = ModelConfig(**model_cfg)
        self.tok = load_tokenizer(model_path, mc.trust_remote_code)
        self.model = load_model(model_path, mc)
        self.batch_size = batch_size
        self.torch = torch

    @classmethod
    def from_loaded(cls, model, tok, batch_size: int = 4) -> "NLLScorer":
        """A scorer on a model already in memory (e.g. the generation backend's)."""
        import torch
        scorer = cls.__new__(cls)
        scorer.model, scorer.tok, scorer.batch_size, scorer.torch = model, tok, batch_size, torch
        return scorer

    def score(self, encoded: list[Encoded]) -> list[tuple[float, int]]:
        """[(mean NLL per completion token, completion tokens)] for [(ids, prompt_len)]."""
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        out = []
        with self.torch.inference_mode():
            for i in range(0, len(encoded), self.batch_size):
                batch = encoded[i:i + self.batch_size]
                for (ids, p), lp in zip(batch, completion_logprobs(self.model, batch, pad)):
                    out.append((float("nan"), 0) if lp is None else (float(token_nll(lp, ids, p).mean()), len(ids) - p))
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
        if not rows or "target" not in rows[0]:  # opsd: no fixed targets, the student samples its own
            continue
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
    groups: dict[str, list[float]] = {g: [] for g in histogram_groups()}
    for m in methods:
        path = run.path / f"nll_{m}.jsonl"
        if not path.is_file():
            continue
        for r in read_jsonl(path):
            key = (r["id"], r["target_sha"])
            if key in seen or r["tokens"] <= 0:
                continue
            seen.add(key)
            groups.setdefault(source_group(r["source"]), []).append(-r["nll"])
    return groups


