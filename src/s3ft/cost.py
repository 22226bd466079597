"""`s3ft run CONFIG --dry-run`: what a config will cost, before spending it.

Token counts are exact where the text is known in advance and estimated where it is not:

* prompt tokens: every prompt is the one the run sends (both take them from `s3ft.plan`),
  rendered exactly as the HF backend renders it (chat template, generation prompt, prefill)
  and tokenized with the model's tokenizer; each generation stage names its requests'
  fingerprint (`requests`), as the run's artifact records it;
* output tokens: the probe generates answers (and paraphrases) for `PROBE_ROWS` real training
  rows through the real backend, with the run's max_new_tokens and the task's stop rules, and
  the rows' expected lengths follow those; without the probe they fall back to the gold
  answer's length, which for a chatty model can be a third of the real one;
* paraphrases: S3FT paraphrases only the rows whose own answer is wrong: the probe's judged
  answers give the expected share; `rows` stays the upper bound (every row);
* training: prompt + target as TRL renders them, cut at train.max_length, times epochs; the
  targets are gold (`sft`) or, for the other methods, the mix of own answers, paraphrases and
  gold answers that the probe's verdicts predict;
* evaluation: the base model answers like the probe; a trained model's answers move towards
  its targets' lengths with optimizer steps x learning rate (`FULL_TRAINING`, a rule of thumb);
* replay (`train.replay`, when on): the base model's samples (a generation stage; every sample counted at
  the replay's max_new_tokens, an upper bound) and, per method that takes it, the replay batches each
  training step adds (`_replay_train_cost`);
* forgetting meter (when on): the base model's responses to the instruction probe (a generation
  stage; every response counted at forgetting.max_new_tokens, an upper bound), the planted
  control's training, and the drift score's forward passes (`_forgetting_stages`);
* peak memory: weights, optimizer state, activations at the micro-batch training will use and
  TRL's logits tile (`memory.plan_training`, the same plan `train.build_trainer` follows);
  for generation, weights and the KV cache of a full batch at max_new_tokens.

Time is measured, not guessed, and only for the `hf` backend. The probe loads the model once,
times prefill and one decode step at batch 1 and at batch min(batch_size, PROBE_BATCH) (other
widths lie on the line through those two points), then generates its rows through the backend.
A stage's generation time simulates the backend's schedule (longest prompts first, batches of
batch_size, a batch carrying on with its unfinished rows and taking in waiting prompts once a
quarter has finished) with those step times, scaled so that the simulation of the probe's own
generation matches the time it took. Training time comes from `PROBE_TRAIN_STEPS` real
optimizer steps on the probe rows at the planned micro-batch (the first is a warm-up): seconds
per trained token (forward and backward) plus a fixed cost per optimizer step (gradient
clipping, optimizer, scheduler, logging).

Limits: a few probe rows stand for the rest (their lengths, their verdicts); the step-time line
is a guess beyond PROBE_BATCH rows; code judges (running programs), LLM judges, the forgetting
meter's lm-eval probe and other backends are not timed. Nothing is written into the run directory (the probe trains in a
temporary directory), and the estimate is kept in the s3ft cache so that a run of the same
config can put it beside what it cost (`summary.json`, `estimate`).
"""

from __future__ import annotations

import io
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import fingerprint
from .backends import GenRequest, render_prompt, resolve_engine
from .forgetting import drift
from .config import RunConfig, to_dict
from .distributed import world_size
from .errors import S3FTError
from .judges import get_judge, judge_args, judge_class, judge_generations, judge_names
from .memory import GIB, RUNTIME_GIB, MemoryPlan, ModelShape, meta_model_shape
from .methods import TrainingShape, get_method
from .models import cache_dir, load_model, load_tokenizer, materialize, pick_device, pick_dtype
from .plan import GenStage, Plan, plan
from .progress import console
from .train import build_trainer, memory_plan, sequence_lengths
from .strategies import STRATEGIES, needs_paraphrase
from .tasks import get_task

PROBE_BATCH = 16
PROBE_STEPS = 16
PROBE_ROWS = 8
PROBE_TRAIN_STEPS = 3


def _lengths(tok, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]] if texts else []


def _prompt_lengths(tok, stage: GenStage) -> list[int]:
    """Each request's prompt tokens, rendered as the backends render it."""
    return _lengths(tok, [render_prompt(tok, r) for r in stage.requests])


def _sequence_lengths(tok, rows: list[dict]) -> list[int]:
    """Each training row's tokens: its prompt and target in the chat template, uncut."""
    return _lengths(tok, [tok.apply_chat_template(r["messages"] + [{"role": "assistant", "content": r["target"]}],
                                                  tokenize=False) for r in rows])


def _step_s(probe: dict, n: int) -> float:
    """Seconds of one decode step at batch n: a line through the measured (batch, seconds) points."""
    (b1, t1), (b2, t2) = probe["decode_step_s"][0], probe["decode_step_s"][-1]
    per_row = max((t2 - t1) / (b2 - b1), 0.0) if b2 > b1 else 0.0
    return max(t1 + per_row * (n - b1), 1e-4)


