"""The S3FT pipeline as a chain of stages, each a function from artifacts to artifacts.

    data -> answers -> answer verdicts -> paraphrases -> paraphrase verdicts
         -> train_<method>.jsonl (selection) -> adapters/<method> -> eval/<model>.jsonl -> summary

The stages to run and the requests each sends come from `s3ft.plan`, which `--dry-run` prices
too. Each stage writes JSONL into the run directory, resumes from what is already there, and
refuses artifacts made with other settings (see `artifacts.StageArtifact`). The run directory
is made, and locked against a second process, only once the config, task, judge, model and data
have been checked, so bad input leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import distributed as dist
from .artifacts import RunLock, StageArtifact, StageCost, fingerprint, write_json, write_jsonl
from .backends import Sampling, backend_class, get_backend, resolve_engine
from .forgetting import meter
from .forgetting.targets import NLLScorer, encode_target
from .checks import check_config
from .layout import TRAIN_META, RunLayout
from .rows import GenerationRow, SelectionStats, TrainRow, VerdictRow
from .config import SFT_ARGS_NOT_FINGERPRINTED, RunConfig, TrainConfig, to_dict
from .cost import estimate_beside_cost
from .errors import S3FTError
from .judges import JudgeContext, get_judge, judge_generations, judge_names
from .memory import RSSMonitor, release_freed_memory
from .methods import get_method
from .models import check_model, materialize
from .plan import STAGES, GenStage, Plan, eval_stage, plan, requests_key
from .progress import console, progress_bar
from .replay import ReplaySet, replay_messages
from .report import write_summary
from .stats import wilson_ci
from .strategies import GOLD, Judged, TrainingRecord, get_strategy, paraphrase_problem
from .tasks import Example, Task, get_task
from .train import train as train_fn

# Best-of-k own answers: their settings are part of the samples' fingerprint only, not of the greedy answers'.
REL = RunLayout()
"""File names relative to the run directory, as the plan's stages and `Run.artifact` take them."""

SELF_SAMPLE_KEYS = ("self_samples", "self_sample_temperature", "self_sample_top_p")


class Run:
    """Shared state of one run: config, directory, task, the open base-model backend, costs."""

    def __init__(self, cfg: RunConfig, force: bool = False):
        check_config(cfg)  # a config made in code has not been through the CLI's checks
        self.engine = resolve_engine(cfg.generation, cfg.model)
        """The engine `generation.backend` (`auto` included) resolved to, why, and the dtype it runs in."""
        if self.engine["backend"] != cfg.generation.backend:
            console.print(f"[dim]generation.backend: auto -> {self.engine['backend']} ({self.engine['reason']})[/]")
            cfg = dataclasses.replace(cfg, generation=dataclasses.replace(cfg.generation,
                                                                          backend=self.engine["backend"]))
        self.cfg = cfg
        self.dir = Path(cfg.output_dir)
        self.layout = RunLayout(self.dir)
        for p in [self.dir, *self.dir.parents]:  # the nearest part that exists must be a directory
            if p.exists():
                if not p.is_dir():
                    under = "" if p == self.dir else f", so {self.dir} cannot be made"
                    raise S3FTError(f"output_dir: {p} is a file{under}")
                break
        self._lock: RunLock | None = None
        self.force = force
        self.task = get_task(cfg.data)
        if cfg.generation.backend != "openai":  # a server's model may exist only on the server
            check_model(cfg.model)
        jc = cfg.judge
        name = jc.name or self.task.judge
        if name not in judge_names():  # not set in the config: the task names it (jsonl: task_args.judge)
            raise S3FTError(f"{'judge.name' if jc.name else 'data.task_args.judge'}: unknown judge '{name}' "
                            f"(known: {', '.join(judge_names())})")
        context = JudgeContext(model=cfg.model, model_path=lambda: self.model_path,
                               shared_backend=self.backend if cfg.generation.backend == "hf" else None,
                               run_dir=self.dir, batch_size=cfg.generation.batch_size, args_key=jc.args_key)
        self.judge = get_judge(name, context, **jc.options())
        versioned = f"{name}@{self.judge.version}" if getattr(self.judge, "version", None) else name
        self.judge_id = getattr(self.judge, "id", {"judge": versioned, "args": jc.args} if jc.args else versioned)
        """What verdicts depend on: the judge's name (and `version`, if it has one) and args, or the LLM judge's
        model, prompt and version."""
        self._backend = None
        self._model_path: str | None = None
        self.cost: dict[str, dict] = {}
        """Per stage: its artifact's cost over every process that worked on it, and `reused`: whether
        an earlier invocation finished it (see `_cost`)."""
        self.model_id = {"model": cfg.model.name_or_path, "gguf": cfg.model.gguf_file, "dtype": cfg.model.dtype}
        # Batch size, batch compaction and engine resources change speed, not text:
        # not part of the fingerprint.
        self.gen_id = {k: v for k, v in to_dict(cfg.generation).items()
                       if k not in ("batch_size", "compact_batches", "engine_args", "endpoint",
                                    *SELF_SAMPLE_KEYS)}
        if cfg.generation.backend == "openai":  # the served model and prompt route; not URL, timeouts
            self.gen_id["endpoint"] = {"model": cfg.generation.endpoint.model, "api": cfg.generation.endpoint.api}

    # --- helpers --------------------------------------------------------------
    @property
    def model_path(self) -> str:
        if self._model_path is None:
            with console.status(f"resolving model {self.cfg.model.name_or_path}"):
                self._model_path = materialize(self.cfg.model)
        return self._model_path

    def backend(self):
        if self._backend is None:
            with console.status(f"loading {self.cfg.model.name_or_path}"):
                # vLLM: LoRA on from the start, so the same engine answers for every adapter of the run
                extra = {"lora_rank": self.cfg.train.lora_r} if self.cfg.generation.backend == "vllm" else {}
                self._backend = get_backend(self.cfg.generation.backend, self.model_path, self.cfg.model,
                                            self.cfg.generation, **extra)
        return self._backend

    def release_backend(self, training: bool = False) -> None:
        """Free the generation model before training needs the memory; `training`: an engine that says
        there is room for both (`keep_while_training`) stays up, so it need not load again."""
        keep = getattr(self._backend, "keep_while_training", None)
        if training and keep is not None and keep():
            return
        if self._backend is not None:
            self._backend.close()
            self._backend = None
            release_freed_memory()

    def open(self) -> None:
        """Make the run directory and lock it, once, in the main process: a second process on the
        same directory stops with an error naming the holder's PID."""
        if self._lock is not None or not dist.is_main():
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = RunLock(self.dir)
        except OSError as e:
            raise S3FTError(f"output_dir: cannot write to {self.dir}: {e.strerror or e}") from None

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def artifact(self, name: str, inputs: dict) -> StageArtifact:
        self.open()
        return StageArtifact(self.dir / name, inputs, force=self.force)

    def _cost(self, stage: str, cost: StageCost, reused: bool) -> None:
        """Record a stage's whole cost, as kept with its artifact; `reused`: this invocation did none of it."""
        self.cost[stage] = {**asdict(cost), "reused": reused}


