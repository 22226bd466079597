"""The report's plots, one function each, drawn from compare.json's data; each returns PNG bytes or None."""

from __future__ import annotations

import io

from ..strategies import group_counts, source_groups

PALETTE = {"base": "#7f7f7f", "sft": "#d62728", "sdft": "#9467bd", "ssr": "#ff7f0e", "s3ft": "#1f77b4",
           "control-untrained": "#bcbd22", "control-planted": "#8c564b"}
GROUP_COLORS = {"gold": "#d62728", "paraphrase": "#2ca02c", "own answer": "#1f77b4"}
MORE_GROUP_COLORS = ["#e377c2", "#17becf", "#bcbd22", "#8c564b"]  # display groups of other strategies' sources
PLOT_TITLES = {"gain_vs_forgetting": "In-domain gain vs forgetting (drift from the base model)",
               "tradeoff": "In-domain accuracy vs average general drop",
               "deltas": "Per-benchmark change vs base", "target_mix": "Training-target mix per method",
               "logprob_hist": "Base-model log-probability of targets (S3FT Fig. 2)",
               "nll": "Target NLL per method"}
# the forgetting axes of the gain-vs-forgetting plot, in order of preference
FORGETTING_AXES = [("drift/response_kl", "response KL(base ‖ model), nats/token"),
                   ("drift/text_nll_delta", "general-text NLL change, nats/token")]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    return buf.getvalue()


# where a label may sit around its point (offset in points), nearest first
LABEL_OFFSETS = [(dx * r, dy * r) for r in (7, 16, 28, 42)
                 for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))]