def simulate_generation(prompts: list[int], outputs: list[int], batch_size: int, compact: bool, step_s,
                        prefill_tok_s: float) -> float:
    """Seconds the HF backend needs for prompts of `prompts` tokens answered in `outputs` tokens.

    Its schedule: longest prompts first; a batch is prefilled (left-padded to its longest prompt) and
    decodes at the width it has; with `compact`, each `generate` call ends once a quarter of its rows
    have finished, which then leave, and waiting prompts take their places (prefilled on joining);
    without it, a batch decodes until its longest row is done.
    """
    order = sorted(range(len(prompts)), key=lambda i: -prompts[i])
    waiting, active, t = list(order), [], 0.0

    def admit(k: int) -> float:
        joined = [waiting.pop(0) for _ in range(k)]
        active.extend(max(outputs[i] - 1, 0) for i in joined)  # the first token comes with the prefill
        return len(joined) * max(prompts[i] for i in joined) / prefill_tok_s if joined else 0.0

    t += admit(min(batch_size, len(waiting)))
    while active:
        width = len(active)
        if compact and width > 1:
            steps = sorted(active)[math.ceil(width / 4) - 1]
        else:
            steps = max(active)
        t += steps * step_s(width)
        active[:] = [a - steps for a in active if a > steps]
        if compact or not active:
            t += admit(min(batch_size - len(active), len(waiting)))
    return t


def _cycled(values: list[int], n: int) -> list[int]:
    """n lengths drawn from `values` in turn: the probe's distribution, tail included, over n rows."""
    return [values[i % len(values)] for i in range(n)] if values else [0] * n


def _gen_stage(prompts: list[int], expected: list[int], max_new: int, batch_size: int, compact: bool,
               probe: dict | None, ws: int, shape: ModelShape | None = None, elem: int = 4) -> dict:
    """Token totals, the time the HF backend needs for them, and its predicted peak memory."""
    stage = {"rows": len(prompts), "prompt_tokens": sum(prompts), "output_tokens_expected": sum(expected),
             "output_tokens_max": max_new * len(prompts), "est_s": None, "est_s_max": None}
    if shape and prompts:
        stage["peak_rss_gib"] = _gen_peak_gib(shape, min(batch_size, len(prompts)), max(prompts), max_new, elem)
    if probe and prompts:
        scale = probe["generation"]["scale"]
        sim = lambda out: scale * simulate_generation(prompts, out, batch_size, compact,  # noqa: E731
                                                      lambda w: _step_s(probe, w), probe["prefill_tok_s"])
        stage["est_s"] = _secs(sim(expected) / ws)
        stage["est_s_max"] = max(_secs(sim([max_new] * len(prompts)) / ws), stage["est_s"])
    return stage


def _gen_peak_gib(shape: ModelShape, batch: int, prompt: int, max_new: int, elem: int) -> float:
    """Weights, the KV cache of a full batch at its longest context, one layer's prefill activations."""
    kv = 2 * shape.layers * shape.kv_dim * elem * batch * (prompt + max_new)
    prefill = batch * prompt * (3 * shape.intermediate + 4 * shape.hidden) * elem
    return round((shape.params * elem + kv + prefill) / GIB + RUNTIME_GIB, 2)


def _secs(s: float) -> float:
    """Seconds to one decimal, but at least 0.1 for nonzero work: a fast machine's estimate is never 0."""
    return max(round(s, 1), 0.1) if s > 0 else 0.0


@dataclass
class _Pricing:
    """What every stage's price depends on: the config, the tokenizer, the probe's measurements, the shape."""

    cfg: RunConfig
    tok: Any
    path: str
    measured: dict | None
    ws: int
    shape: ModelShape | None
    elem: int

    def gen_stage(self, prompt_lens: list[int], out_lens: list[int], max_new: int) -> dict:
        gen = self.cfg.generation
        return _gen_stage(prompt_lens, out_lens, max_new, gen.batch_size, gen.compact_batches, self.measured,
                          self.ws, self.shape, self.elem)


