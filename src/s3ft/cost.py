"""`s3ft run CONFIG --dry-run`: what a config will cost, before spending it.

Token counts are exact where the text is known in advance and proxies where it is not:

* prompt tokens: every prompt is rendered exactly as the HF backend renders it (chat
  template, generation prompt, prefill) and tokenized with the model's tokenizer;
* output tokens: the model's answers do not exist yet, so the *expected* count is the gold
  answer's length (capped at max_new_tokens), a proxy; the *max* is max_new_tokens per row;
* paraphrases: S3FT paraphrases only rows whose own answer is wrong, unknown before
  generating, so every training row is counted (an upper bound; exact for `sdft`);
* training: prompt + gold target as TRL renders them, cut at train.max_length, times epochs
  (methods that train on the model's own answers or paraphrases differ by their length).

Time is measured, not guessed, and only for the `hf` backend: the model is loaded once and short
greedy generations on the first answer prompts give the prefill rate and the time of one decode
step at batch 1 and at batch min(batch_size, 8); other batch sizes lie on the line through those
two points. Generation time = padded prompt tokens / prefill rate + the decode steps of each
batch, formed as the backend forms them (longest prompts first; a batch decodes until its
longest row is done). Training time uses the rule of thumb forward + backward = 3 forward passes
(4 with gradient checkpointing), a forward pass costing what prefill costs.

Limits: the real answers can be anywhere between a few tokens and max_new_tokens (the "max"
time assumes every batch runs to max_new_tokens); the line through two batch sizes is a guess
beyond them; training pads batches, loads data and saves checkpoints, which the rule of thumb
ignores; code judges (running programs), LLM judges and other backends are not timed.
Nothing is written into the run directory and nothing is trained.
"""

from __future__ import annotations

import io
import math
import time

from .backends import GenRequest
from .backends.hf import render_prompt
from .config import RunConfig
from .distributed import world_size
from .errors import S3FTError
from .judges import judge_names
from .models import load_tokenizer, materialize
from .strategies import needs_paraphrase
from .tasks import get_task

PROBE_BATCH = 8
PROBE_STEPS = 16


def _lengths(tok, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]] if texts else []


def _step_s(probe: dict, n: int) -> float:
    """Seconds of one decode step at batch n: a line through the measured (batch, seconds) points."""
    (b1, t1), (b2, t2) = probe["decode_step_s"][0], probe["decode_step_s"][-1]
    per_row = max((t2 - t1) / (b2 - b1), 0.0) if b2 > b1 else 0.0
    return max(t1 + per_row * (n - b1), 1e-4)


def _secs(s: float) -> float:
    """Seconds to one decimal, but at least 0.1 for nonzero work: a fast machine's estimate is never 0."""
    return max(round(s, 1), 0.1) if s > 0 else 0.0


def _gen_stage(prompts: list[int], expected: list[int], max_new: int, batch_size: int, probe: dict | None,
               ws: int) -> dict:
    """Token totals, and the time the HF backend needs for them (length-sorted batches, left padding)."""
    stage = {"rows": len(prompts), "prompt_tokens": sum(prompts), "output_tokens_expected": sum(expected),
             "output_tokens_max": max_new * len(prompts), "est_s": None, "est_s_max": None}
    if probe and prompts:
        order = sorted(range(len(prompts)), key=lambda i: -prompts[i])
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        prefill = sum(len(b) * max(prompts[i] for i in b) for b in batches) / probe["prefill_tok_s"]
        # a batch decodes until its longest row is done
        decode = sum(max(expected[i] for i in b) * _step_s(probe, len(b)) for b in batches)
        decode_max = sum(max_new * _step_s(probe, len(b)) for b in batches)
        stage["est_s"] = _secs((prefill + decode) / ws)
        stage["est_s_max"] = _secs((prefill + decode_max) / ws)
    return stage


