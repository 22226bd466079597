"""report.md, a self-contained report.html and plots/*.png from compare.json's data.

Every number printed here is formatted from the dict that is also written as compare.json;
nothing is recomputed. Tables are built once (lists of cells) and rendered to both formats.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from ..mdtext import md_table, md_text
from ..strategies import group_counts, source_groups
from .contrasts import headline
from .plots import PLOT_TITLES, make_plots


# ----------------------------------------------------------------------------- number formats


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def dpts(x) -> str:
    return "–" if x is None else f"{100 * x:+.1f}"


def ci_pts(ci, signed: bool = True) -> str:
    if not ci:
        return ""
    lo, hi = ci
    f = "{:+.1f}" if signed else "{:.1f}"
    return f"[{f.format(100 * lo)}, {f.format(100 * hi)}]"


def pts(x, signed: bool = True) -> str:
    return "–" if x is None else (f"{x:+.1f}" if signed else f"{x:.1f}")


def ci_raw(ci, fmt="{:+.1f}") -> str:
    return "" if not ci else f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def msd(d: dict, scale: float = 100, signed: bool = False, digits: int = 1) -> str:
    if not d or d.get("mean") is None:
        return "–"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    s = f.format(scale * d["mean"])
    return s + (f" ± {scale * d['sd']:.{digits}f}" if d.get("sd") is not None else "")


# ----------------------------------------------------------------------------- tables


def _bench_label(data: dict, t: str) -> str:
    return t + (" (skipped)" if t in data["skipped_benchmarks"] else "")


def _forgetting_legend(data: dict, n_runs: int) -> str:
    """What the forgetting table's measures mean: only those it has."""
    keys = {k for measures in data["pooled"].values() for k in measures}
    text = ("Every measurement is method − base per item, averaged (drift: per token), with a 95% bootstrap CI"
            + (" that resamples the runs (seeds), then the items within each" if n_runs > 1 else " over items")
            + ". Drift (nats/token; > 0 = moved away from the base model): `text_nll_delta` on general text, "
            "`response_kl` = KL(base ‖ model) on the base model's own answers to general instructions.")
    if any(k.startswith(("probe/", "general/")) for k in keys):
        text += (" Probe/general: `accuracy` (points) and, per multiple-choice item, Δ log p(correct | choices) "
                 "and Δ margin over the best wrong choice (nats; < 0 = forgetting).")
    if data.get("controls"):
        text += (" Controls: `base` (itself, exactly 0), `control-untrained` (an untrained adapter: must read ~0), "
                 "`control-planted` (SFT at a much higher learning rate: must read > 0).")
    return text


def headline_table(data: dict, label: str) -> tuple[list[str], list[list[str]]]:
    """One run: accuracy (Wilson CI), deltas with paired-bootstrap CIs, general values, avg drop."""
    block = data["per_run"][label]
    head = ["method", "in-domain acc % [95% CI]", "Δ in-domain pts [95% CI]"]
    head += [f"{_bench_label(data, t)} % (Δ pts [95% CI])" for t in data["benchmarks"]]
    if data["benchmarks"]:
        head.append("avg drop pts [95% CI]")
    head.append("target NLL nats/token [95% CI]")
    rows = []
    for m in data["methods"]:
        if m not in block:
            continue
        r = block[m]
        ind = r["in_domain"]
        row = [m, f"{pct(ind['accuracy'])} {ci_pts(ind['ci95'], signed=False)} (n={ind['n']})",
               "–" if m == "base" else f"{dpts(ind['delta'])} {ci_pts(ind['delta_ci95'])}"]
        for t in data["benchmarks"]:
            g = r.get("general", {}).get("benchmarks", {}).get(t, {})
            if g.get("skipped"):
                row.append("skipped")
            elif m == "base" or g.get("delta") is None:
                row.append(f"{pct(g.get('value'))} (n={g.get('n', 0)})")
            else:
                row.append(f"{pct(g['value'])} ({dpts(g['delta'])} {ci_pts(g['delta_ci95'])})")
        if data["benchmarks"]:
            gen = r.get("general", {})
            row.append("–" if m == "base" or gen.get("avg_drop_pts") is None
                       else f"{pts(gen['avg_drop_pts'])} {ci_raw(gen['avg_drop_ci95_pts'])}")
        nll = r.get("nll")
        row.append("–" if not nll or nll.get("nll") is None
                   else f"{nll['nll']:.3f} {ci_raw(nll['nll_ci95'], '{:.3f}')}")
        rows.append(row)
    return head, rows