def estimate(cfg: RunConfig, probe: bool = True) -> dict:
    """Rows, tokens, peak memory and (with `probe` on the `hf` backend) seconds per stage of `cfg`'s run."""
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
    gen = cfg.generation
    backend = resolve_engine(gen, cfg.model)["backend"]  # `auto` prices the engine the run will use
    eval_new = cfg.eval.max_new_tokens or gen.max_new_tokens
    # Every prompt priced is the plan's, the one the run sends: no paraphrase verdicts yet, so the
    # paraphrase stage holds every row that may need one (an upper bound for s3ft).
    p = plan(cfg, task, train, test)
    gold_train = _lengths(tok, [e.gold for e in train])
    gold_test = _lengths(tok, [e.gold for e in test])
    gold_rows = p.gold_rows()  # training rows with gold targets, and their prompt part (chat template included)
    measured = None
    if probe and backend == "hf" and train:
        measured = _probe(cfg, task, judge, path, tok, train, p.answers.requests, p.paraphrases().requests, gold_rows)
    ctx = _Pricing(cfg, tok, path, measured, world_size(), *_shape(cfg, path))
    lengths = _expected_lengths(cfg, measured, gold_train, gold_test, gen.max_new_tokens, eval_new)

    stages = _generation_stages(ctx, p, lengths)
    replay_seq = None
    if p.replay is not None:
        stages[p.replay.name] = _replay_samples_stage(p.replay, tok, gen, measured, ctx.ws, ctx.shape, ctx.elem)
        replay_seq = max(_prompt_lengths(tok, p.replay)) + p.replay.max_new_tokens
    per_model = _eval_per_model(ctx, p, lengths)
    stages["judge"] = _judge_stage(ctx, p, judge)
    t = cfg.train
    steps = math.ceil(math.ceil(len(train) / (t.batch_size * t.grad_accum * ctx.ws)) * t.epochs)
    prompt_part = [s - g for s, g in zip(_sequence_lengths(tok, gold_rows), gold_train)]
    for m in cfg.methods:
        method = get_method(m)
        if method is not None and method.training_shape is not None:  # its own trainer, its own shape
            declared = method.training_shape(getattr(cfg, m), cfg.train, prompt_part)
            stages[f"train:{m}"] = _declared_train_stage(ctx, declared, measured)
            continue
        seq = [a + n for a, n in zip(prompt_part, lengths["target"][m])]
        stages[f"train:{m}"] = _train_stage(cfg, path, seq, steps, measured, ctx.ws,
                                            None if method is not None else replay_seq)
    stages["evaluate"] = _evaluate_stage(ctx, p, per_model, bool(test))
    if p.probe:
        stages.update(_forgetting_stages(cfg, p, tok, path, steps, measured, ctx.ws, ctx.shape, ctx.elem))
    if measured:  # the base model, one training model and one evaluation model per method, the meter's models
        loads = 1 + 2 * len(cfg.methods)
        if p.probe:
            loads += 1 + sum(rows is not None for rows in p.controls.values())
        stages["model loads"] = {"rows": loads, "est_s": _secs(loads * measured["load_s"])}
    return _total(ctx, stages)


def _generation_stages(ctx: _Pricing, p: Plan, lengths: dict) -> dict[str, dict]:
    """The base model's answers, best-of-k samples (if any) and paraphrases, as the plan lists them."""
    answers, para_stage = p.answers, p.paraphrases()
    ans_len = _prompt_lengths(ctx.tok, answers)
    stages: dict[str, dict] = {}
    stages[answers.name] = ctx.gen_stage(ans_len, _cycled(lengths["answer"], len(ans_len)), answers.max_new_tokens)
    stages[answers.name]["requests"] = answers.key
    samples = p.self_samples_stage() if "samples" in p.stages else None  # best-of-k: of the rejected rows
    if samples is not None:
        sample_len = _prompt_lengths(ctx.tok, samples)
        expected = round(len(sample_len) * (1 - lengths["p_answer"]))
        extra = ctx.gen_stage(sample_len[:expected], _cycled(lengths["answer"], expected), samples.max_new_tokens)
        extra.update(rows=len(sample_len), rows_expected=expected, upper_bound=True, requests=samples.key)
        stages[samples.name] = extra
    para_len = _prompt_lengths(ctx.tok, para_stage)
    every_row = needs_paraphrase(ctx.cfg.methods, True)  # a method paraphrases rows whatever their answer
    expected_para_rows = len(para_len) if every_row else round(len(para_len) * (1 - lengths["p_answer"]))
    paras = ctx.gen_stage(para_len[:expected_para_rows], _cycled(lengths["paraphrase"], expected_para_rows),
                          para_stage.max_new_tokens)
    paras["rows"], paras["rows_expected"] = len(para_len), expected_para_rows
    paras["output_tokens_max"] = para_stage.max_new_tokens * len(para_len)
    paras["upper_bound"] = bool(para_len) and not every_row
    paras["requests"] = para_stage.key
    stages[para_stage.name] = paras
    return stages


def _eval_per_model(ctx: _Pricing, p: Plan, lengths: dict) -> dict[str, dict]:
    """Each model's evaluation, as the plan lists them."""
    prompt_lens: dict[str, list[int]] = {}  # by requests: every model is asked the same, tokenized once
    per_model = {}
    for m, stage in p.evals.items():
        key = stage.key
        if key not in prompt_lens:
            prompt_lens[key] = _prompt_lengths(ctx.tok, stage)
        per_model[m] = ctx.gen_stage(prompt_lens[key], lengths["eval"][m], stage.max_new_tokens)
        per_model[m]["requests"] = key
    return per_model


def _evaluate_stage(ctx: _Pricing, p: Plan, per_model: dict[str, dict], has_test: bool) -> dict:
    stage = {k: (round(sum(s[k] for s in per_model.values()), 1) if isinstance(v, (int, float)) else v)
             for k, v in next(iter(per_model.values())).items() if k not in ("peak_rss_gib", "requests")}
    stage.update(models=list(p.evals), per_model=per_model)
    if ctx.shape and has_test:
        stage["peak_rss_gib"] = max(s["peak_rss_gib"] for s in per_model.values())
    return stage


def _judge_stage(ctx: _Pricing, p: Plan, judge: str) -> dict:
    """Every generation the plan lists is judged once; a judge's declared `cost_note` says what a dry run
    cannot time."""
    samples = p.self_samples_stage() if "samples" in p.stages else None
    calls = len(p.answers.requests) + len(p.paraphrases().requests) + sum(len(s.requests) for s in p.evals.values())
    calls += len(samples.requests) if samples is not None else 0
    untimed = judge_class(judge).cost_note
    judge_new = getattr(judge_args(judge, ctx.cfg.judge), "max_new_tokens", None)  # a judge that generates
    stage = {"rows": calls, "judge": judge, "est_s": 0.0 if ctx.measured and not untimed else None,
             "note": untimed.format(n=judge_new) if untimed else "matches answers as strings or numbers: negligible"}
    if judge_new is not None:
        stage["output_tokens_max"] = calls * judge_new
    return stage