def estimate(cfg: RunConfig, probe: bool = True) -> dict:
    """Rows, tokens and (with `probe` on the `hf` backend) seconds per stage of `cfg`'s run."""
    task = get_task(cfg.data)
    judge = cfg.judge.name or task.judge
    if judge not in judge_names():
        raise S3FTError(f"judge.name: unknown judge '{judge}' (known: {', '.join(judge_names())})")
    train, test = task.load("train"), task.load("test")
    path = materialize(cfg.model)
    try:
        tok = load_tokenizer(path, cfg.model.trust_remote_code)
    except (OSError, ValueError) as e:  # e.g. a served model whose tokenizer is not available here
        raise S3FTError(f"model.name_or_path: cannot load the tokenizer of {path} to count tokens: {e}") from None
    gen, ws = cfg.generation, world_size()
    eval_new = cfg.eval.max_new_tokens or gen.max_new_tokens

    answer_prompts = [render_prompt(tok, GenRequest(e.id, task.messages(e))) for e in train]
    ans_len = _lengths(tok, answer_prompts)
    gold_train = _lengths(tok, [e.gold for e in train])
    para_rows = train if needs_paraphrase(cfg.methods, False) else []
    para_len = _lengths(tok, [render_prompt(tok, GenRequest(e.id, task.paraphrase_messages(e),
                                                            task.paraphrase_prefill)) for e in para_rows])
    test_len = _lengths(tok, [render_prompt(tok, GenRequest(e.id, task.messages(e))) for e in test])
    gold_test = _lengths(tok, [e.gold for e in test])
    seq_len = _lengths(tok, [tok.apply_chat_template(task.messages(e) + [{"role": "assistant", "content": e.gold}],
                                                     tokenize=False) for e in train])

    measured = _probe(cfg, path, tok, answer_prompts) if probe and gen.backend == "hf" and train else None
    stages: dict[str, dict] = {}
    stages["generate:answers"] = _gen_stage(ans_len, [min(g, gen.max_new_tokens) for g in gold_train],
                                            gen.max_new_tokens, gen.batch_size, measured, ws)
    paras = _gen_stage(para_len, [min(g, gen.max_new_tokens) for g in gold_train[:len(para_len)]],
                       gen.max_new_tokens, gen.batch_size, measured, ws)
    paras["upper_bound"] = bool(para_rows) and not needs_paraphrase(cfg.methods, True)
    stages["generate:paraphrases"] = paras

    models = (["base"] if cfg.eval.base else []) + list(cfg.methods)
    one = _gen_stage(test_len, [min(g, eval_new) for g in gold_test], eval_new, gen.batch_size, measured, ws)
    evaluate = {k: (round(v * len(models), 1) if isinstance(v, (int, float)) else v) for k, v in one.items()}
    evaluate["models"] = models

    calls = len(train) + len(para_rows) + len(test) * len(models)
    untimed = {"llm": f"each call is a generation of up to {cfg.judge.max_new_tokens} tokens (not timed)",
               "code": "runs each program in a sandbox with a timeout (not timed)"}
    stages["judge"] = {"rows": calls, "judge": judge, "est_s": 0.0 if measured and judge not in untimed else None,
                       "note": untimed.get(judge, "matches answers as strings or numbers: negligible")}
    if judge == "llm":
        stages["judge"]["output_tokens_max"] = calls * cfg.judge.max_new_tokens

    t = cfg.train
    factor = 4 if t.gradient_checkpointing else 3
    train_tokens = round(sum(min(n, t.max_length) for n in seq_len) * t.epochs)
    steps = math.ceil(math.ceil(len(train) / (t.batch_size * t.grad_accum * ws)) * t.epochs)
    for m in cfg.methods:
        stages[f"train:{m}"] = {"rows": len(train), "tokens": train_tokens, "steps": steps,
                                "est_s": _secs(factor * train_tokens / measured["prefill_tok_s"] / ws)
                                if measured else None}
    stages["evaluate"] = evaluate
    if measured:  # the base model, one training model and one evaluation model per method
        loads = 1 + 2 * len(cfg.methods)
        stages["model loads"] = {"rows": loads, "est_s": _secs(loads * measured["load_s"])}

    known = [s["est_s"] for s in stages.values() if s.get("est_s") is not None]
    return {"config": cfg.output_dir, "model": cfg.model.name_or_path, "backend": gen.backend,
            "world_size": ws, "train_time_factor": factor, "stages": stages,
            "total_est_s": round(sum(known), 1) if measured else None,
            "untimed": [k for k, s in stages.items() if measured and s.get("est_s") is None and s.get("rows")],
            "probe": measured}


