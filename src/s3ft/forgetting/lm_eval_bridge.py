"""General-capability benchmarks (forgetting check) through lm-evaluation-harness.

Runs `mmlu`, `truthfulqa_mc1`, `truthfulqa_mc2`, `hellaswag`, `winogrande`, `arc_challenge`,
`arc_easy` and `gsm8k` with ``lm_eval.simple_evaluate`` and lm-eval's own HF model class
(``HFLM``, PEFT adapters through its ``peft=`` argument), so prompts and metrics are exactly
lm-eval's.

Data source
    Online (``data_dir=None``) the tasks load from the Hugging Face Hub exactly as lm-eval does.
    Offline (``data_dir`` given) every task reads local JSONL files that use the hub's field
    names. For each task we write a small YAML into ``cache_dir/lm_eval_tasks/`` that
    ``include:``-s lm-eval's own YAML for the task and overrides *only* the data source
    (``dataset_path: json``, ``dataset_name: null``, ``dataset_kwargs.data_files`` and the
    split names of files that are not there); prompts, few-shot rules, filters and metrics are
    inherited unchanged. A ``TaskManager(include_path=..., include_defaults=False)`` loads them.
    MMLU is 57 lm-eval subtasks, one per subject (each a hub config); the local ``mmlu/test.jsonl``
    and ``mmlu/dev.jsonl`` are split by their ``subject`` field into one file per subject under
    ``cache_dir/lm_eval_data/``. A task whose required file is missing (HellaSwag ships no
    local copy) is reported as skipped with the missing path, not a crash.

Subsampling
    ``limit=N`` evaluates N examples per task chosen by a seeded random permutation (not the first
    N), passed to lm-eval as ``samples={subtask: [doc indices]}``. The same seed gives the same items
    for every model, and a larger N extends a smaller one's sample. For MMLU, N counts examples over
    all subjects together (drawn from the pooled 14k questions), not N per subject.

Caching
    One JSON per (model, adapter, task, settings) under ``cache_dir/general_eval/``; a repeat call
    reads it and does not load the model. Per-item scores (``items``: ``doc_id``, ``score``) are
    stored for paired bootstrap comparisons between models.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..artifacts import fingerprint, write_json
from ..errors import S3FTError
from ..models import AdapterMismatchError, check_adapter

SCHEMA_VERSION = 2  # 2: items keep the per-choice log-likelihoods and the right choices

# What lm-eval calls its default few-shot / global seeds; passed explicitly so they are recorded.
LM_EVAL_SEEDS = {"random_seed": 0, "numpy_random_seed": 1234, "torch_random_seed": 1234,
                 "fewshot_random_seed": 1234}


class MissingBenchmarkData(S3FTError):
    """A benchmark's local data file is not in the data directory. The message names the file."""


def _labels_true(field: str) -> Callable[[dict], list[int]]:
    return lambda doc: [i for i, label in enumerate(doc[field]["labels"]) if label == 1]


@dataclass(frozen=True)
class _TaskSpec:
    lm_eval_dir: str  # folder under lm_eval/tasks/ that holds the task's YAML(s)
    metric: str  # the metric reported as `value` and stored per item as `score`
    filter: str  # lm-eval filter whose output is scored ("none" for log-likelihood tasks)
    files: dict[str, str]  # hub split name -> file under data_dir
    required: tuple[str, ...]  # splits that must exist locally; the others are optional
    leaves: str | None = None  # glob for multi-subtask benchmarks (mmlu)
    gold: Callable[[dict], list[int]] | None = None  # multiple choice: indices of the right choices in a doc
    report_metrics: tuple[str, ...] = ()  # further per-item metrics reported with CIs (ifeval)


