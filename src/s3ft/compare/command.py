"""The `s3ft compare` command: its options, its phases (one per measurement) and compare.json."""


from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..artifacts import write_json
from ..config import to_dict
from ..errors import S3FTError
from ..forgetting import meter
from ..forgetting.lm_eval_bridge import TASKS, evaluate_general, settings_differences
from ..forgetting.records import Estimate, Paired
from ..forgetting.targets import NLLScorer
from ..progress import console
from .audit import audit_judge_for, judge_audit
from .contrasts import contrasts_block, parse_contrast
from .general import _cache_keys, base_block, general_block, metric_items, metric_pairs
from .in_domain import in_domain_block, in_domain_scores
from .report import write_reports
from .runs import RunDir, load_run, load_runs, method_order, model_path_of
from .seeds import aggregate_seeds
from .target_nll import logprob_histogram_data, target_nll

__all__ = ["CompareOptions", "compare", "load_run", "load_runs", "aggregate_seeds", "target_nll", "in_domain_scores"]


@dataclass
class CompareOptions:
    """Knobs of `compare` besides the general-benchmark settings."""

    bootstrap_iters: int = 2000
    bootstrap_seed: int = 0
    nll: bool = True
    nll_batch_size: int = 16
    forgetting: bool = True
    """Read the forgetting meter the runs' `forgetting` stage measured (an error where it is missing)."""
    controls: bool = True
    """Run the general benchmarks on the meter's control adapters too."""
    audit_judge: str | None = "auto"
    """Second judge for the audit; "auto": one that grades the task's answers another way (`audit.SECOND_OPINIONS`),
    or no audit, said so in the report, where none is registered; None: no audit."""
    audit_size: int = 50
    audit_seed: int = 0
    cache_dir: str | None = None
    """General-eval cache; default `<out_dir>/cache`."""
    contrasts: list[str] = field(default_factory=list)
    """Pairs "A-B" to contrast besides every method against SFT (e.g. "s3ft-ssr")."""
    extra: dict = field(default_factory=dict)


def _order(labels) -> list[str]:
    order = method_order() + list(meter.CONTROLS.values())

    def rank(m: str) -> int:  # a variant (`s3ft+replay`) sorts after the method it varies
        return max((order.index(o) for o in order if m.startswith(o)), default=99)
    return sorted(labels, key=lambda m: (any(m.startswith(x) for x in meter.CONTROLS.values()), rank(m), m))


def _adapter(run: RunDir, label: str) -> str | None:
    if label == "base":
        return None
    path = run.layout.adapter(label)
    if not path.is_dir():
        raise S3FTError(f"{run.path}: no adapter for {label} ({path} missing); finish the run first (`s3ft train`)")
    return str(path)


def forgetting_labels(run: RunDir) -> tuple[list[str], list[str]]:
    """(methods with the meter's measurements, controls found) of one run; an error if any method lacks them."""
    missing = [m for m in run.methods if not run.layout.drift(m).is_file()]
    if missing:
        raise S3FTError(f"{run.path}: no forgetting measurements for {', '.join(missing)} "
                        f"({run.layout.drift(missing[0])} missing); measure them with "
                        f"`s3ft forgetting {run.path}/config.json -o {run.path}`, or pass --no-forgetting")
    controls = [c for c in meter.CONTROLS.values() if run.layout.drift(c).is_file()]
    return list(run.methods), controls