# --- stages -------------------------------------------------------------------
# Data options added after runs existed: unset, they stay out of the data fingerprint, which keeps its value.
UNSET_LEAVES_OUT = ("train_rows", "test_rows", "test_exclude")


def stage_data(run: Run) -> dict[str, list[Example]]:
    data = {k: v for k, v in to_dict(run.cfg.data).items()
            if k != "base_dir" and (v is not None or k not in UNSET_LEAVES_OUT)}
    inputs = {split: {"task": run.task.describe(), "data": data, "split": split} for split in ("train", "test")}
    # Loaded, and so checked, before the run directory is made; loaded on a rerun too, since the
    # fingerprint holds the config, not the files' contents (see `_same_rows`).
    loaded = {split: [ex.to_dict() for ex in run.task.load(split)] for split in inputs}
    out = {}
    for split, key in inputs.items():
        art = run.artifact(str(REL.data(split)), key)
        if not art.done:
            art.append(loaded[split])
            art.finish({"rows": len(loaded[split])})
        else:
            _same_rows(art.path, list(art.rows.values()), loaded[split])
        out[split] = [Example.from_dict(r) for r in art.rows.values()]
    if (record := run.task.split_record()) is not None:
        write_json(run.layout.split_record, record)
    return out


def _same_rows(path: Path, kept: list[dict], loaded: list[dict]) -> None:
    """Stop when the data a finished run directory was made from has changed since: an edited file, or
    another `data.test_exclude` list, keeps the config (so every fingerprint) the same while every
    stage after this one would be stale."""
    as_json = lambda r: json.dumps(r, sort_keys=True, ensure_ascii=False)
    kept_by_id = {r["id"]: as_json(r) for r in kept}
    loaded_by_id = {r["id"]: as_json(r) for r in loaded}
    if kept_by_id == loaded_by_id:
        return
    changed = sorted(set(kept_by_id) ^ set(loaded_by_id)) + sorted(
        i for i in set(kept_by_id) & set(loaded_by_id) if kept_by_id[i] != loaded_by_id[i])
    raise S3FTError(f"{path}: the task's data changed since this run directory was made ({len(changed)} "
                    f"row{'s' if len(changed) > 1 else ''} added, removed or edited, e.g. id {changed[0]!r}); use another output directory")


