"""Typed records shared by the compare modules and written into compare.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..stats import hierarchical_bootstrap

Paired = tuple[list[float], list[float]]
"""Per-item (numerators, denominators) of one measurement of a model vs base in one run: the
measurement is sum(num) / sum(den) (den = token counts for per-token means, 1s for per-item means)."""


@dataclass
class Estimate:
    """A measurement with its 95% CI, and what it was computed over."""

    value: float
    ci95: tuple[float, float]
    items: int
    """Items in each run (the largest, if runs differ)."""
    seeds: int = 1
    """Runs pooled: > 1 means the CI resampled seeds, then items within each seed."""

    @classmethod
    def pooled(cls, groups: list[Paired], iters: int = 2000, seed: int = 0) -> "Estimate":
        value, lo, hi = hierarchical_bootstrap(groups, iters, seed)
        return cls(value, (lo, hi), max(len(n) for n, _ in groups), len(groups))

    @property
    def excludes_zero(self) -> bool:
        return self.ci95[0] > 0 or self.ci95[1] < 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        return d