def place_labels(ax, points: list[tuple[float, float, str]], marker_pts: float = 8.0) -> list:
    """Annotate each (x, y, text) at the first offset whose box overlaps no earlier label and no point's
    marker, preferring boxes inside the axes; returns the annotations. Measured with the figure's renderer,
    so it holds for the final layout: call it after the axes limits and the layout are settled."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    half = marker_pts * fig.dpi / 72 / 2 + 1
    marks = [ax.transData.transform((x, y)) for x, y, _ in points]
    taken = [(px - half, py - half, px + half, py + half) for px, py in marks]
    inside = ax.get_window_extent(renderer)
    placed = []
    for x, y, text in points:
        ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(0, 0), fontsize=8)
        ann.set_in_layout(False)  # a later tight_layout keeps the layout the labels were placed on
        choice = None
        for dx, dy in LABEL_OFFSETS:
            rect = _move(ann, dx, dy, renderer)
            if any(_overlap(rect, t) for t in taken):
                continue
            if inside.x0 <= rect[0] and rect[2] <= inside.x1 and inside.y0 <= rect[1] and rect[3] <= inside.y1:
                choice = (dx, dy, rect)
                break
            choice = choice or (dx, dy, rect)  # free but outside the axes: kept unless a place inside turns up
        dx, dy, rect = choice or (dx, dy, rect)  # nowhere free within reach: the farthest place
        _move(ann, dx, dy, renderer)
        taken.append(rect)
        placed.append(ann)
    return placed


def _move(ann, dx: float, dy: float, renderer) -> tuple[float, float, float, float]:
    """Put the label at offset (dx, dy) points, its box on the far side from the point; returns the box."""
    ann.xyann = (dx, dy)
    ann.set_ha("left" if dx > 0 else "right" if dx < 0 else "center")
    ann.set_va("bottom" if dy > 0 else "top" if dy < 0 else "center")
    box = ann.get_window_extent(renderer)
    return box.x0, box.y0, box.x1, box.y1


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _err(lo, hi, centre):
    return [[max(0.0, centre - lo)], [max(0.0, hi - centre)]]


def _color(m: str) -> str:
    return PALETTE.get(m, "#17becf")


def _multi(data: dict) -> bool:
    return len(data["per_run"]) > 1


def _centre_and_err(data: dict, m: str, get_single, get_agg, scale=100.0):
    """(value, yerr): the per-run CI for one run, mean ± sd across runs for several."""
    if _multi(data):
        d = get_agg(data["aggregate"][m])
        if not d or d.get("mean") is None:
            return None, None
        sd = d.get("sd") or 0.0
        return scale * d["mean"], [[scale * sd], [scale * sd]]
    value, ci = get_single(next(iter(data["per_run"].values()))[m])
    if value is None:
        return None, None
    return scale * value, (_err(scale * ci[0], scale * ci[1], scale * value) if ci else None)


def gain_vs_forgetting(data: dict) -> bytes | None:
    fig = gain_vs_forgetting_figure(data)
    return None if fig is None else _png(fig)


def gain_vs_forgetting_figure(data: dict):
    """In-domain accuracy change (y) against each drift measure (x), per method and control, with
    95% CIs on both axes (pooled over seeds when several runs are compared)."""
    pooled = data.get("pooled") or {}
    axes = [(k, label) for k, label in FORGETTING_AXES if any(k in est for est in pooled.values())]
    if not axes:
        return None
    plt = _plt()
    fig, panels = plt.subplots(1, len(axes), figsize=(6.2 * len(axes), 4.6), squeeze=False)
    labels: list[list[tuple[float, float, str]]] = []
    for ax, (key, xlabel) in zip(panels[0], axes):
        labels.append([])
        for m, est in pooled.items():
            x = est.get(key)
            if x is None:
                continue
            y = est.get("in_domain/accuracy")
            yv, yerr = (0.0, None) if y is None else (100 * y["value"], _err(100 * y["ci95"][0], 100 * y["ci95"][1],
                                                                              100 * y["value"]))
            xerr = _err(x["ci95"][0], x["ci95"][1], x["value"])
            marker = "s" if m.startswith("control-") else "o"
            ax.errorbar([x["value"]], [yv], xerr=xerr, yerr=yerr, fmt=marker, ms=8, capsize=4, color=_color(m),
                        label=m + ("" if y is not None or m == "base" else " (no in-domain eval)"))
            labels[-1].append((x["value"], yv, m))
        ax.axvline(0, color="#bbbbbb", lw=1, ls="--")
        ax.axhline(0, color="#bbbbbb", lw=1, ls="--")
        ax.set_xlabel(xlabel + " (right = more forgetting)")
        ax.set_ylabel("in-domain accuracy change vs base (points)")
        ax.legend(fontsize=7, loc="best")
    seeds = max((e.get("seeds", 1) for est in pooled.values() for e in est.values()), default=1)
    fig.suptitle("Gain vs forgetting (95% CIs" + (f", {seeds} seeds pooled)" if seeds > 1 else ")"))
    fig.tight_layout()  # labels are placed on the final layout
    for ax, points in zip(panels[0], labels):
        place_labels(ax, points)
    return fig


def tradeoff(data: dict) -> bytes | None:
    fig = tradeoff_figure(data)
    return None if fig is None else _png(fig)


def tradeoff_figure(data: dict):
    """In-domain accuracy against the papers' average general-benchmark drop (None without general benchmarks)."""
    first = next(iter(data["per_run"].values()))
    methods = [m for m in data["methods"] if m in data["aggregate"]]
    if not (data["benchmarks"] and any(r.get("general") for r in first.values())):
        return None
    fig, ax = _plt().subplots(figsize=(6.5, 4.5))
    points = []
    for m in methods:
        y, yerr = _centre_and_err(data, m, lambda r: (r["in_domain"]["accuracy"], r["in_domain"]["ci95"]),
                                  lambda a: a["in_domain_accuracy"])
        if m == "base":
            x, xerr = 0.0, None
        else:
            x, xerr = _centre_and_err(data, m, lambda r: (r.get("general", {}).get("avg_drop_pts"),
                                                          r.get("general", {}).get("avg_drop_ci95_pts")),
                                      lambda a: a.get("avg_drop_pts"), scale=1.0)
        if x is None:
            continue
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="o", ms=8, capsize=4, color=_color(m), label=m)
        points.append((x, y, m))
    ax.axvline(0, color="#bbbbbb", lw=1, ls="--")
    ax.set_xlabel("average general-benchmark drop vs base (points; right = more forgetting)")
    ax.set_ylabel("in-domain accuracy (%)")
    ax.set_title("In-domain accuracy vs forgetting" + (" (mean ± sd over runs)" if _multi(data) else " (95% CIs)"))
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    place_labels(ax, points)
    return fig


