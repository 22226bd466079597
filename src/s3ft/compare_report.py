"""report.md, a self-contained report.html and plots/*.png from compare.json's data.

Every number printed here is formatted from the dict that is also written as compare.json;
nothing is recomputed. Tables are built once (lists of cells) and rendered to both formats.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

PALETTE = {"base": "#7f7f7f", "sft": "#d62728", "sdft": "#9467bd", "ssr": "#ff7f0e", "s3ft": "#1f77b4"}
GROUP_COLORS = {"gold": "#d62728", "paraphrase": "#2ca02c", "own answer": "#1f77b4"}


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
    head = ["run", "method", "self", "paraphrase/rewrite", "gold", "rows"]
    rows = []
    for label, block in data["per_run"].items():
        for m, r in block.items():
            mix = r.get("target_mix")
            if not mix:
                continue
            para = mix.get("paraphrase", 0) + mix.get("rewrite", 0)
            rows.append([label, m, str(mix.get("self", 0)), str(para), str(mix.get("gold", 0)),
                         str(sum(mix.values()))])
    return head, rows


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


def md_table(head, rows) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def html_table(head, rows) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


# ----------------------------------------------------------------------------- plots


def _err(lo, hi, centre):
    return [[max(0.0, centre - lo)], [max(0.0, hi - centre)]]


def make_plots(data: dict) -> dict[str, bytes]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, bytes] = {}
    multi = len(data["per_run"]) > 1
    first = next(iter(data["per_run"].values()))
    methods = [m for m in data["methods"] if m in data["aggregate"]]
    agg = data["aggregate"]

    def save(name, fig):
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        plots[name] = buf.getvalue()

    def centre_and_err(m, get_single, get_agg, scale=100.0):
        """(value, yerr) — per-seed CI for one run, sd across runs for several."""
        if multi:
            d = get_agg(agg[m])
            if not d or d.get("mean") is None:
                return None, None
            sd = d.get("sd") or 0.0
            return scale * d["mean"], [[scale * sd], [scale * sd]]
        value, ci = get_single(first[m])
        if value is None:
            return None, None
        return scale * value, (_err(scale * ci[0], scale * ci[1], scale * value) if ci else None)

    # 1. in-domain accuracy vs average general drop
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    has_general = bool(data["benchmarks"]) and any(r.get("general") for r in first.values())
    for m in methods:
        y, yerr = centre_and_err(m, lambda r: (r["in_domain"]["accuracy"], r["in_domain"]["ci95"]),
                                 lambda a: a["in_domain_accuracy"])
        if has_general:
            if m == "base":
                x, xerr = 0.0, None
            else:
                x, xerr = centre_and_err(m, lambda r: (r.get("general", {}).get("avg_drop_pts"),
                                                       r.get("general", {}).get("avg_drop_ci95_pts")),
                                         lambda a: a.get("avg_drop_pts"), scale=1.0)
            if x is None:
                continue
        else:
            x, xerr = methods.index(m), None
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="o", ms=8, capsize=4,
                    color=PALETTE.get(m, "#17becf"), label=m)
        ax.annotate(m, (x, y), textcoords="offset points", xytext=(6, 6))
    if has_general:
        ax.axvline(0, color="#bbbbbb", lw=1, ls="--")
        ax.set_xlabel("average general-benchmark drop vs base (points; right = more forgetting)")
    else:
        ax.set_xticks(range(len(methods)), methods)
        ax.set_xlabel("method (general benchmarks not run)")
    ax.set_ylabel("in-domain accuracy (%)")
    ax.set_title("In-domain accuracy vs forgetting" + (" (mean ± sd over runs)" if multi else " (95% CIs)"))
    ax.legend(fontsize=8, loc="best")
    save("tradeoff", fig)

    # 2. per-benchmark deltas
    if has_general:
        import numpy as np
        tuned = [m for m in methods if m != "base"]
        benches = [t for t in data["benchmarks"] if t not in data["skipped_benchmarks"]]
        if tuned and benches:
            fig, ax = plt.subplots(figsize=(max(6.5, 1.3 * len(benches) * max(1, len(tuned)) / 1.5), 4.5))
            width = 0.8 / len(tuned)
            for k, m in enumerate(tuned):
                vals, errs_lo, errs_hi = [], [], []
                for t in benches:
                    v, e = centre_and_err(m, lambda r, t=t: (r["general"]["benchmarks"][t]["delta"],
                                                             r["general"]["benchmarks"][t]["delta_ci95"]),
                                          lambda a, t=t: a.get("general", {}).get(t, {}).get("delta"))
                    vals.append(v if v is not None else 0.0)
                    errs_lo.append(e[0][0] if e else 0.0)
                    errs_hi.append(e[1][0] if e else 0.0)
                xs = np.arange(len(benches)) + (k - (len(tuned) - 1) / 2) * width
                ax.bar(xs, vals, width, yerr=[errs_lo, errs_hi], capsize=3, label=m,
                       color=PALETTE.get(m, "#17becf"))
            ax.axhline(0, color="black", lw=0.8)
            ax.set_xticks(np.arange(len(benches)), benches, rotation=15)
            ax.set_ylabel("Δ vs base (points)")
            ax.set_title("General benchmarks: change vs base" + (" (mean ± sd)" if multi else " (95% paired CIs)"))
            ax.legend(fontsize=8)
            save("deltas", fig)

    # 3. target mix
    mixes: dict[str, dict[str, float]] = {}
    for block in data["per_run"].values():
        for m, r in block.items():
            if r.get("target_mix"):
                mix = r["target_mix"]
                d = mixes.setdefault(m, {"self": 0.0, "paraphrase/rewrite": 0.0, "gold": 0.0, "_n": 0})
                d["self"] += mix.get("self", 0)
                d["paraphrase/rewrite"] += mix.get("paraphrase", 0) + mix.get("rewrite", 0)
                d["gold"] += mix.get("gold", 0)
                d["_n"] += 1
    if mixes:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        names = [m for m in methods if m in mixes]
        bottom = [0.0] * len(names)
        for part, color in (("self", GROUP_COLORS["own answer"]), ("paraphrase/rewrite", GROUP_COLORS["paraphrase"]),
                            ("gold", GROUP_COLORS["gold"])):
            vals = [mixes[m][part] / mixes[m]["_n"] for m in names]
            ax.bar(names, vals, bottom=bottom, label=part, color=color)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_ylabel("training rows" + (" (mean over runs)" if multi else ""))
        ax.set_title("Training-target mix per method")
        ax.legend(fontsize=8)
        save("target_mix", fig)

    # 4. log-prob histogram (S3FT Fig. 2)
    pooled: dict[str, list[float]] = {}
    for groups in data["logprob_histogram"].values():
        for g, vals in groups.items():
            pooled.setdefault(g, []).extend(vals)
    if any(pooled.values()):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        allv = [v for vals in pooled.values() for v in vals]
        lo, hi = min(allv), max(allv)
        bins = [lo + (hi - lo + 1e-9) * i / 25 for i in range(26)]
        for g in ("gold", "paraphrase", "own answer"):
            vals = pooled.get(g, [])
            if vals:
                ax.hist(vals, bins=bins, alpha=0.55, color=GROUP_COLORS[g],
                        label=f"{g} (n={len(vals)}, mean {sum(vals) / len(vals):.2f})")
            else:
                ax.plot([], [], color=GROUP_COLORS[g], label=f"{g} (no rows)")
        ax.set_xlabel("base model's mean per-token log-probability of the target")
        ax.set_ylabel("targets")
        ax.set_title("How far each target type is from the base model")
        ax.legend(fontsize=8)
        save("logprob_hist", fig)

    # 5. NLL per method
    nll_methods = [m for m in methods if agg.get(m, {}).get("nll", {}).get("mean") is not None]
    if nll_methods:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for m in nll_methods:
            v, e = centre_and_err(m, lambda r: ((r.get("nll") or {}).get("nll"), (r.get("nll") or {}).get("nll_ci95")),
                                  lambda a: a.get("nll"), scale=1.0)
            ax.bar([m], [v], yerr=e, capsize=4, color=PALETTE.get(m, "#17becf"))
            ax.annotate(f"{v:.3f}", (m, v), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
        ax.set_ylabel("mean NLL of training targets (nats/token)")
        ax.set_title("Distribution shift: base-model NLL of each method's targets")
        save("nll", fig)
    return plots


# ----------------------------------------------------------------------------- documents


PLOT_TITLES = {"tradeoff": "In-domain accuracy vs average general drop",
               "deltas": "Per-benchmark change vs base", "target_mix": "Training-target mix",
               "logprob_hist": "Base-model log-probability of targets (S3FT Fig. 2)",
               "nll": "Target NLL per method"}


def sections(data: dict) -> list[tuple[str, str, object]]:
    """[(kind, title, payload)]: kind in text/table/plot/list; rendered to md and html alike."""
    out: list[tuple[str, str, object]] = []
    labels = list(data["per_run"])
    runs_desc = "; ".join(f"{r['label']} ({', '.join(f'{k}={v}' for k, v in r['seeds'].items())})"
                          for r in data["runs"])
    out.append(("text", "", f"Task **{data['task']}**, model **{data['model']}**. Runs: {runs_desc}."))
    out.append(("text", "", "Δ = method − base. CIs are 95% paired bootstrap intervals over the same items "
                f"({data['bootstrap']['iters']} resamples); in-domain accuracy CIs are Wilson intervals. "
                "The average drop is the mean over benchmarks of (base − method) in points, as the SSR/S3FT "
                "papers report it; positive means forgetting."))
    if len(labels) > 1:
        out.append(("table", "Mean ± sd over runs (seeds)", aggregate_table(data)))
    for label in labels:
        out.append(("table", f"Results: {label}" if len(labels) > 1 else "Results", headline_table(data, label)))
    if data["skipped_benchmarks"]:
        out.append(("list", "Skipped benchmarks", [msg if msg.startswith(f"{t}:") else f"{t}: {msg}"
                                                  for t, msg in data["skipped_benchmarks"].items()]))
    for name in ("tradeoff", "deltas", "target_mix", "logprob_hist", "nll"):
        out.append(("plot", PLOT_TITLES[name], name))
    head, rows = mix_table(data)
    if rows:
        out.append(("table", "Training-target mix", (head, rows)))
    head, rows = nll_source_table(data)
    if rows:
        out.append(("text", "Target NLL by source", "Mean per-token NLL (nats) of the training targets under the "
                    "base model, teacher-forced with the chat template as TRL trains (prompt with generation "
                    "prompt; completion = target + end-of-turn)."))
        out.append(("table", "", (head, rows)))
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
        if title:
            lines += [f"## {title}", ""]
        if kind == "text":
            lines += [payload, ""]
        elif kind == "table":
            lines += [md_table(*payload), ""]
        elif kind == "list":
            lines += [f"- {x}" for x in payload] + [""]
        elif kind == "plot":
            lines += [f"![{title}]({plot_files[payload]})" if payload in plot_files else "_(no data for this plot)_",
                      ""]
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