def _total(ctx: _Pricing, stages: dict[str, dict]) -> dict:
    """The estimate: the stages, their total where timed, and what is not; saved when measured."""
    cfg, measured = ctx.cfg, ctx.measured
    known = [s["est_s"] for s in stages.values() if s.get("est_s") is not None]
    untimed = [k for k, s in stages.items() if measured and s.get("est_s") is None and s.get("rows")]
    untimed += [s["untimed_part"] for s in stages.values() if measured and s.get("untimed_part")]
    backend = resolve_engine(cfg.generation, cfg.model)["backend"]  # `auto` prices the engine the run will use
    est = {"config": cfg.output_dir, "model": cfg.model.name_or_path, "backend": backend,
           "world_size": ctx.ws, "stages": stages, "total_est_s": round(sum(known), 1) if measured else None,
           "untimed": untimed, "probe": measured}
    if measured:
        save_estimate(cfg, est)
    return est


def _forgetting_stages(cfg: RunConfig, p: Plan, tok, path: str, steps: int, probe: dict | None,
                       ws: int, shape: ModelShape | None, elem: int) -> dict[str, dict]:
    """The forgetting meter, priced roughly from its requests (see `pipeline.stage_forgetting`).

    The base model answers the instruction probe (a generation stage; instructions have no gold answer to
    calibrate on, so every response is expected to run to `forgetting.max_new_tokens`, an upper bound); the
    planted control trains like `sft`; the drift score is forward passes over the text passages and the
    (prompt, response) pairs, once for the base model and once per adapter, at the probe's prefill rate.
    The lm-eval probe, if any, is not timed.
    """
    fc, gen, responses = cfg.forgetting, cfg.generation, p.probe
    prompts = responses.requests
    prompt_len = _prompt_lengths(tok, responses)
    stages = {responses.name: _gen_stage(prompt_len, [responses.max_new_tokens] * len(prompts),
                                         responses.max_new_tokens, gen.batch_size, gen.compact_batches, probe,
                                         ws, shape, elem)}
    stages[responses.name]["requests"] = responses.key
    for label, rows in p.controls.items():  # the trained controls: the planted one, like sft
        if rows is not None:
            stages[f"train:{label}"] = _train_stage(cfg, path, _sequence_lengths(tok, rows), steps, probe, ws)
    text = [len(drift.encode_text(tok, r["text"], fc.text_max_tokens)[0])
            for r in drift.load_text_probe(fc.text_file, fc.text_limit)]
    items = text + [n + fc.max_new_tokens for n in prompt_len]
    adapters = len(cfg.methods) + len(p.controls)
    passes = 1 + adapters  # the base model once per batch, then each adapter
    # `scored_tokens`, not `tokens`: a stage's cost counts generated tokens, and scoring generates none
    stage = {"rows": 1 + adapters, "scored_tokens": sum(items) * passes, "est_s": None,
             "note": f"{len(text)} passages + {len(prompts)} responses, scored {passes} times"}
    if probe:
        stage["est_s"] = _secs(stage["scored_tokens"] / probe["prefill_tok_s"] / ws)
    if fc.benchmarks:
        stage["untimed_part"] = f"forgetting: lm-eval probe ({', '.join(fc.benchmarks)}) on {1 + adapters} models"
    if shape and items:  # weights, and per row of a batch its vocabulary-wide log-probs of base and adapter
        width = min(fc.batch_size, len(items)) * max(items)
        stage["peak_rss_gib"] = round((shape.params * elem + 3 * width * shape.vocab * 4) / GIB + RUNTIME_GIB, 2)
    stages["forgetting"] = stage
    return stages


def _shape(cfg: RunConfig, path: str) -> tuple[ModelShape | None, int]:
    """The model's sizes (built on the meta device, no weights read) and its bytes per element in training."""
    import torch
    device = pick_device(cfg.model.device)
    dtype = pick_dtype(cfg.model.dtype, device) if device.startswith("cuda") else torch.float32
    try:
        return meta_model_shape(path, cfg.model.trust_remote_code), torch.finfo(dtype).bits // 8
    except Exception:  # noqa: BLE001 - a served model without weights or config here: no memory prediction
        return None, 4


def _target_shares(method: str, p: float, q: float) -> tuple[float, float]:
    """(own answer, paraphrase) shares of a method's targets from what its strategy needs, given the shares
    p of answers and q of paraphrases the judge accepts: own answers where accepted, then paraphrases of
    the rest (`failed_rows`) or of every row (`every_row`), else gold. A method with its own trainer: (0, 0)."""
    strategy = STRATEGIES.get(method)
    if strategy is None:
        return 0.0, 0.0
    a = p if strategy.needs.own_answer else 0.0
    b = {"none": 0.0, "failed_rows": (1 - a) * q, "every_row": q}[strategy.needs.paraphrase]
    return a, b