def deltas(data: dict) -> bytes | None:
    """Per-benchmark accuracy change vs base, one bar per method."""
    import numpy as np
    first = next(iter(data["per_run"].values()))
    methods = [m for m in data["methods"] if m in data["aggregate"]]
    tuned = [m for m in methods if m != "base"]
    benches = [t for t in data["benchmarks"] if t not in data["skipped_benchmarks"]]
    if not (benches and tuned and any(r.get("general") for r in first.values())):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.5, 1.3 * len(benches) * max(1, len(tuned)) / 1.5), 4.5))
    width = 0.8 / len(tuned)
    for k, m in enumerate(tuned):
        vals, errs_lo, errs_hi = [], [], []
        for t in benches:
            v, e = _centre_and_err(data, m, lambda r, t=t: (r["general"]["benchmarks"][t]["delta"],
                                                            r["general"]["benchmarks"][t]["delta_ci95"]),
                                   lambda a, t=t: a.get("general", {}).get(t, {}).get("delta"))
            vals.append(v if v is not None else 0.0)
            errs_lo.append(e[0][0] if e else 0.0)
            errs_hi.append(e[1][0] if e else 0.0)
        xs = np.arange(len(benches)) + (k - (len(tuned) - 1) / 2) * width
        ax.bar(xs, vals, width, yerr=[errs_lo, errs_hi], capsize=3, label=m, color=_color(m))
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(benches)), benches, rotation=15)
    ax.set_ylabel("Δ vs base (points)")
    ax.set_title("General benchmarks: change vs base" + (" (mean ± sd)" if _multi(data) else " (95% paired CIs)"))
    ax.legend(fontsize=8)
    return _png(fig)


def _group_color(group: str, groups: list[str]) -> str:
    others = [g for g in groups if g not in GROUP_COLORS]
    return GROUP_COLORS.get(group) or MORE_GROUP_COLORS[others.index(group) % len(MORE_GROUP_COLORS)]


def target_mix(data: dict) -> bytes | None:
    """Training-target mix (own answer / paraphrase / gold) per method, averaged over runs."""
    found = [(m, r["target_mix"]) for block in data["per_run"].values() for m, r in block.items() if r.get("target_mix")]
    if not found:
        return None
    groups = source_groups(source for _, mix in found for source in mix)
    mixes: dict[str, list[list[int]]] = {}
    for m, mix in found:
        mixes.setdefault(m, []).append(group_counts(mix, groups))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    names = [m for m in data["methods"] if m in mixes]
    bottom = [0.0] * len(names)
    for i, (group, labels) in enumerate(groups.items()):
        vals = [sum(float(c[i]) for c in mixes[m]) / len(mixes[m]) for m in names]
        ax.bar(names, vals, bottom=bottom, label="/".join(labels), color=_group_color(group, list(groups)))
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("training rows" + (" (mean over runs)" if _multi(data) else ""))
    ax.set_title("Training-target mix per method")
    ax.legend(fontsize=8)
    return _png(fig)


def logprob_hist(data: dict) -> bytes | None:
    """Histogram of the base model's per-token log-probability of gold / paraphrase / own-answer targets."""
    pooled: dict[str, list[float]] = {}
    for groups in data["logprob_histogram"].values():
        for g, vals in groups.items():
            pooled.setdefault(g, []).extend(vals)
    if not any(pooled.values()):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    allv = [v for vals in pooled.values() for v in vals]
    lo, hi = min(allv), max(allv)
    bins = [lo + (hi - lo + 1e-9) * i / 25 for i in range(26)]
    for g, vals in pooled.items():  # in `target_nll.histogram_groups` order
        if vals:
            ax.hist(vals, bins=bins, alpha=0.55, color=_group_color(g, list(pooled)),
                    label=f"{g} (n={len(vals)}, mean {sum(vals) / len(vals):.2f})")
        else:
            ax.plot([], [], color=_group_color(g, list(pooled)), label=f"{g} (no rows)")
    ax.set_xlabel("base model's mean per-token log-probability of the target")
    ax.set_ylabel("targets")
    ax.set_title("How far each target type is from the base model")
    ax.legend(fontsize=8)
    return _png(fig)


def nll(data: dict) -> bytes | None:
    """Mean NLL of each method's training targets under the base model."""
    agg = data["aggregate"]
    methods = [m for m in data["methods"] if agg.get(m, {}).get("nll", {}).get("mean") is not None]
    if not methods:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for m in methods:
        v, e = _centre_and_err(data, m, lambda r: ((r.get("nll") or {}).get("nll"), (r.get("nll") or {}).get("nll_ci95")),
                               lambda a: a.get("nll"), scale=1.0)
        ax.bar([m], [v], yerr=e, capsize=4, color=_color(m))
        ax.annotate(f"{v:.3f}", (m, v), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
    ax.set_ylabel("mean NLL of training targets (nats/token)")
    ax.set_title("Distribution shift: base-model NLL of each method's targets")
    return _png(fig)


PLOTS = {"gain_vs_forgetting": gain_vs_forgetting, "tradeoff": tradeoff, "deltas": deltas,
         "target_mix": target_mix, "logprob_hist": logprob_hist, "nll": nll}


def make_plots(data: dict) -> dict[str, bytes]:
    """{name: PNG} for every plot that has data."""
    return {name: png for name, fn in PLOTS.items() if (png := fn(data)) is not None}
