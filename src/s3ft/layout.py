"""The run directory: every file `s3ft run` writes, named once, and whether it depends on `train.seed`.

`RunLayout(dir)` gives each file's path (`RunLayout(d).train("s3ft")` -> `d/train_s3ft.jsonl`);
`RunLayout()` gives the same names relative to the run directory, as the plan's stages use them.
`ARTIFACTS` declares each kind of file once: a sweep copies the seed-independent ones from one seed's
directory into the next instead of recomputing them (`seed_independent()`). A StageArtifact's
`.meta.json` sits beside its `.jsonl` and shares its declaration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


TRAIN_META = "train_meta.json"
"""Beside an adapter's `model/` folder: the fingerprint and stats of its training."""


@dataclass(frozen=True)
class Artifact:
    """One kind of run-directory file."""

    pattern: str
    """Glob under the run directory (with the artifact's `.meta.json` where it has one)."""
    seed_independent: bool
    """Unchanged by `train.seed` (greedy decoding of the base model; sampling depends on `generation.seed`,
    which a sweep keeps), so a sweep reuses it across seeds."""
    doc: str


ARTIFACTS = [
    Artifact("config.json", False, "the resolved config"),
    Artifact("data/*.jsonl", True, "the task's train and test rows"),
    Artifact("data/*.meta.json", True, "their fingerprints"),
    Artifact("data/split.json", False, "where the rows came from"),
    Artifact("answers*", True, "the base model's answers to the training queries, and their verdicts"),
    Artifact("self_samples*", True, "best-of-k sampled answers, and their verdicts"),
    Artifact("paraphrases*", True, "the base model's paraphrases of gold answers, and their verdicts"),
    Artifact("judge_cache.jsonl", True, "the LLM judge's cached calls"),
    Artifact("train_*.jsonl", False, "each method's selected rows (train_<method>.jsonl)"),
    Artifact("train_*.stats.json", False, "their statistics"),
    Artifact("nll_*", False, "`s3ft compare`'s cache of target NLLs under the base model"),
    Artifact("adapters/*", False, "each method's (and control's) adapter and train_meta.json"),
    Artifact("eval/base*", True, "the base model's test answers, verdicts and metrics"),
    Artifact("eval/*", False, "each method's test answers, verdicts and metrics"),
    Artifact("forgetting/probe_responses*", True, "the base model's responses to the instruction probe"),
    Artifact("forgetting/drift_base*", True, "the base model's drift rows (the null control)"),
    Artifact("forgetting/*", False, "the meter's drift rows per model, lm-eval cache and summary"),
    Artifact("summary.json", False, "the run's summary"),
    Artifact("report.md", False, "the run's report"),
]


def seed_independent() -> list[str]:
    """Globs of the files a sweep reuses across training seeds."""
    return [a.pattern for a in ARTIFACTS if a.seed_independent]


@dataclass(frozen=True)
class RunLayout:
    """Paths of a run directory's files (relative ones for `RunLayout()`)."""

    root: Path = Path()

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    def data(self, split: str) -> Path:
        return self.root / "data" / f"{split}.jsonl"

    @property
    def split_record(self) -> Path:
        return self.root / "data" / "split.json"

    @property
    def answers(self) -> Path:
        return self.root / "answers.jsonl"

    @property
    def self_samples(self) -> Path:
        return self.root / "self_samples.jsonl"

    @property
    def self_samples_nll(self) -> Path:
        """The base model's NLL of accepted samples, the tie-break between them."""
        return self.root / "self_samples_nll.jsonl"

    @property
    def paraphrases(self) -> Path:
        return self.root / "paraphrases.jsonl"

    def verdicts(self, generations: Path | str) -> Path:
        """The verdicts of a generation artifact: `answers.jsonl` -> `answers_verdicts.jsonl`."""
        g = Path(generations)
        return g.with_name(g.stem + "_verdicts.jsonl")

    @property
    def judge_cache(self) -> Path:
        return self.root / "judge_cache.jsonl"

    def train(self, method: str) -> Path:
        return self.root / f"train_{method}.jsonl"

    def train_stats(self, method: str) -> Path:
        return self.root / f"train_{method}.stats.json"

    def nll(self, method: str) -> Path:
        return self.root / f"nll_{method}.jsonl"

    def adapter_dir(self, label: str) -> Path:
        return self.root / "adapters" / label

    def adapter(self, label: str) -> Path:
        return self.adapter_dir(label) / "model"

    def train_meta(self, label: str) -> Path:
        return self.adapter_dir(label) / TRAIN_META

    def eval(self, label: str) -> Path:
        return self.root / "eval" / f"{label}.jsonl"

    def eval_metrics(self, label: str) -> Path:
        return self.root / "eval" / f"{label}.metrics.json"

    @property
    def forgetting(self) -> Path:
        return self.root / "forgetting"

    @property
    def probe_responses(self) -> Path:
        return self.forgetting / "probe_responses.jsonl"

    def drift(self, label: str) -> Path:
        return self.forgetting / f"drift_{label}.jsonl"

    @property
    def forgetting_summary(self) -> Path:
        return self.forgetting / "summary.json"

    @property
    def probe_lm_eval(self) -> Path:
        return self.forgetting / "lm_eval"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"