def generate(run: Run, stage: GenStage, backend_fn, model_key: dict) -> tuple[list[GenerationRow], str]:
    """Generate for every request of `stage` not yet on disk; returns rows in request order + fingerprint."""
    name, requests, max_new_tokens = stage.artifact, stage.requests, stage.max_new_tokens
    stop, stop_regex = (list(run.task.stop), run.task.answer_complete) if stage.task_stops else ([], None)
    inputs = {"model": model_key, "generation": run.gen_id, "max_new_tokens": max_new_tokens,
              "stop": stop, "stop_regex": stop_regex, "requests": requests_key(requests)}
    if stage.sampling is not None:
        inputs["sampling"] = stage.sampling
    # `out` is `art` itself in one process, else this rank's shard of it (see distributed.py)
    art, out = dist.open_stage(run.dir / name, inputs, run.force)
    pending = [r for r in requests if r.id not in art.rows]
    todo = dist.shard(pending)
    if todo:
        # the first batch's cost (time and memory) includes loading the model
        t0, done = time.time(), len(requests) - len(pending)
        with RSSMonitor(tree=True) as mem:  # the vLLM engine is a child process
            opened = time.time()
            backend = backend_fn()
            engine = getattr(backend, "engine", backend)
            load_s = time.time() - opened - getattr(engine, "load_s", 0.0)  # HF loads here, vLLM on its first batch
            with progress_bar(f"generate {Path(name).stem}", done + len(todo), done) as advance:
                for batch in backend.generate(todo, max_new_tokens, stop, stop_regex):
                    t1 = time.time()
                    out.append([g.to_dict() for g in batch], StageCost(
                        t1 - t0, sum(g.completion_tokens for g in batch), len(batch), round(mem.read(), 2)))
                    t0 = t1
                    advance(len(batch))
    art = dist.close_stage(art, [r.id for r in requests], lambda rows: {"rows": len(rows)})
    run._cost(stage.name, art.cost, reused=not pending)
    if todo:
        run.cost[stage.name]["load_s"] = round(load_s + getattr(engine, "load_s", 0.0), 3)
    return art.ordered([r.id for r in requests]), art.fingerprint


def judge(run: Run, name: str, examples: list[Example], gens: list[dict], gen_fp: str,
          prefilter: Prefilter | None = None) -> tuple[dict[str, dict], str]:
    """Verdicts for generations; `prefilter(example, gen) -> reason|None` rejects before judging."""
    inputs = {"generations": gen_fp, "judge": run.judge_id, "prefilter": prefilter.key if prefilter else None}
    art, out = dist.open_stage(run.dir / name, inputs, run.force)
    by_id = {e.id: e for e in examples}
    pending = [g for g in gens if g["id"] not in art.rows]
    todo = dist.shard(pending)
    if todo:
        t0 = time.time()
        done = len(gens) - len(pending)
        with RSSMonitor() as mem, progress_bar(f"judge {Path(name).stem}", done + len(todo), done) as advance:
            chunk = 64
            for i in range(0, len(todo), chunk):
                part = todo[i:i + chunk]
                rows, to_judge = {}, []
                for g in part:
                    why = prefilter(by_id[g["id"]], g) if prefilter else None
                    if why:
                        rows[g["id"]] = {"id": g["id"], "correct": False, "reason": f"filtered: {why}", "extracted": None}
                    else:
                        to_judge.append(g)
                verdicts = judge_generations(run.judge, [by_id[g["id"]].to_dict() for g in to_judge], to_judge)
                for g, v in zip(to_judge, verdicts):
                    rows[g["id"]] = {"id": g["id"], **v.to_dict()}
                t1 = time.time()
                out.append([rows[g["id"]] for g in part], StageCost(t1 - t0, 0, len(part), round(mem.read(), 2)))
                t0 = t1
                advance(len(part))
    art = dist.close_stage(art, [g["id"] for g in gens],
                           lambda rows: {"correct": sum(r["correct"] for r in rows.values()), "rows": len(rows)})
    run._cost(f"judge:{Path(name).stem}", art.cost, reused=not pending)
    return art.rows, art.fingerprint


def base_model_key(run: Run) -> dict:
    return dict(run.model_id)


def stage_generate(run: Run, answers: GenStage) -> tuple[list[dict], str]:
    """The base model answers every training query."""
    return generate(run, answers, run.backend, base_model_key(run))


def stage_judge(run: Run, train: list[Example], gens: list[dict], gen_fp: str) -> tuple[dict, str]:
    return judge(run, str(REL.verdicts(REL.answers)), train, gens, gen_fp)