def _expected_lengths(cfg: RunConfig, probe: dict | None, gold_train: list[int], gold_test: list[int],
                      max_new: int, eval_new: int) -> dict:
    """Per-row output lengths to expect per stage: the probe's where it ran, else the gold answers' (a proxy).

    A method trains on its own answer where the probe's judge accepted answers, on a paraphrase where it
    accepted paraphrases (s3ft, sdft), else on the gold answer: each row's expected target length mixes its
    gold length with the probe's lengths in those shares. A trained model's answers move from the base
    model's lengths towards its targets' as far as its training goes (`_trained_share`).
    """
    cap = lambda xs, n: [min(x, n) for x in xs]  # noqa: E731
    if not probe:
        return {"answer": cap(gold_train, max_new), "paraphrase": cap(gold_train, max_new), "p_answer": 0.0,
                "target": {m: gold_train for m in cfg.methods},
                "eval": {m: cap(gold_test, eval_new) for m in ["base", *cfg.methods]}}
    g = probe["generation"]
    own = g["answer_tokens"]
    para = g.get("paraphrase_tokens") or cap(gold_train, max_new)
    para_target = [n + g.get("prefill_tokens", 0) for n in para]
    p, q = g["answer_accepted"], g.get("paraphrase_accepted", 0.0)

    def mix(method: str, gold: list[int]) -> list[int]:
        a, b = _target_shares(method, p, q)
        own_i, para_i = _cycled(own, len(gold)), _cycled(para_target, len(gold))
        return [round(a * o + b * r + (1 - a - b) * n) for o, r, n in zip(own_i, para_i, gold)]
    w = _trained_share(cfg, len(gold_train))
    base_eval = _cycled(own, len(gold_test))

    def trained(method: str) -> list[int]:
        return [round(w * t + (1 - w) * b) for t, b in zip(mix(method, gold_test), base_eval)]
    return {"answer": own, "paraphrase": para, "p_answer": p,
            "target": {m: mix(m, gold_train) for m in cfg.methods},
            "eval": {"base": cap(base_eval, eval_new), **{m: cap(trained(m), eval_new) for m in cfg.methods}}}


FULL_TRAINING = 6e-3
"""Optimizer steps x learning rate after which a trained model answers about as long as its targets: a
rule of thumb from two runs here (the demo, 12 steps at 5e-4, answers like its targets; Qwen2.5-0.5B on
16 GSM8K rows, 4 steps at 2e-4, still mostly like the base model)."""


def _trained_share(cfg: RunConfig, rows: int) -> float:
    t = cfg.train
    steps = math.ceil(math.ceil(rows / (t.batch_size * t.grad_accum * world_size())) * t.epochs)
    return min(1.0, steps * t.learning_rate / FULL_TRAINING)


def _replay_samples_stage(stage: GenStage, tok, gen, probe: dict | None, ws: int, shape: ModelShape | None,
                          elem: int) -> dict:
    """The replay samples (`train.replay`): a neutral prompt has no gold answer to calibrate on, so every sample
    is expected to run to the replay's max_new_tokens (an upper bound)."""
    prompts = _prompt_lengths(tok, stage)
    out = _gen_stage(prompts, [stage.max_new_tokens] * len(prompts), stage.max_new_tokens, gen.batch_size,
                     gen.compact_batches, probe, ws, shape, elem)
    out.update(upper_bound=True, requests=stage.key)
    return out


REPLAY_BASE_PASS = 1 / 3
"""A replay batch's cost per token, in trained tokens: the tuned model's forward and backward (1) plus the
base model's forward without gradients (about a third of that)."""


def _replay_train_cost(cfg: RunConfig, plan: MemoryPlan, steps: int, seq: int, probe: dict | None) -> dict:
    """What `train.replay` adds to a method's training: each micro-batch replays ceil(batch_size / accumulation)
    samples of up to `seq` tokens (prompt + replay max_new_tokens: an upper bound)."""
    per_step = math.ceil(cfg.train.replay.batch_size / plan.grad_accum) * plan.grad_accum
    tokens = steps * per_step * seq
    out = {"replay_rows": steps * per_step, "replay_tokens": tokens}
    if probe:
        out["replay_est_s"] = tokens * probe["train"]["token_s"] * (1 + REPLAY_BASE_PASS)
    return out


def _declared_train_stage(ctx: _Pricing, shape: TrainingShape, probe: dict | None) -> dict:
    """A method's training as it declares it: its sequences at its step shape, plus what it samples while
    training (priced as generation at full length: an upper bound)."""
    t = ctx.cfg.train
    steps = math.ceil(math.ceil(len(shape.sequences) / (shape.batch_size * shape.grad_accum * ctx.ws)) * t.epochs)
    stage = _train_stage(ctx.cfg, ctx.path, shape.sequences, steps, probe, ctx.ws, batch_size=shape.batch_size,
                         grad_accum=shape.grad_accum, full_logits_row=shape.full_logits_row)
    if shape.sampled_prompts:
        n = len(shape.sampled_prompts)
        sampling = _gen_stage(shape.sampled_prompts, [shape.sample_max_tokens] * n, shape.sample_max_tokens,
                              shape.batch_size * shape.grad_accum, False, probe, ctx.ws, ctx.shape, ctx.elem)
        stage["sampling"] = {k: sampling[k] for k in ("rows", "prompt_tokens", "output_tokens_max", "est_s")}
        if stage["est_s"] is not None and sampling["est_s"] is not None:
            stage["est_s"] = _secs(stage["est_s"] + sampling["est_s"])
    return stage


