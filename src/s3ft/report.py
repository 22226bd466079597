"""summary.json and report.md for a run; the table printed at the end of `s3ft run`."""

from __future__ import annotations

from rich.table import Table

from .artifacts import write_json
from .compare.contrasts import headline
from .compare.run_contrasts import run_contrasts
from .config import to_dict
from .mdtext import md_row, md_text
from .methods import METHODS
from .progress import console
from .rows import EvalResult, SelectionStats, Summary
from .strategies import STRATEGIES, group_counts, source_groups


def write_summary(run, results: dict[str, EvalResult], select_stats: dict[str, SelectionStats], wall_s: float,
                  forgetting: dict | None = None, estimate: dict | None = None) -> Summary:
    """`estimate`: `cost.against_cost`'s estimated vs actual per stage, kept beside `cost`."""
    base = results.get("base", {}).get("accuracy")
    contrasts = {}
    if "base" in results:  # each method against SFT, paired over the run's own items
        contrasts = run_contrasts(run.dir, run.cfg, list(results), lambda: run.model_path)
    summary: Summary = {
        "task": run.cfg.data.task,
        "model": run.cfg.model.name_or_path,
        "contrasts": contrasts,
        "in_domain": {m: r["accuracy"] for m, r in results.items()},
        "in_domain_ci95": {m: r["ci95"] for m, r in results.items()},
        "in_domain_n": {m: r["n"] for m, r in results.items()},
        "task_metrics": {m: _flat(r.get("task_metrics", {})) for m, r in results.items() if r.get("task_metrics")},
        "target_mix": _mix(select_stats[_headline(select_stats)] if select_stats else {}),
        "target_mix_by_method": {m: s["target_mix"] for m, s in select_stats.items()},
        "gold_reasons_by_method": {m: s["gold_reasons"] for m, s in select_stats.items()},
        "answer_formats_by_method": {m: s["answer_formats_by_source"] for m, s in select_stats.items()
                                     if "answer_formats_by_source" in s},
        "forgetting": forgetting,
        "engine": getattr(run, "engine", None),  # generation backend, why it was chosen, resolved dtype
        "cost": {"total_wall_s": round(wall_s, 1), "stages": run.cost},
        "estimate": estimate,
        "config": to_dict(run.cfg),
    }
    write_json(run.layout.summary, summary)
    run.layout.report.write_text(render_markdown(summary, base), encoding="utf-8")
    print_table(summary)
    return summary


def _flat(metrics: dict, prefix: str = "") -> dict:
    """{"abstention": {"recall": 0.5}} -> {"abstention_recall": 0.5}: one table column each."""
    out = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, f"{key}."))
        else:
            out[key] = v
    return out


def _headline(select_stats: dict[str, SelectionStats]) -> str:
    """The method whose target mix heads the summary: the first of those whose strategy declares the most
    sources (the one that mixes own answers, paraphrases and gold, where the run has it)."""
    return max(select_stats, key=lambda m: len(STRATEGIES[m].sources) if m in STRATEGIES else 0)


def _mix(stats: dict) -> dict:
    """A method's target mix per display group, each under its first source label ('self', 'paraphrase', 'gold')."""
    mix = stats.get("target_mix", {})
    groups = source_groups(mix)
    return {labels[0]: n for labels, n in zip(groups.values(), group_counts(mix, groups))}


def mix_table(mixes: dict[str, dict[str, int]]) -> tuple[list[str], list[list[int]]]:
    """(column names, one row of counts per mix): a column per display group, named by its source labels
    ('paraphrase/rewrite')."""
    groups = source_groups(label for mix in mixes.values() for label in mix)
    return ["/".join(labels) for labels in groups.values()], [group_counts(mix, groups) for mix in mixes.values()]