TASKS: dict[str, _TaskSpec] = {
    "mmlu": _TaskSpec("mmlu/default", "acc", "none",
                      {"test": "mmlu/test.jsonl", "dev": "mmlu/dev.jsonl"}, ("test",), leaves="mmlu_*",
                      gold=lambda d: [int(d["answer"])]),
    "truthfulqa_mc1": _TaskSpec("truthfulqa", "acc", "none",
                                {"validation": "truthfulqa/multiple_choice.jsonl"}, ("validation",),
                                gold=_labels_true("mc1_targets")),
    "truthfulqa_mc2": _TaskSpec("truthfulqa", "acc", "none",
                                {"validation": "truthfulqa/multiple_choice.jsonl"}, ("validation",),
                                gold=_labels_true("mc2_targets")),
    "hellaswag": _TaskSpec("hellaswag", "acc_norm", "none",
                           {"train": "hellaswag/train.jsonl", "validation": "hellaswag/validation.jsonl"},
                           ("validation",), gold=lambda d: [int(d["label"])]),
    "winogrande": _TaskSpec("winogrande", "acc", "none",
                            {"train": "winogrande/train.jsonl", "validation": "winogrande/validation.jsonl"},
                            ("validation",), gold=lambda d: [int(d["answer"]) - 1]),
    "arc_challenge": _TaskSpec("arc", "acc_norm", "none",
                               {s: f"ai2_arc/ARC-Challenge/{s}.jsonl" for s in ("train", "validation", "test")},
                               ("test",), gold=lambda d: [d["choices"]["label"].index(d["answerKey"])]),
    "arc_easy": _TaskSpec("arc", "acc_norm", "none",
                          {s: f"ai2_arc/ARC-Easy/{s}.jsonl" for s in ("train", "validation", "test")},
                          ("test",), gold=lambda d: [d["choices"]["label"].index(d["answerKey"])]),
    "gsm8k": _TaskSpec("gsm8k", "exact_match", "strict-match",
                       {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"}, ("test",)),
    "ifeval": _TaskSpec("ifeval", "prompt_level_strict_acc", "none", {"train": "ifeval/train.jsonl"}, ("train",),
                        report_metrics=("prompt_level_strict_acc,none", "inst_level_strict_acc,none",
                                        "prompt_level_loose_acc,none", "inst_level_loose_acc,none")),
}

_SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


@dataclass
class GeneralEvalConfig:
    """Settings for a general-benchmark run. Use the same object for every model you compare.

    Parameters:
        tasks: Benchmarks to run, any of `mmlu`, `truthfulqa_mc1`, `truthfulqa_mc2`, `hellaswag`,
            `winogrande`, `arc_challenge`, `arc_easy`, `gsm8k`.
        data_dir: Folder of local JSONL copies in hub schema (e.g. `mmlu/test.jsonl`). `None` loads
            the datasets from the Hugging Face Hub as lm-eval does.
        limit: Examples per task, drawn by a seeded random sample (for MMLU: over all subjects
            together). `None` evaluates every example. A dict sets it per benchmark
            (`{"default": 200, "truthfulqa_mc2": 50}`; a benchmark not named takes `default`).
        seed: Seed of that sample. The same seed picks the same items for every model.
        num_fewshot: Few-shot examples per prompt. `None` keeps each task's lm-eval default (0 for
            most, 5 for gsm8k); TruthfulQA is always 0-shot (lm-eval's config pins it).
        apply_chat_template: Wrap prompts in the tokenizer's chat template.
        fewshot_as_multiturn: With a chat template, give few-shot examples as separate turns.
            `None` means "same as `apply_chat_template`".
        batch_size: Batch size of the model's forward passes.
        dtype: Model dtype (`auto`, `float32`, `bfloat16`, `float16`). `auto` is the checkpoint's
            dtype on GPU and float32 on CPU.
        device: `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available).
        max_gen_toks: Cap on generated tokens for generative benchmarks (gsm8k, ifeval); `None`
            keeps lm-eval's (1280 for ifeval).
    """

    tasks: list[str] = field(
        default_factory=lambda: ["mmlu", "truthfulqa_mc2", "hellaswag", "winogrande", "arc_challenge", "arc_easy"],
        metadata={"help": "Benchmarks to run."})
    data_dir: str | None = field(default=None, metadata={"help": "Local benchmark JSONL folder; None = hub."})
    limit: int | dict[str, int] | None = field(default=None, metadata={"help": "Examples per task (seeded random sample)."})
    seed: int = field(default=0, metadata={"help": "Seed of the per-task sample."})
    num_fewshot: int | None = field(default=None, metadata={"help": "Few-shot count; None = task default."})
    apply_chat_template: bool = field(default=False, metadata={"help": "Use the chat template."})
    fewshot_as_multiturn: bool | None = field(default=None, metadata={"help": "Few-shot as chat turns."})
    batch_size: int = field(default=8, metadata={"help": "Forward-pass batch size."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype."})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto."})
    max_gen_toks: int | None = field(default=None, metadata={"help": "Generated-token cap of generative tasks."})

    def __post_init__(self):
        if isinstance(self.tasks, str):
            self.tasks = [t for t in self.tasks.split(",") if t]
        self.tasks = list(dict.fromkeys(self.tasks))
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise S3FTError(f"unknown general benchmark(s) {', '.join(unknown)}; supported: {', '.join(TASKS)}")
        if not self.tasks:
            raise S3FTError("no general benchmarks selected")
        limits = self.limit.values() if isinstance(self.limit, dict) else [self.limit]
        if any(n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1) for n in limits):
            raise S3FTError(f"limit must be a positive integer or None, got {self.limit!r}")
        if isinstance(self.limit, dict):
            unknown = [t for t in self.limit if t != "default" and t not in self.tasks]
            if unknown:
                raise S3FTError(f"limit names {', '.join(unknown)}, not among the benchmarks run "
                                f"({', '.join(self.tasks)})")
        if self.max_gen_toks is not None and self.max_gen_toks < 1:
            raise S3FTError(f"max_gen_toks must be >= 1, got {self.max_gen_toks}")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise S3FTError(f"num_fewshot must be >= 0, got {self.num_fewshot}")

    def limit_for(self, task: str) -> int | None:
        if isinstance(self.limit, dict):
            return self.limit.get(task, self.limit.get("default"))
        return self.limit

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_dtype(self) -> str:
        if self.dtype == "auto" and self.resolved_device() == "cpu":
            return "float32"
        return self.dtype

    def settings(self) -> dict:
        """Everything that affects the numbers (the cache key holds all of it), plus the device."""
        import lm_eval
        return {
            "data_dir": str(Path(self.data_dir).resolve()) if self.data_dir else None,
            "limit": self.limit,
            "seed": self.seed,
            "sampling": "seeded permutation prefix, per task (mmlu: pooled over subjects)",
            "num_fewshot": self.num_fewshot,
            "apply_chat_template": self.apply_chat_template,
            "fewshot_as_multiturn": self._multiturn(),
            "batch_size": self.batch_size,
            "dtype": self.resolved_dtype(),
            "device": self.resolved_device(),
            "max_gen_toks": self.max_gen_toks,
            "lm_eval_version": getattr(lm_eval, "__version__", None) or _pkg_version("lm_eval"),
            "lm_eval_seeds": dict(LM_EVAL_SEEDS),
        }

    def _multiturn(self) -> bool:
        return self.apply_chat_template if self.fewshot_as_multiturn is None else self.fewshot_as_multiturn


def _pkg_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------- sampling


def seeded_sample(sizes: dict[str, int], limit: int | None, seed: int, task: str) -> dict[str, list[int]] | None:
    """Pick `limit` documents over the subtasks in `sizes` ({subtask: number of docs}).

    Returns {subtask: sorted doc indices} (subtasks with no pick left out), or None when every
    document is used. A random permutation of the pooled (subtask, index) pairs, seeded by
    (task, seed), is cut at `limit`: deterministic, the same for every model, and nested in `limit`.
    """
    pool = [(leaf, i) for leaf in sorted(sizes) for i in range(sizes[leaf])]
    if limit is None or limit >= len(pool):
        return None
    random.Random(f"s3ft-general-eval:{task}:{seed}").shuffle(pool)
    picked: dict[str, list[int]] = {}
    for leaf, i in pool[:limit]:
        picked.setdefault(leaf, []).append(i)
    # lm-eval maps the k-th evaluated doc back to samples[k], so the indices must be sorted.
    return {leaf: sorted(idx) for leaf, idx in sorted(picked.items())}


# ----------------------------------------------------------------------------- fingerprints


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dir_identity(path: str, max_hash_bytes: int = 64 << 20) -> dict:
    """Identity of a model/adapter: a hub id as is; a local dir by its path and top-level files
    (content hash for files up to 64 MiB, size + mtime for bigger weight files)."""
    p = Path(path).expanduser()
    if not p.exists():
        return {"hub": path}
    p = p.resolve()
    files = {}
    for f in sorted(p.iterdir()):
        if not f.is_file():
            continue
        st = f.stat()
        files[f.name] = _file_digest(f) if st.st_size <= max_hash_bytes else f"size={st.st_size},mtime={st.st_mtime_ns}"
    return {"path": str(p), "files": files}


# ----------------------------------------------------------------------------- task configs


def _lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks
    return Path(lm_eval.tasks.__file__).parent


def _index_for(task: str) -> dict:
    """lm-eval's task index restricted to the folder of `task` (the full index takes ~15 s)."""
    from lm_eval.tasks._index import TaskIndex
    return TaskIndex.build([_lm_eval_tasks_dir() / TASKS[task].lm_eval_dir])


def _leaf_entries(task: str) -> dict[str, Any]:
    """{leaf task name: lm-eval index Entry} for a benchmark (57 subjects for mmlu)."""
    from lm_eval.tasks._index import Kind, TaskIndex
    spec = TASKS[task]
    index = _index_for(task)
    if spec.leaves is None:
        names = [task]
    else:
        import fnmatch
        names = sorted(n for n, e in index.items() if e.kind == Kind.TASK and fnmatch.fnmatch(n, spec.leaves))
    if not names or any(n not in index for n in names):
        # lm-eval moved things around: fall back to the full index.
        index = TaskIndex.build([_lm_eval_tasks_dir()])
        if task not in index:
            raise S3FTError(f"lm-eval {_pkg_version('lm_eval')} has no task {task!r}")
        if spec.leaves is not None:
            import fnmatch
            names = sorted(n for n, e in index.items() if e.kind == Kind.TASK and fnmatch.fnmatch(n, spec.leaves)
                           and e.yaml_path and e.yaml_path.parent == index[task].yaml_path.parent)
    return {n: index[n] for n in names}


def _full_yaml(path: Path) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml
    return load_yaml(path, resolve_func=False, recursive=True)


def _split_mmlu(data_dir: Path, out_dir: Path, files: dict[str, Path]) -> dict[str, dict[str, Path]]:
    """Write mmlu/{split}.jsonl rows into out_dir/<subject>/<split>.jsonl; returns {subject: {split: path}}."""
    stamp = fingerprint({s: _file_digest(p) for s, p in files.items()})
    root = out_dir / stamp
    done = root / "done.json"
    if not done.exists():
        by_subject: dict[str, dict[str, list[str]]] = {}
        for split, path in files.items():
            with path.open(encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        subject = json.loads(line)["subject"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise S3FTError(f"{path}:{lineno}: not a JSON object with a 'subject' field") from None
                    by_subject.setdefault(subject, {}).setdefault(split, []).append(line.rstrip("\n"))
        for subject, splits in by_subject.items():
            (root / subject).mkdir(parents=True, exist_ok=True)
            for split, lines in splits.items():
                tmp = root / subject / f"{split}.jsonl.tmp"
                tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
                os.replace(tmp, root / subject / f"{split}.jsonl")
        write_json(done, {"subjects": sorted(by_subject)})
    subjects = json.loads(done.read_text(encoding="utf-8"))["subjects"]
    return {s: {split: root / s / f"{split}.jsonl" for split in files if (root / s / f"{split}.jsonl").exists()}
            for s in subjects}


def _write_if_changed(path: Path, text: str) -> None:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _offline_configs(task: str, data_dir: Path, cache_dir: Path,
                     num_fewshot: int | None = None) -> tuple[Path, list[str], dict, list[str]]:
    """Generate the YAMLs overriding the data source of `task`'s lm-eval config(s).

    Returns (folder of YAMLs, leaf task names, data identity for the cache key, notes).
    Raises MissingBenchmarkData naming the first required file that is absent.
    """
    import yaml
    spec = TASKS[task]
    local = {split: data_dir / rel for split, rel in spec.files.items()}
    for split in spec.required:
        if not local[split].is_file():
            raise MissingBenchmarkData(
                f"{task}: benchmark data file not found: {local[split]} "
                f"(expected the hub's {split!r} split as JSONL in the data directory)")
    present = {s: p for s, p in local.items() if p.is_file()}
    data_id = {s: _file_digest(p) for s, p in present.items()}
    entries = _leaf_entries(task)
    notes: list[str] = []

    if spec.leaves is not None:  # mmlu: one subtask per subject, each with its own files
        per_subject = _split_mmlu(data_dir, cache_dir / "lm_eval_data" / task, present)
        leaf_files = {}
        missing = []
        for leaf, entry in entries.items():
            subject = _full_yaml(entry.yaml_path).get("dataset_name")
            if subject in per_subject and "test" in per_subject[subject]:
                leaf_files[leaf] = per_subject[subject]
            else:
                missing.append(subject)
        if missing:
            notes.append(f"local {local['test']} has no rows for {len(missing)} of {len(entries)} subjects "
                         f"({', '.join(sorted(map(str, missing))[:5])}{', ...' if len(missing) > 5 else ''}); "
                         "they are left out")
        if not leaf_files:
            raise MissingBenchmarkData(f"{task}: {local['test']} has no rows for any lm-eval subject")
    else:
        leaf_files = {task: present}
    leaves = sorted(leaf_files)

    out = cache_dir / "lm_eval_tasks" / task
    hf_cache = str((cache_dir / "hf_datasets").resolve())
    for leaf, files in leaf_files.items():
        original = _full_yaml(entries[leaf].yaml_path)
        cfg: dict[str, Any] = {
            "include": str(entries[leaf].yaml_path),
            "task": leaf,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {s: str(p.resolve()) for s, p in files.items()},
                               "cache_dir": hf_cache},
        }
        for key in _SPLIT_KEYS:  # splits without a local file -> null (lm-eval then uses its fallback rule)
            split = original.get(key)
            if split is not None and split not in files:
                cfg[key] = None
        _write_if_changed(out / f"{leaf}.yaml", "# generated by s3ft.compare.lm_eval_bridge: lm-eval's config, local data\n"
                          + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    for stale in out.glob("*.yaml"):
        if stale.stem not in leaf_files:
            stale.unlink()
    shots = num_fewshot if num_fewshot is not None else _full_yaml(entries[leaves[0]].yaml_path).get("num_fewshot")
    pinned_zero = _full_yaml(entries[leaves[0]].yaml_path).get("num_fewshot") == 0
    if shots and not pinned_zero and spec.leaves is None and "train" in spec.files and "train" not in present:
        notes.append(f"no local train split ({local['train']}): the {shots} few-shot examples come from "
                     "the next split lm-eval falls back to, never the evaluated item itself")
    return out, leaves, {"local": data_id}, notes


def _task_manager(include_path: Path | list[Path]):
    from lm_eval.tasks import TaskManager
    return TaskManager(include_path=[str(p) for p in (include_path if isinstance(include_path, list) else [include_path])],
                       include_defaults=False)


def _offline_punkt(data_dir: Path) -> None:
    """lm-eval's ifeval downloads nltk's punkt_tab at import when nltk cannot find it; offline it must
    come from `<data dir>/nltk_data` (or NLTK_DATA), never the network."""
    try:
        import immutabledict  # noqa: F401
        import langdetect  # noqa: F401
        import nltk
    except ImportError as e:
        raise S3FTError(f"ifeval needs the packages langdetect, immutabledict and nltk ({e}); "
                        "pip install 's3ft[eval]'") from None
    local = data_dir / "nltk_data"
    if local.is_dir() and str(local) not in nltk.data.path:
        nltk.data.path.insert(0, str(local))
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        raise MissingBenchmarkData(f"ifeval: nltk's English punkt_tab tokenizer data not found: {local}/tokenizers/"
                                   "punkt_tab (nor in NLTK_DATA); ifeval splits responses into sentences with it") from None


def _prepare_task(task: str, cfg: GeneralEvalConfig, cache_dir: Path):
    """(TaskManager, leaf names, data identity, notes) for `task`, online or offline."""
    if task == "ifeval" and cfg.data_dir:
        _offline_punkt(Path(cfg.data_dir).expanduser())
    if cfg.data_dir:
        folder, leaves, data_id, notes = _offline_configs(task, Path(cfg.data_dir).expanduser(), cache_dir,
                                                          cfg.num_fewshot)
        return _task_manager(folder), leaves, data_id, notes
    entries = _leaf_entries(task)
    folders = sorted({e.yaml_path.parent for e in entries.values()})
    hub = sorted({f"{c.get('dataset_path')}/{c.get('dataset_name')}"
                  for c in (_full_yaml(e.yaml_path) for e in entries.values())})
    return _task_manager(folders), sorted(entries), {"hub": hub if len(hub) < 4 else fingerprint(hub)}, []


# ----------------------------------------------------------------------------- evaluation


def _load_lm(model: str, adapter: str | None, cfg: GeneralEvalConfig):
    from lm_eval.models.huggingface import HFLM
    local = Path(model).expanduser()
    pretrained = str(local.resolve()) if local.exists() else model
    peft_dir = str(Path(adapter).expanduser().resolve()) if adapter else None
    try:
        return HFLM(pretrained=pretrained, peft=peft_dir, device=cfg.resolved_device(),
                    dtype=cfg.resolved_dtype(), batch_size=cfg.batch_size)
    except (RuntimeError, ValueError, KeyError) as e:
        if adapter and re.search(r"size mismatch|target module|state_dict|adapter|peft|lora", str(e), re.I):
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()][:2]
            raise AdapterMismatchError(f"loading adapter {adapter} onto model {model} failed: "
                                       f"{' '.join(lines) or type(e).__name__}") from e
        raise


def _mean_stderr(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, math.sqrt(var / len(xs))


def _flat(values: list) -> list[float]:
    """Per-item values, lists (one per instruction) flattened: lm-eval's instruction-level mean."""
    return [x for v in values for x in (v if isinstance(v, list) else [v])]


def _collect(task: str, leaves: list[str], res: dict) -> dict:
    """Per-item scores and aggregates from simple_evaluate's output (log_samples=True)."""
    spec = TASKS[task]
    multi = spec.leaves is not None
    items: list[dict] = []
    subtasks = {}
    for leaf in leaves:
        by_doc: dict[int, dict] = {}
        for s in res.get("samples", {}).get(leaf, []):
            row = by_doc.setdefault(s["doc_id"], {"scores": {}})
            for metric in s.get("metrics", []):
                if metric in s:  # ifeval's instruction-level metrics are one bool per instruction
                    v = s[metric]
                    row["scores"][f"{metric},{s['filter']}"] = [float(x) for x in v] if isinstance(v, list) else float(v)
            if s["filter"] == spec.filter:
                row["doc_hash"] = s.get("doc_hash")
                if spec.gold is not None:  # the choices' log-likelihoods, for the likelihood deltas
                    row["lls"] = [float(r[0] if isinstance(r, (list, tuple)) else r) for r in s["filtered_resps"]]
                    row["gold"] = spec.gold(s["doc"])
        key = f"{spec.metric},{spec.filter}"
        leaf_items = []
        for doc_id in sorted(by_doc):
            row = by_doc[doc_id]
            if key not in row["scores"]:
                raise S3FTError(f"lm-eval returned no {key} for {leaf} doc {doc_id} (metrics: {sorted(row['scores'])})")
            leaf_items.append({"doc_id": f"{leaf.removeprefix(task + '_')}/{doc_id}" if multi else doc_id,
                               "score": row["scores"][key], "scores": row["scores"],
                               "doc_hash": row.get("doc_hash"),
                               **({"lls": row["lls"], "gold": row["gold"]} if "lls" in row else {})})
        items.extend(leaf_items)
        if multi:
            subtasks[leaf] = {"value": _mean_stderr([i["score"] for i in leaf_items])[0], "n": len(leaf_items)}
    value, stderr = _mean_stderr([i["score"] for i in items])
    metric_names = sorted({k for i in items for k in i["scores"]})
    metrics = {k: _mean_stderr(_flat([i["scores"][k] for i in items if k in i["scores"]]))[0] for k in metric_names}
    out = {
        "metric": spec.metric if spec.filter == "none" else f"{spec.metric},{spec.filter}",
        "value": value,
        "stderr": stderr,
        "n": len(items),
        "metrics": metrics,
        "num_fewshot": sorted({res.get("n-shot", {}).get(leaf) for leaf in leaves}, key=str),
        "lm_eval_versions": {leaf: res.get("versions", {}).get(leaf) for leaf in leaves} if multi
        else res.get("versions", {}).get(task),
        "items": items,
        "skipped": None,
    }
    if len(out["num_fewshot"]) == 1:
        out["num_fewshot"] = out["num_fewshot"][0]
    if multi:
        out["subtasks"] = subtasks
    if not multi:  # cross-check against lm-eval's own aggregate
        lm_value = res.get("results", {}).get(task, {}).get(f"{spec.metric},{spec.filter}")
        if isinstance(lm_value, (int, float)) and value is not None and abs(lm_value - value) > 1e-6:
            raise S3FTError(f"{task}: per-item mean {value} differs from lm-eval's {lm_value}")
    return out


def evaluate_general(model: str, adapter: str | None, cfg: GeneralEvalConfig, cache_dir: str | Path,
                     progress: Callable[[str], None] | None = None) -> dict:
    """Run the general benchmarks of `cfg` on `model` (+ optional PEFT `adapter`), with caching.

    Args:
        model: Local HF model directory (config.json + weights) or hub id.
        adapter: PEFT adapter directory, or None for the bare model.
        cfg: The settings; use the same for every model you compare.
        cache_dir: Holds per-task result JSONs, generated task YAMLs and split data.
        progress: Called with one-line status messages.

    Returns:
        {"model", "adapter", "settings": {...},
         "tasks": {task: {"metric", "value", "stderr", "n", "items": [{"doc_id", "score", ...}],
                          "skipped": None | reason, "cache_key", "cached", ...}}}
    """
    say = progress or (lambda msg: None)
    cache_dir = Path(cache_dir).expanduser()
    (cache_dir / "general_eval").mkdir(parents=True, exist_ok=True)
    settings = cfg.settings()
    keyed_settings = {k: v for k, v in settings.items() if k not in ("device", "data_dir")}
    if adapter and not Path(adapter).expanduser().is_dir():
        raise AdapterMismatchError(f"adapter {adapter}: not a directory")
    model_id = _dir_identity(model)
    adapter_id = _dir_identity(adapter) if adapter else None

    result: dict[str, Any] = {"model": model, "adapter": adapter, "settings": {**settings, "tasks": list(cfg.tasks)},
                              "tasks": {}}
    lm: dict = {}  # the model, loaded for the first task not in the cache
    for task in cfg.tasks:
        spec = TASKS[task]
        try:
            tm, leaves, data_id, notes = _prepare_task(task, cfg, cache_dir)
        except MissingBenchmarkData as e:
            say(f"skipped: {e}")
            result["tasks"][task] = {"metric": spec.metric, "value": None, "stderr": None, "n": 0, "items": [],
                                     "skipped": str(e)}
            continue
        key_obj = {"schema": SCHEMA_VERSION, "model": model_id, "adapter": adapter_id, "task": task,
                   "leaves": leaves, "data": data_id,
                   "settings": {**keyed_settings, "limit": cfg.limit_for(task)}}
        key = fingerprint(key_obj)
        path = cache_dir / "general_eval" / f"{task}-{key}.json"
        if path.exists():
            try:
                cached = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                cached = None
            if cached is not None:
                say(f"{task}: cached ({path.name})")
                result["tasks"][task] = {**cached["result"], "cache_key": key, "cached": True}
                continue
        for note in notes:
            say(f"{task}: note: {note}")
        task_result = _evaluate_task(task, tm, leaves, notes, cfg, model, adapter, lm, say)
        write_json(path, {"key": key_obj, "settings": settings, "model": model, "adapter": adapter,
                          "result": task_result})
        say(f"{task}: {task_result['metric']} = {task_result['value']:.4f} (n={task_result['n']}, "
            f"{task_result['seconds']:.0f}s)")
        result["tasks"][task] = {**task_result, "cache_key": key, "cached": False}
    return result


def _evaluate_task(task: str, tm, leaves, notes: list[str], cfg: GeneralEvalConfig, model: str, adapter: str | None, lm: dict,
                   say: Callable[[str], None]) -> dict:
    """One benchmark through lm-eval on its seeded sample; `lm` holds the model once loaded."""
    try:
        loaded = tm.load(leaves)["tasks"]
    except ConnectionError as e:
        if cfg.data_dir:
            raise
        raise S3FTError(f"{task}: could not load its dataset from the Hugging Face Hub ({e}); "
                        "pass a data directory of local copies (--data-dir / S3FT_DATA_DIR)") from e
    sizes = {name: len(t.eval_docs) for name, t in loaded.items()}
    samples = seeded_sample(sizes, cfg.limit_for(task), cfg.seed, task)
    run_tasks = [loaded[n] for n in sorted(loaded) if samples is None or n in samples]
    if "lm" not in lm:
        if adapter:
            for w in check_adapter(model, adapter):
                warnings.warn(w, stacklevel=3)
                say(f"warning: {w}")
        say(f"loading {model}" + (f" + adapter {adapter}" if adapter else ""))
        lm["lm"] = _load_lm(model, adapter, cfg)
    n = sum(len(v) for v in samples.values()) if samples else sum(sizes.values())
    say(f"{task}: evaluating {n} examples")
    t0 = time.time()
    import lm_eval
    res = lm_eval.simple_evaluate(
        model=lm["lm"], tasks=run_tasks, task_manager=tm, samples=samples, num_fewshot=cfg.num_fewshot,
        batch_size=cfg.batch_size, log_samples=True, apply_chat_template=cfg.apply_chat_template,
        fewshot_as_multiturn=cfg._multiturn(), bootstrap_iters=0,
        gen_kwargs={"max_gen_toks": cfg.max_gen_toks} if cfg.max_gen_toks else None, **LM_EVAL_SEEDS)
    task_result = _collect(task, [t.task_name for t in run_tasks], res)
    task_result["notes"] = notes
    task_result["seconds"] = round(time.time() - t0, 2)
    return task_result


def settings_differences(a: dict, b: dict) -> list[str]:
    """Setting names that differ between two evaluate_general results (empty = comparable)."""
    sa, sb = a.get("settings", {}), b.get("settings", {})
    ignore = {"device", "tasks", "data_dir"}
    return sorted(k for k in set(sa) | set(sb) if k not in ignore and sa.get(k) != sb.get(k))