def stage_self_samples(run: Run, p: Plan, answers: dict, verdicts: dict,
                       verdicts_fp: str) -> tuple[dict, dict, str]:
    """Best-of-k own answers (`generation.self_samples`): where the greedy answer was rejected, sample
    k-1 more and judge them. A row with accepted samples takes, as its own answer, the one the base
    model finds most likely (lowest mean NLL per token): among correct own answers, the one that
    shifts the model least. Returns the answers and verdicts with those rows replaced."""
    stage = p.self_samples_stage({i: v["correct"] for i, v in verdicts.items()})
    if stage is None:
        return answers, verdicts, verdicts_fp
    by_id = {e.id: e for e in p.train}
    samples = {r.id: (by_id[row], int(j)) for r in stage.requests for row, j in [r.id.rsplit("#", 1)]}
    gens, gen_fp = generate(run, stage, lambda: Sampling(run.backend(), **stage.sampling_backend_args),
                            base_model_key(run))
    examples = [dataclasses.replace(e, id=sid) for sid, (e, _) in samples.items()]
    s_verdicts, s_fp = judge(run, str(REL.verdicts(REL.self_samples)), examples, gens, gen_fp)
    accepted: dict[str, list[dict]] = {}
    for g in gens:
        if s_verdicts[g["id"]]["correct"]:
            accepted.setdefault(samples[g["id"]][0].id, []).append(g)
    nll = _sample_nll(run, samples, [g for choices in accepted.values() if len(choices) > 1 for g in choices], s_fp)
    answers, verdicts = dict(answers), dict(verdicts)
    for eid, choices in accepted.items():
        best = min(choices, key=lambda g: nll.get(g["id"], 0.0))  # one accepted sample: no scoring needed
        j = samples[best["id"]][1]
        v = s_verdicts[best["id"]]
        answers[eid] = {**best, "id": eid, "sample": j}
        verdicts[eid] = {**v, "id": eid, "reason": f"sample {j} of {p.self_samples - 1}: {v['reason']}"}
    return answers, verdicts, fingerprint([verdicts_fp, s_fp])


def _sample_nll(run: Run, samples: dict, gens: list[dict], verdicts_fp: str) -> dict[str, float]:
    """Mean NLL per token under the base model of the accepted samples that compete for one row."""
    if not gens:
        return {}
    art = run.artifact(str(REL.self_samples_nll), {"model": run.model_id, "samples": verdicts_fp,
                                                  "scoring": "trl-prompt-completion-v1"})
    todo = [g for g in gens if g["id"] not in art.rows]
    if todo:
        backend = run.backend()
        scorer = (NLLScorer.from_loaded(backend.model, backend.tokenizer) if hasattr(backend, "model")
                  else NLLScorer(run.model_path, to_dict(run.cfg.model)))
        step = scorer.batch_size
        with progress_bar("score accepted samples", len(gens), len(gens) - len(todo)) as advance:
            for i in range(0, len(todo), step):
                part = todo[i:i + step]
                scores = scorer.score([encode_target(scorer.tok, run.task.messages(samples[g["id"]][0]), g["text"])
                                       for g in part])
                art.append([{"id": g["id"], "nll": nll, "tokens": tokens} for g, (nll, tokens) in zip(part, scores)])
                advance(len(part))
    art.finish({"rows": len(art.rows)})
    return {sid: r["nll"] for sid, r in art.rows.items()}


@dataclass
class Prefilter:
    """Rejects a paraphrase before judging: `prefilter(example, generation) -> reason | None`."""

    task: Task
    min_length_ratio: float
    min_words: int
    key: dict
    """What its verdicts depend on: part of the paraphrase verdicts' fingerprint."""

    @classmethod
    def for_run(cls, run: Run) -> Prefilter:
        """The run's filter: the task's limits where it sets them, else the `paraphrase` config section's."""
        task, pcfg = run.task, run.cfg.paraphrase
        ratio, min_words = task.paraphrase_limits or (pcfg.min_length_ratio, pcfg.min_words)
        key = to_dict(pcfg) | {"phrases": list(task.reference_phrases)}
        if task.paraphrase_limits is not None:
            key["task_limits"] = list(task.paraphrase_limits)
        if task.target_rule is not None:
            key["target_rule"] = task.target_rule
        return cls(task, ratio, min_words, key)

    def __call__(self, ex: Example, g: dict) -> str | None:
        task = self.task
        return paraphrase_problem(g["text"], ex.gold, task.final_answer_line(g["text"]), task.reference_phrases,
                                  self.min_length_ratio, self.min_words, task.paraphrase_prefill) \
            or task.target_problem(g["text"])