def _train_stage(cfg: RunConfig, path: str, seq: list[int], steps: int, probe: dict | None, ws: int,
                 replay_seq: int | None = None, **step) -> dict:
    """A method's training: tokens, steps, memory and time; with `replay_seq` (replay on), the replay's too.
    `step`: the step shape `memory_plan` takes where it is not `train`'s (opsd)."""
    t = cfg.train
    cut = [min(n, t.max_length) for n in seq]
    try:
        plan = memory_plan(path, cfg.model, t, cut, **step)
    except Exception:  # noqa: BLE001 - no model config here (e.g. a served model): no memory prediction
        plan = MemoryPlan(t.batch_size, t.grad_accum, t.gradient_checkpointing, 0.0, max(cut, default=0),
                          {"peak": None})
    micro = plan.micro_batch
    # trained tokens (truncated, unpadded), and the padded tokens micro-batches of similar rows compute
    tokens = round(sum(cut) * t.epochs)
    padded = round(sum(micro * max(cut[i:i + micro]) for i in range(0, len(cut), micro)) * t.epochs)
    stage = {"rows": len(seq), "tokens": tokens, "steps": steps, "est_s": None,
             "micro_batch": micro, "grad_accum": plan.grad_accum, "gradient_checkpointing": plan.gradient_checkpointing,
             "peak_rss_gib": plan.peak_gib, "memory": plan.predicted_gib}
    replay = _replay_train_cost(cfg, plan, steps, replay_seq, probe) if replay_seq else {}
    stage.update({k: v for k, v in replay.items() if k != "replay_est_s"})
    if probe:
        tp = probe["train"]
        replay_s = replay.get("replay_est_s", 0.0) * ws  # per process, like the steps
        stage["est_s"] = _secs((padded * tp["token_s"] + steps * tp["step_s"] * ws + replay_s) / ws)
        if replay:
            stage["replay_est_s"] = _secs(replay["replay_est_s"])
    return stage


def estimate_path(cfg: RunConfig) -> Path:
    """Where a dry run keeps its estimate for a run of the same config (outside the run directory)."""
    return cache_dir() / "estimates" / f"{fingerprint(to_dict(cfg))}.json"


def save_estimate(cfg: RunConfig, est: dict) -> None:
    path = estimate_path(cfg)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**est, "made": time.time()}))
    except OSError:  # a read-only cache only loses the comparison after the run
        pass


def run_estimate(cfg: RunConfig) -> dict:
    """The estimate to put beside a run's cost: a dry run's of this very config if one was kept (with its
    measured times), else tokens, rows and memory counted now (no probe: no seconds)."""
    path = estimate_path(cfg)
    if path.exists():
        try:
            return {**json.loads(path.read_text()), "source": "dry-run"}
        except (OSError, ValueError):
            pass
    return {**estimate(cfg, probe=False), "source": "counted after the run; no probe, so no times"}


def estimate_beside_cost(cfg: RunConfig, cost: dict[str, dict]) -> dict | None:
    """`against_cost(run_estimate(cfg), cost)`, or None with a warning if the estimate cannot be made or
    read (e.g. a served model's tokenizer is not available here): a finished run's summary is never lost
    for want of an estimate."""
    try:
        return against_cost(run_estimate(cfg), cost)
    except Exception as e:  # noqa: BLE001 - see above
        console.print(f"[yellow]no estimate beside the cost in summary.json: {type(e).__name__}: {e}[/]")
        return None