def _probe(cfg: RunConfig, path: str, tok, prompts: list[str]) -> dict:
    """Load the model once; time prefill (1 new token) and decode (PROBE_STEPS more) at batch 1 and
    at batch min(batch_size, PROBE_BATCH)."""
    import torch
    from .models import load_model
    t0 = time.perf_counter()
    model = load_model(path, cfg.model)
    load_s = time.perf_counter() - t0
    tok.padding_side = "left"
    batch = prompts[:min(cfg.generation.batch_size, PROBE_BATCH)]
    enc = tok(batch, add_special_tokens=False, padding=True, return_tensors="pt").to(model.device)
    one = tok(batch[:1], add_special_tokens=False, return_tensors="pt").to(model.device)

    def timed(inputs, n: int) -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, temperature=None,
                           top_p=None, top_k=None, pad_token_id=tok.pad_token_id)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    timed(one, 2)  # warm-up: kernels, allocator, caches
    prefill = timed(enc, 1)
    steps = [(len(batch), max(timed(enc, 1 + PROBE_STEPS) - prefill, 1e-6) / PROBE_STEPS)]
    if len(batch) > 1:  # (batch, seconds per decode step) at batch 1 too
        steps.insert(0, (1, max(timed(one, 1 + PROBE_STEPS) - timed(one, 1), 1e-6) / PROBE_STEPS))
    out = {"device": str(model.device), "dtype": str(model.dtype).replace("torch.", ""), "batch": len(batch),
           "load_s": round(load_s, 2), "prefill_tok_s": round(enc["input_ids"].numel() / prefill, 1),
           "decode_step_s": [[b, round(t, 4)] for b, t in steps],
           "decode_tok_s": round(len(batch) / steps[-1][1], 1), "probe_s": round(time.perf_counter() - t0, 1)}
    del model
    return out


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "?"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _n(v) -> str:
    return "" if v is None else f"{v:,}"


def format_estimate(est: dict) -> str:
    """The estimate as a table plus the notes that say what each number means."""
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"estimated cost: {est['config']} ({est['model']}, backend {est['backend']})")
    for col in ("stage", "rows", "prompt tok", "output tok exp / max", "train tok", "steps", "est time (max)"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for name, s in est["stages"].items():
        label = name + (" (<=)" if s.get("upper_bound") else "")
        if name == "evaluate":
            label += f" ({', '.join(s['models'])})"
        if name == "judge":
            label += f" ({s['judge']})"
        out = f"{_n(s.get('output_tokens_expected'))} / {_n(s['output_tokens_max'])}" \
            if "output_tokens_max" in s else ""
        time_s = _fmt_s(s["est_s"]) + (f" ({_fmt_s(s['est_s_max'])})" if s.get("est_s_max") is not None else "")
        t.add_row(label, _n(s["rows"]), _n(s.get("prompt_tokens")), out, _n(s.get("tokens")),
                  _n(s.get("steps")), time_s)
    t.add_row("total", "", "", "", "", "", _fmt_s(est["total_est_s"]), style="bold")
    notes = ["expected output tokens = gold answer length capped at max_new_tokens (a proxy); max = "
             "max_new_tokens per row."]
    if any(s.get("upper_bound") for s in est["stages"].values()):
        notes.append("(<=): upper bound: S3FT paraphrases only the rows whose own answer is judged wrong.")
    p = est["probe"]
    if p:
        notes.append(f"measured on {p['device']} ({p['dtype']}, batch {p['batch']}, probe {p['probe_s']} s): "
                     f"prefill {p['prefill_tok_s']:,.0f} tok/s, decode {p['decode_tok_s']:,.0f} tok/s "
                     f"(step {' / '.join(f'{t * 1000:.0f} ms at batch {b}' for b, t in p['decode_step_s'])}, "
                     "other batch sizes by a straight line), "
                     f"model load {p['load_s']} s.")
        notes.append(f"training time ~ {est['train_time_factor']}x the forward cost of its tokens "
                     "(forward + backward).")
    else:
        notes.append("time not measured (--no-probe or a backend other than hf): tokens only.")
    if est["untimed"]:
        notes.append("not timed (excluded from the total): " + ", ".join(est["untimed"]) + ".")
    judge = est["stages"]["judge"]
    notes.append(f"judge: {judge['note']}.")
    if est["world_size"] > 1:
        notes.append(f"{est['world_size']} processes: steps and times are per process.")
    buf = io.StringIO()
    console = Console(file=buf, width=120, force_terminal=False, color_system=None)
    console.print(t)
    for n in notes:
        console.print(n, highlight=False, soft_wrap=True)
    return buf.getvalue()