def render_markdown(s: Summary, base: float | None) -> str:
    lines = [f"# s3ft run: {md_text(s['task'])} with {md_text(s['model'])}", ""]
    if not s.get("contrasts") and len(s["in_domain"]) > 1:
        lines += ["No method is compared with SFT: this run has no `sft` (add it to `methods` for the "
                  "method-vs-SFT headline).", ""]
    if s.get("contrasts"):
        lines += ["## At a glance: each method against SFT (paired 95% CIs)", ""]
        lines += [f"- {md_text(line)}. Verdict: {md_text(sentence)}" for line, sentence in headline(s["contrasts"])]
        lines += ["", "A − B per item on the same test questions and probe items; the verdict asks whether A gains "
                  "in-domain without forgetting more than B: supported (in-domain CI above 0, no measure showing "
                  "more forgetting), contradicted (in-domain CI below 0, or a measure showing more forgetting), "
                  "unresolved (otherwise). See docs/compare.md.", ""]
    lines += ["## In-domain accuracy (test split, 95% Wilson CI)", "",
             "| model | accuracy | 95% CI | n | vs base |", "|---|---:|---|---:|---:|"]
    for m, acc in s["in_domain"].items():
        lo, hi = s["in_domain_ci95"][m]
        delta = "" if base is None or m == "base" else f"{100 * (acc - base):+.1f}"
        lines.append(md_row([m, f"{100 * acc:.1f}%", f"[{100 * lo:.1f}, {100 * hi:.1f}]", s["in_domain_n"][m], delta]))
    if s.get("task_metrics"):
        cols = sorted({k for v in s["task_metrics"].values() for k in v})
        lines += ["", "## Task metrics", "", md_row(["model", *cols]), "|---|" + "---:|" * len(cols)]
        for m, vals in s["task_metrics"].items():
            lines.append(md_row([m, *(_cell(vals.get(c)) for c in cols)]))
    if s.get("forgetting"):
        head, rows = forgetting_table(s)
        lines += ["", "## Forgetting (vs base, 95% CIs over probe items)", "",
                  md_row(head), "|---|" + "---:|" * (len(head) - 1)]
        lines += [md_row(r) for r in rows]
        legend = ("Drift (nats/token): text NLL Δ on general text; response NLL Δ and response KL(base‖model) "
                  "on the base model's own answers to general instructions; > 0 = moved away from base. `base` is "
                  "the base model against itself (exactly 0).")
        if any(k.startswith("probe/") for m in s["forgetting"]["models"].values() for k in m):
            legend += (" Probe: accuracy Δ (points) and Δ log p(correct) (nats) on a labelled multiple-choice "
                       "sample; < 0 = forgetting.")
        if any(c in s["forgetting"].get("models", {}) for c in ("control-untrained", "control-planted")):
            legend += (" Controls: `control-untrained` is an untrained adapter (must read ~0), `control-planted` "
                       "SFT at a much higher learning rate (must read > 0).")
        lines += ["", legend]
    cols, counts = mix_table(s["target_mix_by_method"])
    lines += ["", "## Training-target mix", "", md_row(["method", *cols]), "|---|" + "---:|" * len(cols)]
    for m, row in zip(s["target_mix_by_method"], counts):
        lines.append(md_row([m, *row]))
    if s.get("answer_formats_by_method"):
        lines += ["", "## Answer formats of the training targets", ""] + answer_format_table(s["answer_formats_by_method"])
    lines += ["", "## Why rows fell back to gold", ""]
    for m, reasons in s["gold_reasons_by_method"].items():
        if reasons:
            lines.append(f"- **{md_text(m)}**: " + md_text("; ".join(f"{k} ({v})" for k, v in reasons.items())))
    lines += ["", "## Cost", "", "| stage | wall s | tokens | rows | peak RSS GiB | reused |",
              "|---|---:|---:|---:|---:|---|"]
    for stage, c in s["cost"]["stages"].items():
        reused = "yes" if c["reused"] else ""
        lines.append(f"| {stage} | {c['wall_s']:.1f} | {c['tokens']} | {c['rows']} | {c['peak_rss_gib']:.2f} | "
                     f"{reused} |")
    lines.append("\nEach stage's cost is what making its artifact took, over every invocation that worked on it; "
                 "reused: finished by an earlier one.")
    lines.append(f"Total wall time this invocation: {s['cost']['total_wall_s']:.0f} s.")
    lines += [line for name, m in METHODS.items() for line in m.cost_lines(s["cost"]["stages"], name)]
    if s.get("estimate"):
        e = s["estimate"]
        lines += ["", f"## Estimated vs actual ({e['source']})", "",
                  "| stage | est s | wall s | wall / est | est tokens | tokens | est peak GiB | peak GiB |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for stage, r in e["stages"].items():
            lines.append(f"| {stage} | {_cell(r['est_s'])} | {r['wall_s']} | {_cell(r['time_ratio'])} | "
                         f"{_cell(r['est_tokens'])} | {r['tokens']} | {_cell(r['est_peak_rss_gib'])} | "
                         f"{_cell(r['peak_rss_gib'])} |")
    lines.append("")
    return "\n".join(lines)


def answer_format_table(by_method: dict[str, dict[str, dict[str, int]]]) -> list[str]:
    """Markdown rows: one per (method, target source), a column per answer format ('none': no explicit one)."""
    known = ["answer is", "####", "boxed"]
    cols = sorted({f for by_src in by_method.values() for c in by_src.values() for f in c},
                  key=lambda f: (f == "none", known.index(f) if f in known else len(known), f))
    out = [md_row(["method", "target", *cols]), "|---|---|" + "---:|" * len(cols)]
    for m, by_src in by_method.items():
        for src, counts in by_src.items():
            out.append(md_row([m, src, *(counts.get(c, 0) for c in cols)]))
    return out


FORGETTING_COLUMNS = [("drift/text_nll_delta", "text NLL Δ", 1, 3), ("drift/response_nll_delta", "response NLL Δ", 1, 3),
                      ("drift/response_kl", "response KL", 1, 3)]
PROBE_COLUMNS = [("accuracy", "acc Δ pts", 100, 1), ("logp_correct", "Δ log p(correct)", 1, 3)]


def _est(e: dict | None, scale: float, digits: int) -> str:
    if not e:
        return "–"
    lo, hi = e["ci95"]
    return f"{scale * e['value']:+.{digits}f} [{scale * lo:+.{digits}f}, {scale * hi:+.{digits}f}]"


def forgetting_table(s: dict) -> tuple[list[str], list[list[str]]]:
    """One row per model: in-domain accuracy beside every forgetting measure."""
    f = s["forgetting"]
    benches = sorted({k.split("/")[1] for m in f["models"].values() for k in m if k.startswith("probe/")})
    head = ["model", "in-domain acc %"] + [name for _, name, _, _ in FORGETTING_COLUMNS]
    head += [f"{b} {name}" for b in benches for _, name, _, _ in PROBE_COLUMNS]
    rows = []
    for label, est in f["models"].items():
        acc = s["in_domain"].get(label)
        row = [label, "–" if acc is None else f"{100 * acc:.1f}"]
        row += [_est(est.get(key), scale, d) for key, _, scale, d in FORGETTING_COLUMNS]
        row += [_est(est.get(f"probe/{b}/{key}"), scale, d) for b in benches for key, _, scale, d in PROBE_COLUMNS]
        rows.append(row)
    return head, rows


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)


def print_table(s: Summary) -> None:
    t = Table(title=f"in-domain accuracy: {s['task']}")
    for col in ("model", "accuracy", "95% CI", "n"):
        t.add_column(col)
    for m, acc in s["in_domain"].items():
        lo, hi = s["in_domain_ci95"][m]
        t.add_row(m, f"{100 * acc:.1f}%", f"[{100 * lo:.1f}, {100 * hi:.1f}]", str(s["in_domain_n"][m]))
    console.print(t)
    for line, sentence in headline(s.get("contrasts") or {}):
        console.print(f"{line}\n  {sentence}", markup=False, highlight=False)
    if s.get("forgetting"):
        head, rows = forgetting_table(s)
        t = Table(title="forgetting vs base (95% CI)")
        for col in head:
            t.add_column(col)
        for r in rows:
            t.add_row(*r)
        console.print(t)
    mix = s["target_mix"]
    console.print("S3FT target mix: " + ", ".join(f"{k} {v}" for k, v in mix.items()))