@dataclass
class Comparison:
    """What the phases of `compare` fill in, run by run and model by model."""

    runs: list[RunDir]
    opts: CompareOptions
    say: Callable[[str], None]
    tasks: list[str]
    """The general benchmarks (none when `general` is None)."""
    per_run: dict[str, dict] = field(default_factory=dict)
    """run -> model -> its block of compare.json (in_domain, target_mix, nll, general, measures, values)."""
    pairs: dict[str, dict[str, dict[str, Paired]]] = field(default_factory=dict)
    """run -> model -> measure -> per-item pairs."""
    values: dict[str, dict[str, dict[str, dict]]] = field(default_factory=dict)
    """run -> model -> a model's own value (not a difference from base)."""
    controls: set[str] = field(default_factory=set)
    meter_settings: dict | None = None
    audits: dict = field(default_factory=dict)
    no_audit: dict[str, str] = field(default_factory=dict)
    """run -> why it has no judge audit."""
    hist: dict = field(default_factory=dict)
    settings: dict | None = None
    """The general benchmarks' settings (base's, every model's being checked equal to them)."""
    skipped: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def compare(run_dirs: list[Path], general, out_dir: Path, options: CompareOptions | None = None,
            progress: Callable[[str], None] | None = None) -> dict:
    """Compare the methods of one or more run directories; writes compare.json, report.md/html.

    Args:
        run_dirs: Run directories of the same task and model (several = several seeds).
        general: A `lm_eval_bridge.GeneralEvalConfig` used identically for every model, or None to
            skip general benchmarks.
        out_dir: Where compare.json, report.md, report.html and plots/ go.
    """
    opts = options or CompareOptions()
    out_dir = Path(out_dir)
    t_all = time.time()
    runs = load_runs([Path(d) for d in run_dirs])
    for spec in opts.contrasts:  # a misspelt pair fails before any work
        parse_contrast(spec, _order({r.model(m) for r in runs for m in r.methods}) + list(meter.CONTROLS.values()))
    c = Comparison(runs, opts, progress or (lambda msg: console.print(f"[dim]{msg}[/]")),
                   list(general.tasks) if general is not None else [],
                   pairs={r.group: {} for r in runs}, values={r.group: {} for r in runs})
    # in-domain first: cheap, and it validates the run dirs before anything heavy
    for key, phase in (("in_domain_s", _in_domain), ("forgetting_s", _forgetting), ("judge_audit_s", _judge_audit),
                       ("nll_s", _target_nll)):
        t0 = time.time()
        phase(c)
        c.timings[key] = round(time.time() - t0, 2)
    t0 = time.time()
    _general(c, general, out_dir)
    c.timings["general_s"] = round(time.time() - t0, 2)
    data = _compare_json(c)
    t0 = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_reports(data, out_dir)
    c.timings["report_s"] = round(time.time() - t0, 2)
    c.timings["total_s"] = round(time.time() - t_all, 2)
    write_json(out_dir / "compare.json", data)
    return data


def _in_domain(c: Comparison) -> None:
    """Accuracy of every method against base's, and each method's target mix."""
    it, bs = c.opts.bootstrap_iters, c.opts.bootstrap_seed
    base_of = {}
    for run in c.runs:
        _, base_ids = in_domain_scores(run, "base")
        if run.group in base_of and base_of[run.group] != base_ids:
            raise S3FTError(f"{run.path}: its base model's in-domain results differ from those of {run.group}, "
                            "whose seeds it shares; the variants of a seed must share everything before training")
        base_of[run.group] = base_ids
        block = c.per_run.setdefault(run.group, {})
        for m in run.methods:
            if m == "base" and run.merged:
                continue
            row, paired = in_domain_block(run, m, base_ids, it, bs)
            block[run.model(m)] = {"in_domain": row}
            if paired is not None:
                c.pairs[run.group].setdefault(run.model(m), {})["in_domain/accuracy"] = paired
            stats_path = run.layout.train_stats(m)
            if stats_path.is_file():
                block[run.model(m)]["target_mix"] = json.loads(stats_path.read_text(encoding="utf-8"))["target_mix"]


def _forgetting(c: Comparison) -> None:
    """The forgetting meter, as the runs' `forgetting` stage measured it."""
    if not c.opts.forgetting:
        return
    for run in c.runs:
        labels, found = forgetting_labels(run)
        c.controls.update(found)
        fc = run.config.forgetting
        c.meter_settings = to_dict(fc)
        gcfg = meter.probe_benchmark_config(fc, run.config.data.data_dir, run.config.model)
        results = None
        if gcfg is not None:
            results = meter.run_probe_benchmarks(run.path, model_path_of(run), gcfg,
                                                 {m: _adapter(run, m) for m in labels + found}, c.say)
        for m, ps in meter.run_pairs(run.path, labels + found, results, list(fc.benchmarks)).items():
            if m == "base" and run.merged:
                continue
            c.pairs[run.group].setdefault(run.model(m), {}).update(ps)
            c.per_run[run.group].setdefault(run.model(m), {})
        c.say(f"{run.label}: forgetting meter for {', '.join(labels + found)}")


