"""Contrasts between methods: method A − method B per item, pooled over seeds, with a verdict.

Every measurement `compare` keeps is a per-item change against the base model (``records.Paired``).
Two methods scored on the same items give a per-item difference A − B of those changes: the
in-domain verdicts (+1 where only A is right, −1 where only B is), the drift sums per probe item
(token counts unchanged), the probe's per-item likelihoods. The estimate is sum(A − B) / sum(den)
with the same hierarchical bootstrap as every other measurement (runs, i.e. seeds, resampled, then
items within each run), so a contrast's CI carries both the item and the seed variance.

The verdict answers the project's question for A against B (by default B = SFT): did A gain
in-domain without forgetting more than B?

* **supported**: A's in-domain CI lies above B's (lower bound > 0) and no forgetting measure shows
  A forgetting more than B (no CI wholly on the forgetting side);
* **contradicted**: A is worse in-domain (upper bound < 0), or some measure shows A forgetting more;
* **unresolved**: otherwise: the in-domain CI covers 0 and nothing shows more forgetting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import S3FTError
from ..forgetting.records import Estimate, Paired

REFERENCE = "sft"
IN_DOMAIN = "in_domain/accuracy"
Status = Literal["supported", "contradicted", "unresolved"]
# measure keys by the side that means forgetting: drift grows with forgetting; accuracy and
# likelihood measures (probe/, general/) shrink with it
HIGHER_IS_FORGETTING = ("drift/",)
LOWER_IS_FORGETTING = ("probe/", "general/")


@dataclass
class Verdict:
    """The answer to "did A gain in-domain without forgetting more than B?", read off the CIs."""

    status: Status
    sentence: str
    more_forgetting: list[str] = field(default_factory=list)
    """Measures whose CI shows A forgetting more than B."""
    less_forgetting: list[str] = field(default_factory=list)
    """Measures whose CI shows A forgetting less than B."""


@dataclass
class Contrast:
    """A − B for every measurement both have, pooled over the runs (seeds) that have both."""

    a: str
    b: str
    measures: dict[str, Estimate]
    verdict: Verdict

    @property
    def name(self) -> str:
        return f"{self.a}-{self.b}"

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "measures": {k: e.to_dict() for k, e in self.measures.items()},
                "seeds": max((e.seeds for e in self.measures.values()), default=0),
                "verdict": {"status": self.verdict.status, "sentence": self.verdict.sentence,
                            "more_forgetting": self.verdict.more_forgetting,
                            "less_forgetting": self.verdict.less_forgetting}}


def forgetting_side(key: str) -> int:
    """+1 if a larger value means more forgetting, −1 if a smaller one does, 0 for in-domain measures."""
    if key.startswith(HIGHER_IS_FORGETTING):
        return 1
    if key.startswith(LOWER_IS_FORGETTING):
        return -1
    return 0


def parse_contrast(spec: str, models: list[str]) -> tuple[str, str]:
    """"s3ft-ssr" -> ("s3ft", "ssr"); names may hold '-' themselves (control-planted), so every split is tried."""
    splits = [(spec[:i], spec[i + 1:]) for i, c in enumerate(spec) if c == "-"]
    found = [(a, b) for a, b in splits if a in models and b in models and a != b]
    if len(found) != 1:
        raise S3FTError(f"--contrast {spec!r}: expected A-B with A and B two of the compared models "
                        f"({', '.join(models)})")
    return found[0]


def default_pairs(methods: list[str]) -> list[tuple[str, str]]:
    """Every trained method against SFT (none if SFT was not run)."""
    if REFERENCE not in methods:
        return []
    return [(m, REFERENCE) for m in methods if m not in ("base", REFERENCE)]


def difference(pa: Paired, pb: Paired, where: str) -> Paired:
    """Per-item A − B of two changes against base measured on the same items."""
    (na, da), (nb, db) = pa, pb
    if len(na) != len(nb) or list(da) != list(db):
        raise S3FTError(f"{where}: the two models were not measured on the same items "
                        f"({len(na)} vs {len(nb)} items, or other token counts); rerun the stage that wrote them")
    return [x - y for x, y in zip(na, nb)], list(da)


def _side(pairs: dict[str, Paired], label: str, key: str, other: dict[str, Paired]) -> Paired | None:
    """A model's per-item change vs base; the base model itself reads 0 on every item."""
    if key in pairs:
        return pairs[key]
    if label == "base" and key in other:
        return [0.0] * len(other[key][0]), list(other[key][1])
    return None