def stage_paraphrases(run: Run, p: Plan, answer_verdicts: dict) -> tuple[dict, dict, str]:
    """The model restates the gold answer in its own words (S3FT's middle tier, SDFT's rewrite)."""
    paraphrases = p.paraphrases({i: v["correct"] for i, v in answer_verdicts.items()})
    if not paraphrases.requests:
        return {}, {}, "none"
    task = run.task
    gens, gen_fp = generate(run, paraphrases, run.backend, base_model_key(run))
    # The judge and the filter see the whole target: prefill + continuation.
    full = [{**g, "text": task.paraphrase_prefill + g["text"]} for g in gens]
    by_id = {e.id: e for e in p.train}
    verdicts, v_fp = judge(run, str(REL.verdicts(REL.paraphrases)), [by_id[g["id"]] for g in full], full, gen_fp,
                           prefilter=Prefilter.for_run(run))
    return {g["id"]: g for g in full}, verdicts, v_fp


def stage_select(run: Run, method: str, train: list[Example], answers: dict[str, GenerationRow],
                 a_verdicts: dict[str, VerdictRow], paras: dict[str, GenerationRow], p_verdicts: dict[str, VerdictRow],
                 upstream_fp: str) -> tuple[list[TrainRow], SelectionStats, str]:
    """Apply one strategy to every training row; writes train_<method>.jsonl and its stats."""
    own = get_method(method)
    if own:  # its own trainer: no target chosen, the rows its trainer reads, from the data alone
        rows, stats = own.select(run.task, train, getattr(run.cfg, method))
        _write_selection(run, method, rows, stats)
        return rows, stats, fingerprint([method, fingerprint(rows)])
    strategy = get_strategy(method)
    rows, kinds = [], []
    for e in train:
        a, p = a_verdicts[e.id], p_verdicts.get(e.id)
        rec = TrainingRecord(e.id, e.gold, Judged(answers[e.id]["text"], a["correct"], a["reason"]),
                             Judged(paras[e.id]["text"], p["correct"], p["reason"]) if p else None)
        target = strategy(rec)
        rows.append({"id": e.id, "messages": run.task.messages(e), "target": target.text, "source": target.source,
                     "reason": str(target.reason)})
        kinds.append(target.reason.kind)
    mix = Counter(r["source"] for r in rows)
    # a strategy that only ever emits gold has no fallback to explain
    falls_back = set(strategy.sources) != {GOLD}
    rejections = Counter(k for r, k in zip(rows, kinds) if r["source"] == GOLD and falls_back)
    stats: SelectionStats = {"method": method, "rows": len(rows), "target_mix": dict(mix),
             "target_share": {k: round(v / len(rows), 4) for k, v in mix.items()},
             "gold_reasons": dict(rejections.most_common())}
    if run.cfg.generation.self_samples > 1 and strategy.needs.uses_own_samples:
        stats["self_from_samples"] = sum(r["source"] == "self" and "sample" in answers[r["id"]] for r in rows)
    formats = [run.task.answer_format(r["target"]) for r in rows]
    if any(f is not None for f in formats):  # e.g. math: 'answer is' / '####' / 'boxed' / 'none'
        stats["answer_formats"] = dict(Counter(formats).most_common())
        stats["answer_formats_by_source"] = {
            src: dict(Counter(f for r, f in zip(rows, formats) if r["source"] == src).most_common()) for src in mix}
    _write_selection(run, method, rows, stats)
    return rows, stats, fingerprint([upstream_fp, method, fingerprint(rows)])


def _write_selection(run: Run, method: str, rows: list[TrainRow], stats: SelectionStats) -> None:
    if dist.is_main():  # every rank selects the same rows; one writes them
        write_jsonl(run.layout.train(method), rows)
        write_json(run.layout.train_stats(method), stats)


def train_key(cfg: TrainConfig, replay: ReplaySet | None = None) -> dict:
    """The training settings that make the adapter. Left out: the memory budget (it changes how a step
    is split into micro-batches, not what it computes), `sft_args` options that only log or publish,
    and an empty `sft_args`, so that runs trained before it existed keep their fingerprint; `replay` only
    where the adapter trains with replay samples (then with their fingerprint), so that replay off
    changes no fingerprint."""
    key = {k: v for k, v in to_dict(cfg).items() if k not in ("memory_budget_gib", "replay")}
    if replay is not None and cfg.replay.enabled:
        key["replay"] = {**to_dict(cfg.replay), "samples_fingerprint": replay.fingerprint}
    key["sft_args"] = {k: v for k, v in cfg.sft_args.items() if k not in SFT_ARGS_NOT_FINGERPRINTED}
    if not key["sft_args"]:
        del key["sft_args"]
    return key


