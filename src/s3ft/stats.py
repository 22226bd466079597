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


def ratio(num, den) -> float:
    """sum(num) / sum(den): a token-weighted mean when den holds token counts, a plain mean when 1s."""
    import numpy as np
    return float(np.sum(num) / np.sum(den))


def hierarchical_bootstrap(groups, iters: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Pooled ratio estimate over groups (seeds) with a 95% two-level bootstrap CI.

    `groups` is a list of (num, den) per seed: per-item numerators (e.g. tuned - base, summed over
    an item's tokens) and denominators (token counts, or 1 per item). The point estimate is the
    mean over seeds of each seed's sum(num) / sum(den). Each resample draws seeds with
    replacement, then items with replacement within every drawn seed, so the interval carries
    both the training-seed and the item-sampling variance. With one group it is the ordinary
    (ratio) bootstrap over items.
    """
    import numpy as np
    arrays = []
    for num, den in groups:
        num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
        if num.shape != den.shape or num.ndim != 1 or num.size == 0:
            raise ValueError(f"each group needs equal, non-empty 1-d num/den, got {num.shape} and {den.shape}")
        arrays.append((num, den))
    if not arrays:
        raise ValueError("hierarchical bootstrap needs at least one group")
    point = float(np.mean([n.sum() / d.sum() for n, d in arrays]))
    rng = np.random.default_rng(seed)
    per_group = np.empty((len(arrays), iters))
    for g, (num, den) in enumerate(arrays):  # every group's item-level resamples, drawn once
        for start in range(0, iters, 250):
            m = min(250, iters - start)
            idx = rng.integers(0, num.size, size=(m, num.size))
            per_group[g, start:start + m] = num[idx].sum(1) / den[idx].sum(1)
    if len(arrays) == 1:
        stats = per_group[0]
    else:
        picks = rng.integers(0, len(arrays), size=(iters, len(arrays)))
        # a seed drawn twice in one resample takes two different (iid) item resamples
        cols = (np.arange(iters)[:, None] + 7919 * np.arange(len(arrays))[None, :]) % iters
        stats = per_group[picks, cols].mean(1)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return point, float(lo), float(hi)