def contrast(pairs: dict[str, dict[str, dict[str, Paired]]], a: str, b: str, iters: int = 2000,
             seed: int = 0) -> Contrast:
    """A − B from `pairs` (run label -> model -> measure key -> Paired vs base)."""
    groups: dict[str, list[Paired]] = {}
    for run, by_model in pairs.items():
        pa, pb = by_model.get(a, {}), by_model.get(b, {})
        for key in sorted(set(pa) | set(pb)):
            sa, sb = _side(pa, a, key, pb), _side(pb, b, key, pa)
            if sa is not None and sb is not None:
                groups.setdefault(key, []).append(difference(sa, sb, f"{run}: {key} of {a} and {b}"))
    measures = {k: Estimate.pooled(g, iters, seed) for k, g in groups.items()}
    return Contrast(a, b, measures, verdict(a, b, measures))


def verdict(a: str, b: str, measures: dict[str, Estimate]) -> Verdict:
    """supported / contradicted / unresolved, by the CIs (see the module docstring)."""
    more = [k for k, e in measures.items() if forgetting_side(k) and e.excludes_zero
            and (e.value > 0) == (forgetting_side(k) > 0)]
    less = [k for k, e in measures.items() if forgetting_side(k) and e.excludes_zero and k not in more]
    ind = measures.get(IN_DOMAIN)
    if ind is None:
        gain, status = "no in-domain evaluation of both", "unresolved"
    else:
        side = "above 0" if ind.ci95[0] > 0 else "below 0" if ind.ci95[1] < 0 else "covering 0"
        status = {"above 0": "supported", "below 0": "contradicted"}.get(side, "unresolved")
        gain = f"in-domain {100 * ind.value:+.1f} pts, CI {side}"
    names = lambda keys: ", ".join(measure_name(k) for k in keys)  # noqa: E731
    if more:
        forget, status = f"{a} forgets more than {b} on {names(more)}", "contradicted"
    elif measures.keys() - {IN_DOMAIN}:
        forget = f"no measure shows {a} forgetting more than {b}"
        forget += f"; it forgets less on {names(less)}" if less else ""
    else:
        forget = "forgetting not measured"
        status = "contradicted" if status == "contradicted" else "unresolved"
    return Verdict(status, f"{a} vs {b}: {status} ({gain}; {forget}).", more, less)


def contrasts_block(pairs: dict[str, dict[str, dict[str, Paired]]], models: list[str], asked: list[str],
                    iters: int = 2000, seed: int = 0) -> dict[str, dict]:
    """compare.json's "contrasts": {"A-B": Contrast.to_dict()} for every method vs SFT and each asked pair."""
    wanted = default_pairs(models) + [parse_contrast(s, models) for s in asked]
    out = {}
    for a, b in dict.fromkeys(wanted):
        c = contrast(pairs, a, b, iters, seed)
        out[c.name] = c.to_dict()
    return out


# ----------------------------------------------------------------------------- one line per contrast

SHORT = {"in_domain/accuracy": "in-domain", "drift/response_nll_delta": "response NLL",
         "drift/response_kl": "response KL", "drift/text_nll_delta": "text NLL"}
ORDER = ("in_domain/", "drift/", "probe/", "general/")


def _is_points(key: str) -> bool:
    return key.endswith("/accuracy") or key.endswith("_acc")


def format_estimate(e: dict, key: str) -> str:
    """"+25.0 pts [+10.0, +40.0]" for accuracies, "-0.012 [-0.020, -0.004]" (nats) otherwise."""
    lo, hi = e["ci95"]
    if _is_points(key):
        return f"{100 * e['value']:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    return f"{e['value']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def measure_name(key: str) -> str:
    return SHORT.get(key) or key.split("/", 1)[1].replace("/", " ")


def ordered_keys(measures: dict) -> list[str]:
    return sorted(measures, key=lambda k: (next((i for i, p in enumerate(ORDER) if k.startswith(p)), 9),
                                           k != "drift/response_nll_delta", k))


def headline_line(c: dict) -> str:
    """"s3ft − sft (2 seeds pooled): in-domain +25.0 pts [...]; response NLL ...": every measure, paired CIs."""
    seeds = f" ({c['seeds']} seeds pooled)" if c.get("seeds", 1) > 1 else ""
    parts = [f"{measure_name(k)} {format_estimate(c['measures'][k], k)}" for k in ordered_keys(c["measures"])]
    return f"{c['a']} − {c['b']}{seeds}: " + ("; ".join(parts) if parts else "no shared measurements")


def headline(contrasts: dict[str, dict]) -> list[tuple[str, str]]:
    """[(line with every Δ and CI, verdict sentence)] per contrast, in compare.json's order."""
    return [(headline_line(c), c["verdict"]["sentence"]) for c in contrasts.values()]