def stage_train(run: Run, method: str, rows: list[dict], select_fp: str, train_cfg: TrainConfig | None = None,
                replay: ReplaySet | None = None) -> str:
    """Train `method`'s adapter on `rows` (with `replay` samples where given); returns its path."""
    train_cfg = train_cfg or run.cfg.train
    out = run.layout.adapter_dir(method)
    inputs = {"model": run.model_id, "train": train_key(train_cfg, replay), "targets": select_fp}
    own = get_method(method)
    if own:
        inputs[method] = to_dict(getattr(run.cfg, method))
    meta_path = run.layout.train_meta(method)
    fp = fingerprint(inputs)

    def trained() -> bool:  # decided by the main process, so that all ranks agree
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("fingerprint") == fp and meta.get("done"):
                return True
            if meta.get("fingerprint") != fp and not run.force:
                raise S3FTError(f"{out}: trained with different settings or targets; "
                                "use another output directory or --force to retrain")
            if meta.get("fingerprint") != fp:
                import shutil
                shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(meta_path, {"fingerprint": fp, "inputs": inputs, "done": False})
        return False

    if dist.on_main(trained):
        meta = json.loads(meta_path.read_text())
        run._cost(f"train:{method}", StageCost(**meta.get("cost", {})), reused=True)
        if own:
            run.cost[f"train:{method}"].update(own.sampling_cost(meta.get("stats", {})))
        return str(out / "model")
    run.release_backend(training=True)
    console.print(f"[bold]train[/] {method}: {len(rows)} rows")
    t0 = time.time()
    with RSSMonitor() as mem:
        if own:
            stats = own.trainer()(run.model_path, run.cfg.model, train_cfg, getattr(run.cfg, method), rows, out)
        else:
            stats = train_fn(run.model_path, run.cfg.model, train_cfg, rows, out, replay)  # every rank: DDP/FSDP/ZeRO
    release_freed_memory()  # training's activations and optimizer state: not carried into evaluation
    if dist.is_main():
        cost = StageCost(round(time.time() - t0, 3), stats.get("tokens", 0), len(rows), round(mem.peak_gib, 2))
        run._cost(f"train:{method}", cost, reused=False)
        if own:
            run.cost[f"train:{method}"].update(own.sampling_cost(stats))
        write_json(meta_path, {"fingerprint": fp, "inputs": inputs, "done": True, "stats": stats,
                               "cost": asdict(cost)})
    dist.barrier()  # adapter and meta are on disk before any rank evaluates them
    return str(out / "model")


def stage_replay(run: Run, p: Plan) -> ReplaySet | None:
    """The base model's replay samples (`train.replay`), drawn once through the generation backend at the
    replay's temperature; None where the plan has none."""
    if p.replay is None:
        return None
    stage = p.replay
    gens, fp = generate(run, stage, lambda: Sampling(run.backend(), **stage.sampling_backend_args),
                        base_model_key(run))
    return ReplaySet(replay_messages(run.cfg.train.replay), [g["text"] for g in gens], fp)


def stage_evaluate(run: Run, label: str, test: list[Example], adapter: str | None,
                   stage: GenStage | None = None) -> dict:
    """In-domain accuracy (with a 95% Wilson CI) of the base model or an adapter on the test split.
    `stage`: the plan's generation stage for `label`, whose requests are `test`'s (built here if not given)."""
    stage = stage or eval_stage(run.cfg, run.task, label, test)
    key = base_model_key(run)
    if adapter:
        key = {**key, "adapter": json.loads((Path(adapter).parent / TRAIN_META).read_text())["fingerprint"]}
        backend_fn = AdapterBackend(run, adapter)
    else:
        backend_fn = run.backend
    gens, gen_fp = generate(run, stage, backend_fn, key)
    verdicts, _ = judge(run, str(REL.verdicts(REL.eval(label))), test, gens, gen_fp)
    if isinstance(backend_fn, AdapterBackend):
        backend_fn.close()
    k, n = sum(verdicts[e.id]["correct"] for e in test), len(test)
    lo, hi = wilson_ci(k, n)
    metrics = {"model": label, "correct": k, "n": n, "accuracy": k / n, "ci95": [lo, hi],
               "truncated": sum(g["finish_reason"] == "length" for g in gens)}
    extra = run.task.extra_metrics([e.to_dict() for e in test], gens, verdicts)
    if extra:
        metrics["task_metrics"] = extra
    if dist.is_main():
        write_json(run.layout.eval_metrics(label), metrics)
    return metrics