def aggregate_table(data: dict) -> tuple[list[str], list[list[str]]]:
    head = ["method", "runs", "in-domain acc %", "Δ in-domain pts"]
    head += [f"{_bench_label(data, t)} Δ pts" for t in data["benchmarks"]]
    if data["benchmarks"]:
        head.append("avg drop pts")
    head.append("target NLL")
    rows = []
    for m, a in data["aggregate"].items():
        row = [m, str(a["n_runs"]), msd(a["in_domain_accuracy"]),
               "–" if m == "base" else msd(a["in_domain_delta"], signed=True)]
        for t in data["benchmarks"]:
            row.append(msd(a.get("general", {}).get(t, {}).get("value")) if m == "base"
                       else msd(a.get("general", {}).get(t, {}).get("delta"), signed=True))
        if data["benchmarks"]:
            row.append("–" if m == "base" else msd(a.get("avg_drop_pts"), scale=1, signed=True))
        row.append(msd(a.get("nll"), scale=1, digits=3))
        rows.append(row)
    return head, rows


def mix_table(data: dict) -> tuple[list[str], list[list[str]]]:
    """Rows per run and method; a column per display group of target sources, named by its labels."""
    mixes = [(label, m, r["target_mix"]) for label, block in data["per_run"].items() for m, r in block.items()
             if r.get("target_mix")]
    groups = source_groups(source for _, _, mix in mixes for source in mix)
    head = ["run", "method", *("/".join(labels) for labels in groups.values()), "rows"]
    return head, [[label, m, *map(str, group_counts(mix, groups)), str(sum(mix.values()))] for label, m, mix in mixes]


def nll_source_table(data: dict) -> tuple[list[str], list[list[str]]]:
    head = ["run", "method", "source", "rows", "tokens", "NLL nats/token"]
    rows = []
    for label, block in data["per_run"].items():
        for m, r in block.items():
            for s, v in (r.get("nll") or {}).get("by_source", {}).items():
                rows.append([label, m, s, str(v["rows"]), str(v["tokens"]), f"{v['nll']:.3f}"])
    return head, rows


def audit_table(data: dict) -> tuple[list[str], list[list[str]]]:
    head = ["run", "judges (primary vs second)", "sampled / eligible", "agreement [95% CI]",
            "both accept", "primary only", "second only", "both reject", "selected targets kept by second"]
    rows = []
    for label, a in data["judge_audit"].items():
        c = a["counts"]
        agree = "–" if a["agreement"] is None else f"{100 * a['agreement']:.0f}% {ci_pts(a['agreement_ci95'], False)}"
        rows.append([label, f"{a['primary_judge']} vs {a['second_judge']}", f"{a['n']} / {a['population']}", agree,
                     str(c["both_accept"]), str(c["primary_only"]), str(c["second_only"]), str(c["both_reject"]),
                     f"{a['selected_also_accepted']} / {a['selected_in_sample']}"])
    return head, rows


KEY_ORDER = ("in_domain/", "drift/", "probe/", "general/")


def _is_points(key: str) -> bool:
    return key.endswith("/accuracy") or key.endswith("_acc")


def _fmt_estimate(e: dict | None, key: str) -> str:
    if not e:
        return "–"
    scale, digits = (100, 1) if _is_points(key) else (1, 3)
    lo, hi = e["ci95"]
    return f"{scale * e['value']:+.{digits}f} [{scale * lo:+.{digits}f}, {scale * hi:+.{digits}f}]"


def _key_label(key: str) -> str:
    kind, _, rest = key.partition("/")
    unit = " pts" if _is_points(key) else ""
    if kind == "in_domain":
        return f"in-domain {rest}{unit}"
    return f"{rest}{unit}" if kind == "drift" else f"{kind}: {rest}{unit}"


