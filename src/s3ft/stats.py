"""Small statistics helpers: binomial CIs, paired bootstrap differences, mean ± sd over seeds."""

from __future__ import annotations

import math


def wilson_ci(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion k/n (well-behaved at 0, n and small n)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_bootstrap_diff(a, b, iters: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over paired items, with a 95% percentile bootstrap CI.

    `a[i]` and `b[i]` are two models' scores on the same item i (0/1 correctness or any
    per-item score). Items are resampled with replacement, keeping each pair together, so
    the interval reflects which items happened to be drawn. Returns (mean_diff, lo, hi).
    """
    return stratified_paired_bootstrap([(a, b)], iters=iters, seed=seed)


def stratified_paired_bootstrap(pairs, iters: int = 2000, seed: int = 0,
                                chunk: int = 250) -> tuple[float, float, float]:
    """Unweighted mean over strata of mean(a - b), with a 95% bootstrap CI.

    `pairs` is a list of (a, b) per stratum (e.g. one per benchmark); items are resampled
    within each stratum independently. One stratum is `paired_bootstrap_diff`. This is the
    CI of a "mean over benchmarks of the per-benchmark difference" (the papers' average drop).
    """
    import numpy as np
    diffs = []
    for a, b in pairs:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if a.shape != b.shape or a.ndim != 1:
            raise ValueError(f"paired scores need equal 1-d shapes, got {a.shape} and {b.shape}")
        if a.size == 0:
            raise ValueError("paired bootstrap of an empty sample")
        diffs.append(a - b)
    if not diffs:
        raise ValueError("paired bootstrap needs at least one stratum")
    point = float(np.mean([d.mean() for d in diffs]))
    rng = np.random.default_rng(seed)
    stats = np.zeros(iters)
    for start in range(0, iters, chunk):  # bounded memory for big benchmarks (MMLU: 14k items)
        m = min(chunk, iters - start)
        for d in diffs:
            idx = rng.integers(0, d.size, size=(m, d.size))
            stats[start:start + m] += d[idx].mean(axis=1)
    stats /= len(diffs)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return point, float(lo), float(hi)


def mean_sd(xs) -> dict:
    """{"mean", "sd", "n"} over seeds; sd is the sample standard deviation (None for one value)."""
    vals = [float(x) for x in xs if x is not None]
    if not vals:
        return {"mean": None, "sd": None, "n": 0}
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return {"mean": mean, "sd": sd, "n": len(vals)}