class AdapterBackend:
    """Opens a generation backend with `adapter` when first called, freeing the base model's first;
    `loaded` is the backend it opened (None before), which `close` closes."""

    def __init__(self, run: Run, adapter: str):
        self.run, self.adapter, self.loaded = run, adapter, None

    def __call__(self):
        run = self.run
        shared = run.backend() if getattr(backend_class(run.cfg.generation.backend), "with_adapter", None) else None
        if shared is not None and shared.serves(self.adapter):
            self.loaded = shared.with_adapter(self.adapter)  # the run's engine, LoRA on: no second load
            return self.loaded
        run.release_backend()
        with console.status(f"loading adapter {self.adapter}"):
            self.loaded = get_backend(run.cfg.generation.backend, run.model_path, run.cfg.model,
                                      run.cfg.generation, adapter=self.adapter)
        return self.loaded

    def close(self) -> None:
        if self.loaded is not None:
            self.loaded.close()
            self.loaded = None


def stage_controls(run: Run, p: Plan) -> dict[str, str]:
    """The forgetting meter's controls: {label: adapter}. `untrained` is an untrained LoRA adapter (its
    B matrices are zero, so it computes the base model through the PEFT path); `planted` is SFT on
    the same rows at `planted_lr_scale` x the learning rate."""
    fc, out = run.cfg.forgetting, {}
    for label, rows in p.controls.items():
        if rows is None:
            out[label] = dist.on_main(lambda: _untrained_adapter(run))
        else:
            lr = run.cfg.train.learning_rate * fc.planted_lr_scale
            out[label] = stage_train(run, label, rows, fingerprint([label, rows]),
                                     dataclasses.replace(run.cfg.train, learning_rate=lr))
    return out


def _untrained_adapter(run: Run) -> str:
    out = run.layout.adapter_dir(meter.CONTROLS["untrained"])
    tc = run.cfg.train
    inputs = {"model": run.model_id, "control": "untrained", "lora": [tc.lora_r, tc.lora_alpha, tc.target_modules]}
    meta = run.layout.train_meta(meter.CONTROLS["untrained"])
    if meta.is_file() and json.loads(meta.read_text()).get("fingerprint") == fingerprint(inputs):
        return str(out / "model")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(run.model_path, trust_remote_code=run.cfg.model.trust_remote_code)
    peft = get_peft_model(model, LoraConfig(r=tc.lora_r, lora_alpha=tc.lora_alpha, target_modules=tc.target_modules,
                                            task_type="CAUSAL_LM"))
    peft.save_pretrained(str(out / "model"))
    write_json(meta, {"fingerprint": fingerprint(inputs), "inputs": inputs, "done": True})
    return str(out / "model")


def stage_forgetting(run: Run, p: Plan, adapters: dict[str, str]) -> dict:
    """The forgetting meter on base, every method and the controls (see `s3ft.forgetting.meter`)."""
    fc, prompts = run.cfg.forgetting, p.probe_prompts
    gens, _ = generate(run, p.probe, run.backend, base_model_key(run))
    run.release_backend()
    labels: dict[str, str | None] = {"base": None, **adapters}

    def measure() -> dict:
        t0 = time.time()
        with RSSMonitor() as mem:
            responses = [{"id": r["id"], "prompt": r["prompt"], "text": g["text"]} for r, g in zip(prompts, gens)]
            meter.measure_drift(run.dir, run.model_path, run.cfg.model, run.model_id, fc, labels, responses,
                                run.force)
            gcfg = meter.probe_benchmark_config(fc, run.cfg.data.data_dir, run.cfg.model)
            results = meter.run_probe_benchmarks(run.dir, run.model_path, gcfg, labels,
                                                 lambda m: console.print(f"[dim]{m}[/]")) if gcfg else None
            pairs = meter.run_pairs(run.dir, list(labels), results, list(fc.benchmarks))
        run._cost("forgetting", StageCost(round(time.time() - t0, 3), 0, len(labels), round(mem.peak_gib, 2)),
                  reused=False)
        return meter.write_summary(run.dir, pairs, meter.probe_accuracy(results) if results else {}, fc)
    return dist.on_main(measure)


# --- the whole run ------------------------------------------------------------
def run_pipeline(cfg: RunConfig, force: bool = False, until: str = "report") -> dict:
    """Run every stage up to and including `until`; returns the summary (or {} if stopped early)."""
    if until not in STAGES:
        raise S3FTError(f"unknown stage '{until}' (stages: {', '.join(STAGES)})")
    run = Run(cfg, force=force)
    try:
        return _run_stages(run, until)
    finally:
        run.close()