def forgetting_table(data: dict, estimates: dict[str, dict[str, dict]]) -> tuple[list[str], list[list[str]]]:
    """One row per model (methods, then controls): every paired measurement vs base with its 95% CI."""
    keys = sorted({k for est in estimates.values() for k in est},
                  key=lambda k: (next(i for i, p in enumerate(KEY_ORDER) if k.startswith(p)), k))
    head = ["model"] + [_key_label(k) for k in keys]
    rows = []
    for m in data["methods"] + data["controls"]:
        if m in estimates:
            rows.append([m + (" (control)" if m in data["controls"] else "")]
                        + [_fmt_estimate(estimates[m].get(k), k) for k in keys])
    return head, rows


def values_table(data: dict) -> tuple[list[str], list[list[str]]]:
    """Each model's own value of the metrics reported with CIs (IFEval's four accuracies)."""
    label = next(iter(data["per_run"]))
    block = data["per_run"][label]
    keys = sorted({k for r in block.values() for k in r.get("values", {})})
    head = ["model"] + [k.removeprefix("general/") + " %" for k in keys]
    rows = []
    for m in data["methods"] + data["controls"]:
        vals = block.get(m, {}).get("values")
        if vals:
            rows.append([m] + [f"{100 * vals[k]['value']:.1f} {ci_pts(vals[k]['ci95'], signed=False)}"
                               if k in vals else "–" for k in keys])
    return head, rows


def html_table(head, rows) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


# ----------------------------------------------------------------------------- documents


def contrast_items(data: dict) -> list[str]:
    """One item per contrast: A − B on every measure with its CI, then the verdict sentence."""
    return [f"{line}. Verdict: {sentence}" for line, sentence in headline(data["contrasts"])]


def sections(data: dict) -> list[tuple[str, str, object]]:
    """[(kind, title, payload)]: kind in text/table/plot/list; rendered to md and html alike."""
    out: list[tuple[str, str, object]] = []
    labels = list(data["per_run"])
    runs_desc = "; ".join(f"{r['label']} ({', '.join(f'{k}={v}' for k, v in r['seeds'].items())})"
                          for r in data["runs"])
    out.append(("text", "", f"Task **{data['task']}**, model **{data['model']}**. Runs: {runs_desc}."))
    if data.get("contrasts"):
        out.append(("list", "At a glance: each method against SFT (paired 95% CIs)", contrast_items(data)))
    out.append(("text", "", "Δ = method − base. CIs are 95% paired bootstrap intervals over the same items "
                f"({data['bootstrap']['iters']} resamples); in-domain accuracy CIs are Wilson intervals."
                + (" The average drop is the mean over benchmarks of (base − method) in points, as the SSR/S3FT "
                   "papers report it; positive means forgetting." if data["benchmarks"] else "")))
    if data.get("pooled") and any(data["pooled"].values()):
        n = len(labels)
        out.append(("text", "Forgetting" + (f", {n} runs pooled" if n > 1 else ""), _forgetting_legend(data, n)))
        out.append(("table", "", forgetting_table(data, data["pooled"])))
        out.append(("plot", PLOT_TITLES["gain_vs_forgetting"], "gain_vs_forgetting"))
        if n > 1:
            for label in labels:
                per_seed = {m: r["measures"] for m, r in data["per_run"][label].items() if r.get("measures")}
                out.append(("table", f"Forgetting: {label}", forgetting_table(data, per_seed)))
    head, rows = values_table(data)
    if rows:
        out.append(("table", "IFEval accuracy (95% percentile bootstrap CI over prompts)", (head, rows)))
    if len(labels) > 1:
        out.append(("table", "Mean ± sd over runs (seeds)", aggregate_table(data)))
    for label in labels:
        out.append(("table", f"Results: {label}" if len(labels) > 1 else "Results", headline_table(data, label)))
    if data["skipped_benchmarks"]:
        out.append(("list", "Skipped benchmarks", [msg if msg.startswith(f"{t}:") else f"{t}: {msg}"
                                                  for t, msg in data["skipped_benchmarks"].items()]))
    for name in ("tradeoff", "deltas", "target_mix", "logprob_hist", "nll"):  # gain_vs_forgetting: above
        out.append(("plot", PLOT_TITLES[name], name))
    head, rows = mix_table(data)
    if rows:
        out.append(("table", "Training-target mix per run", (head, rows)))
    head, rows = nll_source_table(data)
    if rows:
        out.append(("text", "Target NLL by source", "Mean per-token NLL (nats) of the training targets under the "
                    "base model, teacher-forced with the chat template as TRL trains (prompt with generation "
                    "prompt; completion = target + end-of-turn)."))
        out.append(("table", "", (head, rows)))
    for why in dict.fromkeys((data.get("judge_audit_skipped") or {}).values()):  # once, however many runs
        out.append(("text", "Judge audit", why))
    head, rows = audit_table(data)
    if rows:
        out.append(("text", "Judge audit", "A second judge re-judges a seeded sample of the selection decisions "
                    "(the base model's answers and paraphrases the primary judge graded; truncated and "
                    "pre-filtered rows are left out because no judge decided them)."))
        out.append(("table", "", (head, rows)))
        if any(a["second_judge"] == "exact" and a["primary_judge"] != "exact" for a in data["judge_audit"].values()):
            out.append(("text", "", "Note: the `exact` judge accepts a response only if the whole response equals "
                        "the gold answer, so it rejects every worked solution; with it the audit mostly measures "
                        "how often the primary judge accepts. Pass `--audit-judge NAME` for a judge that grades "
                        "the same thing differently."))
        for label, a in data["judge_audit"].items():
            if a["disagreements"]:
                out.append(("list", f"Disagreements ({label}, up to 5)",
                            [f"{d['kind']} {d['id']}: primary {'accept' if d['primary'] else 'reject'} "
                             f"({d['primary_reason']}), second {'accept' if d['second'] else 'reject'} "
                             f"({d['second_reason']}); ends: …{d['text_tail'][-100:]!r}" for d in a["disagreements"]]))
    gs = data.get("general_settings")
    if gs:
        out.append(("list", "General-benchmark settings (identical for every model)",
                    [f"{k}: {v}" for k, v in gs.items()]))
    t = data["timings"]
    out.append(("text", "Cost", "Wall time: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in t.items())
                + " (cached results cost nothing)."))
    return out


