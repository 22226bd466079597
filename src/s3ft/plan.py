"""What a run does, in order, and what each stage asks the model: one plan that `s3ft run` executes
(`pipeline`) and `s3ft run --dry-run` prices (`cost`), so the two cannot drift apart.

    data -> generate -> judge -> paraphrase -> select -> train -> evaluate -> forgetting -> report

Every prompt a run sends is built here, by one function per kind: the base model's answers to the
training rows (and, for best-of-k, its extra samples where an answer was rejected), its paraphrases of gold answers (which rows depends on the answers' verdicts, so the
plan gives them for any verdicts, or for none: every row that may need one), each evaluated model's
answers to the test rows, and the forgetting meter's instruction probe. Training rows with gold
targets (sft's selection, the planted control's rows) are built here too; the other methods' rows
come from selection, which needs the verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Mapping

from .artifacts import fingerprint
from .backends import GenRequest
from .forgetting import drift, meter
from .layout import RunLayout
from .config import RunConfig
from .strategies import needs_paraphrase, strategies_of
from .tasks import Example, Task

STAGES = ["data", "generate", "judge", "samples", "paraphrase", "select", "train", "evaluate", "forgetting", "report"]


REL = RunLayout()  # the stages name their files relative to the run directory


@dataclass
class GenStage:
    """One generation stage: the artifact its rows go to, the requests, and how far answers may run."""

    artifact: str
    """Path in the run directory, e.g. `answers.jsonl`; its stem names the stage's cost (`generate:answers`)."""
    requests: list[GenRequest]
    """In the order the stage writes its rows."""
    max_new_tokens: int
    """Longest completion, in tokens."""
    task_stops: bool = True
    """Whether the task's stop strings and `answer_complete` end a completion (the probe runs to end of turn)."""
    sampling: dict | None = None
    """Where the stage samples unlike `generation` (best-of-k own answers): its temperature, top_p and seed,
    part of its artifact's fingerprint. None: `generation`'s decoding."""

    @property
    def sampling_backend_args(self) -> dict:
        """Keyword arguments for `backends.Sampling` from `sampling`."""
        return {"temperature": self.sampling["temperature"], "top_p": self.sampling["top_p"]}

    @property
    def name(self) -> str:
        """The stage's name in run costs and estimates: `generate:<artifact stem>`."""
        return "generate:" + PurePosixPath(self.artifact).stem

    @property
    def key(self) -> str:
        """What the generations depend on from the requests: every id, message and prefill."""
        return requests_key(self.requests)


@dataclass
class Plan:
    """The stages a run goes through, up to where it stops, with what each asks of the model."""

    stages: list[str]
    """The stages to run, in order (names from `STAGES`): `forgetting` only where the meter runs, and
    `report` wherever evaluation does."""
    task: Task
    """The task whose prompts every request is built from."""
    train: list[Example]
    """The training rows (the data stage's `train` split)."""
    test: list[Example]
    """The test rows (the data stage's `test` split)."""
    methods: list[str]
    """The methods to select targets for and train an adapter each, in the config's order."""
    answers: GenStage
    """The base model's answer to every training row."""
    evals: dict[str, GenStage]
    """Per evaluated model (`base` where `eval.base`, then each method): its answers to every test row."""
    probe: GenStage | None
    """The base model's responses to the forgetting meter's instruction probe; None where the meter does not run."""
    probe_prompts: list[dict] = field(default_factory=list)
    """The probe's rows ({id, prompt}), in `probe`'s order."""
    controls: dict[str, list[dict] | None] = field(default_factory=dict)
    """The forgetting meter's controls by adapter label: the rows a trained control trains on, None for the
    untrained one (see `pipeline.stage_controls`); empty where the meter does not run."""
    max_new_tokens: int = 0
    """`generation.max_new_tokens`: the answers' and paraphrases' limit."""
    self_samples: int = 1
    """Own answers per row (`generation.self_samples`) where a method uses extra samples, else 1."""
    sampling: dict | None = None
    """The extra samples' decoding: temperature, top_p and seed (None where there are none)."""

    def self_samples_stage(self, answer_correct: Mapping[str, bool] | None = None) -> GenStage | None:
        """Best-of-k: `self_samples - 1` sampled answers to every row whose greedy answer was rejected, with
        ids `<row id>#<j>`; without verdicts (a dry run), to every row. None where no method uses them."""
        if self.self_samples == 1:
            return None
        rows = [e for e in self.train if answer_correct is None or not answer_correct[e.id]]
        requests = [GenRequest(f"{r.id}#{j}", r.messages) for r in answer_requests(self.task, rows)
                    for j in range(1, self.self_samples)]
        return GenStage(str(REL.self_samples), requests, self.max_new_tokens, sampling=self.sampling)

    def paraphrase_rows(self, answer_correct: Mapping[str, bool] | None = None) -> list[Example]:
        """The training rows a method needs a paraphrase of, given each row's answer verdict (by id).
        Without verdicts (a dry run): every row that may need one, i.e. as if every answer were wrong."""
        return [e for e in self.train
                if needs_paraphrase(self.methods, answer_correct[e.id] if answer_correct is not None else False)]

    def paraphrases(self, answer_correct: Mapping[str, bool] | None = None) -> GenStage:
        """The paraphrase stage for `paraphrase_rows(answer_correct)`."""
        return GenStage(str(REL.paraphrases), paraphrase_requests(self.task, self.paraphrase_rows(answer_correct)),
                        self.max_new_tokens)

    def gold_rows(self, reason: str = "gold") -> list[dict]:
        """Every training row with its gold answer as the target (what `sft` selects)."""
        return gold_rows(self.task, self.train, reason)