def _judge_audit(c: Comparison) -> None:
    """A second judge re-judges a seeded sample of each run's selection decisions."""
    if not c.opts.audit_judge:
        return
    for run in c.runs:
        name, why = audit_judge_for(run, c.opts.audit_judge)
        if name is None:
            if why not in c.no_audit.values():  # the same reason for every run: said once
                c.say(why)
            c.no_audit[run.label] = why
        elif run.layout.verdicts(run.layout.answers).is_file():
            c.audits[run.label] = judge_audit(run, name, c.opts.audit_size, c.opts.audit_seed)
            a = c.audits[run.label]
            rate = "n/a" if a["agreement"] is None else f"{a['agreement']:.2f}"
            c.say(f"{run.label}: judge audit {a['primary_judge']} vs {a['second_judge']}: "
                  f"{a['n']} rows, agreement {rate}")


def _target_nll(c: Comparison) -> None:
    """NLL of training targets under the base model."""
    if not c.opts.nll:
        return
    scorers: dict[tuple[str, str], NLLScorer] = {}
    memo: dict = {}  # a target scored for one seed serves every run with the same scoring setup
    for run in c.runs:
        def get_scorer(run=run):
            path = model_path_of(run)
            key = (path, run.config.model.dtype)  # the same weights at another dtype score differently
            if key not in scorers:
                with console.status(f"loading {path} for target NLL"):
                    scorers[key] = NLLScorer(path, to_dict(run.config.model), c.opts.nll_batch_size)
            return scorers[key]
        nll = target_nll(run, run.methods, get_scorer, c.say, memo)
        for m, s in nll.items():
            if m == "base" and run.merged:
                continue
            c.per_run[run.group][run.model(m)]["nll"] = s
        c.hist[run.label] = logprob_histogram_data(run, run.methods)
    scorers.clear()


def _general(c: Comparison, general, out_dir: Path) -> None:
    """General benchmarks for base, every method and (with `controls`) the meter's control adapters."""
    if general is None:
        return
    cache = Path(c.opts.cache_dir) if c.opts.cache_dir else out_dir / "cache"
    for run in c.runs:
        model = model_path_of(run)
        c.say(f"{run.label}: general benchmarks for base ({model})")
        base_res = evaluate_general(model, None, general, cache, progress=c.say)
        c.settings = base_res["settings"]
        if not run.merged:
            c.per_run[run.group]["base"]["general"] = base_block(base_res, c.tasks)
            c.per_run[run.group]["base"]["general"]["cache_keys"] = _cache_keys(base_res)
        for t, r in base_res["tasks"].items():
            if r.get("skipped"):
                c.skipped[t] = r["skipped"]
        tuned = [m for m in run.methods if m != "base"]
        if c.opts.controls:
            tuned += [x for x in meter.CONTROLS.values() if x in c.controls and run.layout.adapter_dir(x).is_dir()]
        for m in ([] if run.merged else ["base"]) + tuned:
            res = base_res if m == "base" else _general_tuned(c, run, m, model, base_res, general, cache)
            _general_values(c, run.group, run.model(m), res)


def _general_tuned(c: Comparison, run: RunDir, m: str, model: str, base_res: dict, general, cache: Path) -> dict:
    """One tuned model's general benchmarks, and its paired differences from base."""
    it, bs = c.opts.bootstrap_iters, c.opts.bootstrap_seed
    c.say(f"{run.label}: general benchmarks for {m}")
    res = evaluate_general(model, _adapter(run, m), general, cache, progress=c.say)
    diff = settings_differences(base_res, res)
    if diff:
        raise S3FTError(f"{run.path}: general-eval settings of {m} differ from base's: {', '.join(diff)}")
    block = c.per_run[run.group].setdefault(run.model(m), {})
    block["general"] = general_block(base_res, res, c.tasks, it, bs)
    block["general"]["cache_keys"] = _cache_keys(res)
    found = c.pairs[run.group].setdefault(run.model(m), {})
    # a benchmark with several reported metrics (ifeval) gets them below, not a second `accuracy`
    scored = [t for t in c.tasks if not TASKS[t].report_metrics]
    found.update({f"general/{k}": v for k, v in meter.benchmark_pairs(base_res, res, scored).items()})
    for t in c.tasks:
        found.update({f"general/{k}": v for k, v in metric_pairs(base_res, res, t, TASKS[t].report_metrics).items()})
    return res