@dataclass
class Made:
    """What the stages of one invocation have made so far, for the stages after them."""

    t_start: float
    """When the invocation started (the summary's wall time)."""
    gens: list[GenerationRow] = field(default_factory=list)
    """The base model's answers, in training-row order."""
    gen_fp: str = ""
    answers: dict[str, GenerationRow] = field(default_factory=dict)
    """The own answer of each row by id: the greedy one, or an accepted sample where it was rejected
    (`generation.self_samples`)."""
    a_verdicts: dict[str, VerdictRow] = field(default_factory=dict)
    """The answers' verdicts by row id."""
    a_fp: str = ""
    paras: dict[str, GenerationRow] = field(default_factory=dict)
    """The paraphrases by row id (prefill included)."""
    p_verdicts: dict[str, VerdictRow] = field(default_factory=dict)
    p_fp: str = ""
    selected: dict[str, tuple[list[TrainRow], SelectionStats, str]] = field(default_factory=dict)
    """Per method: its training rows, their stats and their fingerprint."""
    adapters: dict[str, str] = field(default_factory=dict)
    """Per method: its trained adapter's path."""
    controls: dict[str, str] = field(default_factory=dict)
    """The forgetting meter's control adapters by label."""
    results: dict[str, dict] = field(default_factory=dict)
    """Per evaluated model: its in-domain metrics."""
    forgetting: dict | None = None
    summary: dict = field(default_factory=dict)
    """The report's summary ({} on other ranks, or before the report)."""


def _generate(run: Run, p: Plan, made: Made) -> None:
    made.gens, made.gen_fp = stage_generate(run, p.answers)


def _judge(run: Run, p: Plan, made: Made) -> None:
    made.a_verdicts, made.a_fp = stage_judge(run, p.train, made.gens, made.gen_fp)
    made.answers = {g["id"]: g for g in made.gens}


def _samples(run: Run, p: Plan, made: Made) -> None:
    made.answers, made.a_verdicts, made.a_fp = stage_self_samples(run, p, made.answers, made.a_verdicts, made.a_fp)


def _paraphrase(run: Run, p: Plan, made: Made) -> None:
    made.paras, made.p_verdicts, made.p_fp = stage_paraphrases(run, p, made.a_verdicts)


def _select(run: Run, p: Plan, made: Made) -> None:
    for method in p.methods:
        made.selected[method] = stage_select(run, method, p.train, made.answers, made.a_verdicts, made.paras,
                                             made.p_verdicts, fingerprint([made.a_fp, made.p_fp]))


def _train(run: Run, p: Plan, made: Made) -> None:
    replay = stage_replay(run, p)  # methods with their own trainer (opsd) take no replay
    made.adapters = {m: stage_train(run, m, rows, fp, replay=None if get_method(m) else replay)
                     for m, (rows, _, fp) in made.selected.items()}
    made.controls = stage_controls(run, p)  # none where the meter does not run


def _evaluate(run: Run, p: Plan, made: Made) -> None:
    for label, stage in p.evals.items():
        adapter = None if label == "base" else made.adapters[label]
        made.results[label] = stage_evaluate(run, label, p.test, adapter, stage)


def _forgetting(run: Run, p: Plan, made: Made) -> None:
    made.forgetting = stage_forgetting(run, p, {**made.adapters, **made.controls})


def _report(run: Run, p: Plan, made: Made) -> None:
    run.release_backend()
    if dist.is_main():
        made.summary = write_summary(run, made.results, {m: s for m, (_, s, _) in made.selected.items()},
                                     time.time() - made.t_start, made.forgetting,
                                     estimate_beside_cost(run.cfg, run.cost))


STEPS = {"generate": _generate, "judge": _judge, "samples": _samples, "paraphrase": _paraphrase, "select": _select,
         "train": _train, "evaluate": _evaluate, "forgetting": _forgetting, "report": _report}
"""What each stage after `data` does with the plan and what the stages before it made."""


def _run_stages(run: Run, until: str) -> dict:
    cfg, made = run.cfg, Made(t_start=time.time())
    if dist.world_size() > 1:  # `accelerate launch`: one rank prints; the model is resolved (GGUF converted) once
        console.quiet = not dist.is_main()
        run._model_path = dist.on_main(lambda: run.model_path)
    data = dist.on_main(lambda: stage_data(run))  # makes and locks the run directory
    if dist.is_main():
        write_json(run.layout.config, to_dict(cfg))
    p = plan(cfg, run.task, data["train"], data["test"], until)
    console.print(f"[bold]{cfg.data.task}[/]: {len(p.train)} train / {len(p.test)} test rows -> {run.dir}")
    for stage in p.stages[1:]:  # the data stage made the plan's rows
        STEPS[stage](run, p, made)
    return made.summary