def answer_requests(task: Task, rows: list[Example]) -> list[GenRequest]:
    """The task's prompt for each row: the base model's answers, and every evaluated model's."""
    return [GenRequest(e.id, task.messages(e)) for e in rows]


def paraphrase_requests(task: Task, rows: list[Example]) -> list[GenRequest]:
    """The task's request to restate each row's gold answer, the assistant turn opened with its prefill."""
    return [GenRequest(e.id, task.paraphrase_messages(e), task.paraphrase_prefill) for e in rows]


def probe_requests(prompts: list[dict]) -> list[GenRequest]:
    """The forgetting meter's instructions, as the base model is asked them."""
    return [GenRequest(f"ifeval/{r['id']}", meter.probe_messages(r["prompt"])) for r in prompts]


def gold_rows(task: Task, rows: list[Example], reason: str = "gold") -> list[dict]:
    """Training rows ({id, messages, target, source, reason}) with the gold answers as targets."""
    return [{"id": e.id, "messages": task.messages(e), "target": e.gold, "source": "gold", "reason": reason}
            for e in rows]


def eval_stage(cfg: RunConfig, task: Task, label: str, test: list[Example]) -> GenStage:
    """The evaluated model `label`'s answers to the test rows."""
    return GenStage(str(REL.eval(label)), answer_requests(task, test),
                    cfg.eval.max_new_tokens or cfg.generation.max_new_tokens)


def requests_key(requests: list[GenRequest]) -> str:
    """The fingerprint of a generation stage's requests (part of its artifact's inputs)."""
    return fingerprint([[r.id, r.messages, r.prefill] for r in requests])


def stages_until(cfg: RunConfig, until: str = "report") -> list[str]:
    """The stages a run stopping after `until` goes through. Evaluation always ends with the report; best-of-k
    samples and the forgetting meter run where the config asks for them (`generation.self_samples` with a
    strategy that uses them; `forgetting.enabled`), or where they are asked for (`s3ft samples`, `s3ft forgetting`)."""
    last = STAGES.index(until)
    evaluate = STAGES.index("evaluate")
    out = [s for s in STAGES[:min(last, evaluate) + 1] if s != "samples" or until == "samples" or _samples_k(cfg) > 1]
    if last >= evaluate:
        if last >= STAGES.index("forgetting") and (cfg.forgetting.enabled or until == "forgetting"):
            out.append("forgetting")
        out.append("report")
    return out


def _samples_k(cfg: RunConfig) -> int:
    """Answers per row, greedy included, where a strategy of the run uses best-of-k samples; else 1."""
    uses = any(s.needs.uses_own_samples for s in strategies_of(cfg.methods))
    return cfg.generation.self_samples if uses else 1


def plan(cfg: RunConfig, task: Task, train: list[Example], test: list[Example], until: str = "report") -> Plan:
    """The run of `cfg` on these rows, stopping after `until` (a name from `STAGES`)."""
    stages = stages_until(cfg, until)
    gen = cfg.generation
    labels = (["base"] if cfg.eval.base else []) + list(cfg.methods)
    evals = {label: eval_stage(cfg, task, label, test) for label in labels}
    probe, prompts, controls = None, [], {}
    if "forgetting" in stages:
        fc = cfg.forgetting
        prompts = drift.load_prompt_probe(fc.prompts_file, fc.prompts_limit)
        probe = GenStage(str(REL.probe_responses), probe_requests(prompts), fc.max_new_tokens,
                         task_stops=False)
        if "untrained" in fc.controls:
            controls[meter.CONTROLS["untrained"]] = None
        if "planted" in fc.controls:
            controls[meter.CONTROLS["planted"]] = gold_rows(task, train, "control")
    k = _samples_k(cfg)
    sampling = {"temperature": gen.self_sample_temperature, "top_p": gen.self_sample_top_p,
                "seed": gen.seed} if k > 1 else None
    return Plan(stages, task, train, test, list(cfg.methods),
                GenStage(str(REL.answers), answer_requests(task, train), gen.max_new_tokens),
                evals, probe, prompts, controls, gen.max_new_tokens, k, sampling)