def _probe(cfg: RunConfig, task, judge: str, path: str, tok, train: list, answer_requests: list[GenRequest],
           para_requests: list[GenRequest], gold_rows: list[dict]) -> dict:
    """Load the model once: time prefill and decode steps; generate PROBE_ROWS rows through the backend;
    then train PROBE_TRAIN_STEPS optimizer steps on those rows."""
    import gc

    import torch
    from .backends.hf import HFBackend  # here: it imports torch and transformers, which counting tokens needs not
    gen = cfg.generation
    t0 = time.perf_counter()
    model = load_model(path, cfg.model)
    load_s = time.perf_counter() - t0
    tok.padding_side = "left"
    prompts = [render_prompt(tok, r) for r in answer_requests]
    batch = prompts[:min(gen.batch_size, PROBE_BATCH)]
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
           "decode_tok_s": round(len(batch) / steps[-1][1], 1)}

    # Real rows through the real backend: how long answers are, and how often the judge accepts them.
    pick = sorted({i * len(train) // min(PROBE_ROWS, len(train)) for i in range(min(PROBE_ROWS, len(train)))})
    backend = HFBackend(path, cfg.model, gen, model=model, tokenizer=tok)
    g = _probe_generate(backend, task, judge, cfg, [train[i] for i in pick], [answer_requests[i] for i in pick],
                        [len(ids) for ids in tok([prompts[i] for i in pick], add_special_tokens=False)["input_ids"]],
                        out)
    out["generation"] = {"rows": len(pick), "answer_tokens": g["tokens"], "answer_accepted": g["accepted"],
                         "answer_s": g["seconds"], "scale": g["scale"]}
    if para_requests:
        rows = [train[i] for i in pick]
        reqs = [para_requests[i] for i in pick]
        lens = _lengths(tok, [render_prompt(tok, r) for r in reqs])
        p = _probe_generate(backend, task, judge, cfg, rows, reqs, lens, out, prefill=task.paraphrase_prefill)
        out["generation"].update(paraphrase_tokens=p["tokens"], paraphrase_accepted=p["accepted"],
                                 paraphrase_s=p["seconds"], prefill_tokens=len(tok(task.paraphrase_prefill,
                                                                                   add_special_tokens=False)
                                                                               ["input_ids"]))
    backend = model = None  # the training probe loads its own copy
    gc.collect()
    out["train"] = _probe_train(cfg, path, [gold_rows[i] for i in pick])
    out["probe_s"] = round(time.perf_counter() - t0, 1)
    return out


def _probe_generate(backend, task, judge: str, cfg: RunConfig, rows: list, requests: list[GenRequest],
                    prompt_lens: list[int], probe: dict, prefill: str = "") -> dict:
    """Generate `requests` as the run will; lengths, judged share and the simulation's correction factor."""
    gen = cfg.generation
    t = time.perf_counter()
    done = {g.id: g for batch in backend.generate(requests, gen.max_new_tokens, task.stop, task.answer_complete)
            for g in batch}
    seconds = time.perf_counter() - t
    gens = [done[r.id] for r in requests]
    tokens = [g.completion_tokens for g in gens]
    accepted = 0.0
    if judge_class(judge).cost_note is None:  # cheap judges only: no sandboxed programs or judge model in a dry run
        verdicts = judge_generations(get_judge(judge, None, **cfg.judge.options()), [e.to_dict() for e in rows],
                                     [{"text": prefill + g.text, "finish_reason": g.finish_reason} for g in gens])
        accepted = sum(v.correct for v in verdicts) / len(verdicts)
    sim = simulate_generation(prompt_lens, tokens, gen.batch_size, gen.compact_batches,
                              lambda w: _step_s(probe, w), probe["prefill_tok_s"])
    return {"tokens": tokens, "accepted": round(accepted, 3), "seconds": round(seconds, 2),
            "scale": round(seconds / sim, 3) if sim > 0 else 1.0}


def _probe_train(cfg: RunConfig, path: str, rows: list[dict]) -> dict:
    """Seconds per trained token (forward + backward) and per optimizer step, from real steps on `rows`
    (gold targets) at the micro-batch training will use; the first step is a warm-up."""
    import dataclasses

    from transformers import TrainerCallback
    data = [{"messages": r["messages"], "target": r["target"]} for r in rows]
    tok = load_tokenizer(path, cfg.model.trust_remote_code)
    micro = memory_plan(path, cfg.model, cfg.train, sequence_lengths(tok, data)).micro_batch
    # one micro-batch per optimizer step, so each step's forward/backward and its fixed part are seen apart
    t = dataclasses.replace(cfg.train, batch_size=micro, grad_accum=1, memory_budget_gib=1e9,
                            save_steps=10**9, epochs=1)
    data = (data * PROBE_TRAIN_STEPS * micro)[:PROBE_TRAIN_STEPS * micro]
    marks: list[tuple[str, float, int]] = []

    class Marks(TrainerCallback):
        def on_step_begin(self, *a, **k):
            marks.append(("begin", time.perf_counter(), 0))

        def on_step_end(self, *a, **k):
            marks.append(("end", time.perf_counter(), 0))

    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(path, cfg.model, t, data, Path(tmp), max_steps=PROBE_TRAIN_STEPS)
        step = trainer.training_step

        def timed_step(model, inputs, *a, **k):
            t0 = time.perf_counter()
            loss = step(model, inputs, *a, **k)
            marks.append(("micro", time.perf_counter() - t0, int(inputs["input_ids"].numel())))
            return loss
        trainer.training_step = timed_step
        trainer.add_callback(Marks())
        trainer.train()
    # per step: [begin, micro, end]; the first step is a warm-up
    begins = [m[1] for m in marks if m[0] == "begin"]
    ends = [m[1] for m in marks if m[0] == "end"]
    micro_marks = [m for m in marks if m[0] == "micro"]
    kept = range(1, len(ends)) if len(ends) > 1 else range(len(ends))
    fwd_bwd = sum(micro_marks[i][1] for i in kept)
    tokens = sum(micro_marks[i][2] for i in kept)
    fixed = sum(max(ends[i] - begins[i] - micro_marks[i][1], 0.0) for i in kept) / max(len(kept), 1)
    return {"micro_batch": micro, "steps": len(ends), "token_s": round(max(fwd_bwd, 1e-6) / max(tokens, 1), 6),
            "step_s": round(fixed, 3), "tokens_per_s": round(tokens / max(fwd_bwd, 1e-6), 1)}


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
    for col in ("stage", "rows", "prompt tok", "output tok exp / max", "train tok", "steps", "peak GiB",
                "est time (max)"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for name, s in est["stages"].items():
        label = name + (" (<=)" if s.get("upper_bound") else "")
        if name == "evaluate":
            label += f" ({', '.join(s['models'])})"
        if name == "judge":
            label += f" ({s['judge']})"
        if name.startswith("train:") and s.get("micro_batch"):
            label += f" (micro-batch {s['micro_batch']} x {s['grad_accum']}" + \
                (", checkpointing)" if s.get("gradient_checkpointing") else ")")
        out = f"{_n(s.get('output_tokens_expected'))} / {_n(s['output_tokens_max'])}" \
            if "output_tokens_max" in s else ""
        time_s = _fmt_s(s["est_s"]) + (f" ({_fmt_s(s['est_s_max'])})" if s.get("est_s_max") is not None else "")
        peak = f"{s['peak_rss_gib']:.1f}" if s.get("peak_rss_gib") is not None else ""
        t.add_row(label, _n(s["rows"]), _n(s.get("prompt_tokens")), out, _n(s.get("tokens")),
                  _n(s.get("steps")), peak, time_s)
    t.add_row("total", "", "", "", "", "", "", _fmt_s(est["total_est_s"]), style="bold")
    p = est["probe"]
    notes = []
    if p:
        g = p["generation"]
        notes.append(f"expected output tokens: {g['rows']} probe rows generated by the backend "
                     f"(answers {_mean(g['answer_tokens']):.0f} tokens on average, {g['answer_accepted']:.0%} "
                     "accepted" + (f"; paraphrases {_mean(g['paraphrase_tokens']):.0f}, "
                                   f"{g['paraphrase_accepted']:.0%} accepted" if "paraphrase_tokens" in g else "")
                     + "); a trained model's answers move from those lengths towards its targets' with the "
                     "training it gets; max = max_new_tokens per row.")
    else:
        notes.append("expected output tokens = gold answer length capped at max_new_tokens (a proxy; real answers "
                     "are often much longer); max = max_new_tokens per row.")
    if any(s.get("upper_bound") for s in est["stages"].values()):
        notes.append("(<=): upper bound on rows: S3FT paraphrases only the rows whose own answer is judged wrong "
                     "(time and tokens: the probe's share of them).")
    if p:
        tr = p["train"]
        notes.append(f"measured on {p['device']} ({p['dtype']}, probe {p['probe_s']} s): "
                     f"prefill {p['prefill_tok_s']:,.0f} tok/s, decode {p['decode_tok_s']:,.0f} tok/s "
                     f"(step {' / '.join(f'{t * 1000:.0f} ms at batch {b}' for b, t in p['decode_step_s'])}, "
                     f"other batch sizes by a straight line; the backend's probe generation took "
                     f"{p['generation']['scale']:.2f}x that line's prediction), model load {p['load_s']} s; "
                     f"training {tr['tokens_per_s']:,.0f} tok/s forward + backward at micro-batch "
                     f"{tr['micro_batch']}, {tr['step_s']} s more per optimizer step.")
    else:
        notes.append("time not measured (--no-probe or a backend other than hf): tokens only.")
    notes.append("peak GiB: predicted resident memory of the stage (training: weights, optimizer state, "
                 "activations of the micro-batch, logits tile; generation: weights and a full batch's KV cache; "
                 "forgetting: weights and a scoring batch's log-probs).")
    if "forgetting" in est["stages"]:
        notes.append(f"forgetting: {est['stages']['forgetting']['note']} (forward passes at the prefill rate); "
                     "generate:probe_responses assumes every response runs to forgetting.max_new_tokens "
                     "(an upper bound).")
    replayed = {k: s for k, s in est["stages"].items() if "replay_tokens" in s}
    if replayed:
        notes.append("replay (train.replay): generate:replay_samples assumes every sample runs to its max_new_tokens "
                     "(an upper bound); each training step also replays samples, forward with and without the "
                     "adapter and backward: " + "; ".join(
                         f"{k} {s['replay_rows']:,} samples, <= {s['replay_tokens']:,} tokens"
                         + (f", {_fmt_s(s['replay_est_s'])} of its time" if s.get("replay_est_s") is not None else "")
                         for k, s in replayed.items()) + ".")
    if est["untimed"]:
        notes.append("not timed (excluded from the total): " + ", ".join(est["untimed"]) + ".")
    judge = est["stages"]["judge"]
    notes.append(f"judge: {judge['note']}.")
    if est["world_size"] > 1:
        notes.append(f"{est['world_size']} processes: steps and times are per process.")
    buf = io.StringIO()
    console = Console(file=buf, width=132, force_terminal=False, color_system=None)
    console.print(t)
    for n in notes:
        console.print(n, highlight=False, soft_wrap=True)
    return buf.getvalue()


def _mean(xs: list[int]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def against_cost(est: dict, cost: dict[str, dict]) -> dict:
    """Estimated vs actual per stage of a run's `cost` (wall seconds, tokens, peak RSS), for summary.json.
    Stages the estimate does not price alone (judging) are left out."""
    stages = est["stages"]
    per_model = stages.get("evaluate", {}).get("per_model", {})
    rows = {}
    for name, c in cost.items():
        kind, _, label = name.partition(":")
        e = stages.get(name) or (per_model.get(label) if kind == "generate" else None)
        if e is None:
            continue
        est_tokens = e.get("tokens", e.get("output_tokens_expected"))
        rows[name] = {"est_s": e.get("est_s"), "wall_s": round(c["wall_s"], 1),
                      "time_ratio": round(c["wall_s"] / e["est_s"], 2) if e.get("est_s") else None,
                      "est_tokens": est_tokens, "tokens": c["tokens"],
                      "est_peak_rss_gib": e.get("peak_rss_gib"), "peak_rss_gib": c["peak_rss_gib"],
                      "reused": c["reused"]}
    return {"source": est.get("source"), "total_est_s": est.get("total_est_s"), "stages": rows}