def _general_values(c: Comparison, label: str, m: str, res: dict) -> None:
    """A model's own values of the benchmarks that report several metrics (ifeval)."""
    own = c.values[label].setdefault(m, {})
    for t in c.tasks:
        if res["tasks"].get(t, {}).get("items"):
            for key in TASKS[t].report_metrics:
                own[f"general/{t}/{key.split(',')[0]}"] = Estimate.pooled(
                    [metric_items(res["tasks"][t], key)], c.opts.bootstrap_iters, c.opts.bootstrap_seed).to_dict()


def _pool(c: Comparison, models: list[str]) -> dict:
    """Every paired measurement per run (into `per_run`), and pooled over runs (seeds, then items)."""
    it, bs = c.opts.bootstrap_iters, c.opts.bootstrap_seed
    for label, by_model in c.pairs.items():
        for m, ps in by_model.items():
            c.per_run[label][m]["measures"] = {k: Estimate.pooled([p], it, bs).to_dict() for k, p in ps.items()}
            if c.values[label].get(m):
                c.per_run[label][m]["values"] = c.values[label][m]
    pooled = {}
    for m in models:
        keys = sorted({k for by_model in c.pairs.values() for k in by_model.get(m, {})})
        pooled[m] = {k: Estimate.pooled([by_model[m][k] for by_model in c.pairs.values() if k in by_model.get(m, {})],
                                        it, bs).to_dict() for k in keys}
    return pooled


def _compare_json(c: Comparison) -> dict:
    """compare.json: the phases' blocks, pooled, with what they mean."""
    methods = _order({r.model(m) for r in c.runs for m in r.methods})
    models = _order({m for p in c.pairs.values() for m in p} | set(methods))
    pooled = _pool(c, models)
    runs = c.runs
    return {
        "schema": 2,
        "task": runs[0].get("data", "task"),
        "model": runs[0].get("model", "name_or_path"),
        "runs": [{"label": r.label, "dir": str(r.path.resolve()), "methods": r.methods, "seeds": r.seeds,
                  **({"variant": r.variant, "reported_under": r.group} if r.variant else {})} for r in runs],
        "methods": methods,
        "controls": _order(c.controls),
        "benchmarks": c.tasks,
        "general_settings": c.settings,
        "forgetting_settings": c.meter_settings,
        "skipped_benchmarks": c.skipped,
        "bootstrap": {"iters": c.opts.bootstrap_iters, "seed": c.opts.bootstrap_seed,
                      "ci": "95% percentile, paired over the same items; pooled: "
                      "seeds resampled, then items within each seed"},
        "units": "accuracies and deltas are fractions (0-1); fields ending in _pts are accuracy points (x100); "
                 "drift and likelihood measures are nats (per token for drift)",
        "measures": {**{f"drift/{k}": v for k, v in meter.drift.MEASURES.items()},
                     **{f"probe|general/<benchmark>/{k}": v for k, v in meter.likelihood.MEASURES.items()},
                     "in_domain/accuracy": "in-domain accuracy change, method - base (fraction)"},
        "per_run": c.per_run,
        "pooled": pooled,
        "contrasts": contrasts_block(c.pairs, models, c.opts.contrasts, c.opts.bootstrap_iters, c.opts.bootstrap_seed),
        "aggregate": aggregate_seeds(c.per_run, methods, c.tasks),
        "logprob_histogram": c.hist,
        "judge_audit": c.audits,
        "judge_audit_skipped": c.no_audit,
        "timings": c.timings,
    }