def render_markdown(data: dict, plot_files: dict[str, str]) -> str:
    lines = [f"# s3ft compare: {data['task']} with {data['model']}", ""]
    for kind, title, payload in sections(data):
        if kind == "plot" and payload not in plot_files:
            continue  # a plot with no data is neither drawn nor linked
        if title:
            lines += [f"## {title}", ""]
        if kind == "text":
            lines += [payload, ""]
        elif kind == "table":
            lines += [md_table(*payload), ""]
        elif kind == "list":
            lines += [f"- {md_text(x)}" for x in payload] + [""]
        elif kind == "plot":
            lines += [f"![{title}]({plot_files[payload]})", ""]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:8px 0 20px;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:6px 0 18px}h1{font-size:22px}h2{font-size:17px;margin-top:26px}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0;flex:1 1 560px}figcaption{font-size:13px;color:#555}"""


def _inline_md(text: str) -> str:
    import re
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))


def render_html(data: dict, plots: dict[str, bytes]) -> str:
    body = [f"<h1>s3ft compare: {html.escape(data['task'])} with {html.escape(data['model'])}</h1>"]
    figs = []

    def flush_figs():
        if figs:
            body.append('<div class="plots">' + "".join(figs) + "</div>")
            figs.clear()

    for kind, title, payload in sections(data):
        if kind == "plot":
            if payload in plots:
                uri = "data:image/png;base64," + base64.b64encode(plots[payload]).decode()
                figs.append(f'<figure><img alt="{html.escape(title)}" src="{uri}">'
                            f"<figcaption>{html.escape(title)}</figcaption></figure>")
            continue
        flush_figs()
        if title:
            body.append(f"<h2>{html.escape(title)}</h2>")
        if kind == "text":
            body.append(f"<p>{_inline_md(payload)}</p>")
        elif kind == "table":
            body.append(html_table(*payload))
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in payload) + "</ul>")
    flush_figs()
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>s3ft compare</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>")


def write_reports(data: dict, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    plots = make_plots(data)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    files = {}
    for name, png in plots.items():
        (out_dir / "plots" / f"{name}.png").write_bytes(png)
        files[name] = f"plots/{name}.png"
    (out_dir / "report.md").write_text(render_markdown(data, files), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(data, plots), encoding="utf-8")
