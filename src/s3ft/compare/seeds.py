"""Several run directories (seeds) of the same task and model, pooled."""

from __future__ import annotations

from ..stats import mean_sd


def aggregate_seeds(per_run: dict[str, dict], methods: list[str], tasks: list[str]) -> dict:
    """Mean ± sd over run directories (seeds) of every headline number, per method."""
    out = {}
    for m in methods:
        rows = [r[m] for r in per_run.values() if m in r]
        if not rows:
            continue
        agg = {"n_runs": len(rows),
               "in_domain_accuracy": mean_sd([r["in_domain"]["accuracy"] for r in rows]),
               "in_domain_delta": mean_sd([r["in_domain"].get("delta") for r in rows])}
        if any("general" in r for r in rows):
            agg["general"] = {t: {"value": mean_sd([r["general"]["benchmarks"][t]["value"] for r in rows
                                                    if "general" in r]),
                                  "delta": mean_sd([r["general"]["benchmarks"][t]["delta"] for r in rows
                                                    if "general" in r])} for t in tasks}
            agg["avg_drop_pts"] = mean_sd([r["general"]["avg_drop_pts"] for r in rows if "general" in r])
        if any(r.get("nll") for r in rows):
            agg["nll"] = mean_sd([(r.get("nll") or {}).get("nll") for r in rows])
        out[m] = agg
    return out


