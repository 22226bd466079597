"""Peak memory: measured for every stage, predicted for training.

`RSSMonitor` gives the peak resident set size (RSS) of this process while a block runs: the
kernel's exact high-water mark when the block sets a new one, else the highest of samples
taken every `interval` seconds (the high-water mark cannot be reset without falsifying what
`/usr/bin/time` and the parent see). `plan_training` predicts a training step's peak from the
model's shape and picks the micro-batch (and checkpointing) that keeps it within a budget.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

GIB = 2**30


def _hwm_bytes() -> int:
    """The process's peak RSS so far (getrusage reports KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def rss_bytes(pid: int | str = "self") -> int | None:
    """The current RSS of this process (or `pid`), or None where /proc is not available."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def descendants(pid: int | str = "self") -> list[str]:
    """The ids of this process's children, theirs, and so on ([] where /proc does not list them)."""
    found, todo = [], [str(pid)]
    while todo:
        for path in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                kids = path.read_text().split()
            except OSError:  # the process ended meanwhile
                continue
            found += kids
            todo += kids
    return found


def tree_rss_bytes() -> int | None:
    """The RSS of this process and every process under it (a generation engine's child process)."""
    own = rss_bytes()
    return None if own is None else own + sum(rss_bytes(p) or 0 for p in descendants())


def rss_gib() -> float:
    return (rss_bytes() or 0) / GIB


def release_freed_memory() -> None:
    """Collect garbage and hand the heap's free pages back to the OS: glibc keeps what a stage freed
    (a generation batch's KV cache, training's activations), which the next stage's RSS would carry."""
    import gc
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to hand back this way
        pass


class RSSMonitor:
    """`with RSSMonitor() as m: ...` then `m.peak_gib`: the peak RSS while the block ran.
    `tree`: of this process and the processes under it (sampled only), e.g. a vLLM engine's."""

    def __init__(self, interval: float = 0.02, tree: bool = False):
        self.interval = interval
        self.peak_bytes = 0
        self._rss = tree_rss_bytes if tree else rss_bytes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_bytes = max(self.peak_bytes, self._rss() or 0)

    def start(self) -> "RSSMonitor":
        self._hwm0 = _hwm_bytes()
        self.peak_bytes = self._rss() or 0
        self._thread = threading.Thread(target=self._sample, name="rss-monitor", daemon=True)
        self._thread.start()
        return self

    def read(self) -> float:
        """The peak so far, in GiB, while the block still runs."""
        hwm = _hwm_bytes()
        exact = hwm if hwm > self._hwm0 else 0  # the kernel's mark, when the block set a new one (this process only)
        return max(exact, self.peak_bytes, self._rss() or 0) / GIB

    def stop(self) -> float:
        """Ends the measurement; returns the peak in GiB."""
        self._stop.set()
        self._thread.join()
        self.peak_bytes = round(self.read() * GIB)
        return self.peak_gib

    def __enter__(self) -> "RSSMonitor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB


# --- predicting the peak of training ------------------------------------------------------------------
# What TRL's fused LM head (`trl.trainer.utils.add_fused_lm_head`) holds at once: token x vocabulary tiles
# of at most 4096 x 32768 logits, in fp32. On GPU a Triton kernel folds each tile in place (~2 tiles live).
# On CPU the tiles are folded with torch ops; measured on Qwen2.5-0.5B (docs/memory.md), the step's peak
# RSS grows by about 5.5 vocabulary-wide fp32 rows per token of the micro-batch (4096 at most): the
# temporaries of every vocabulary tile and the pages glibc keeps after freeing them.
LOGIT_TILE_TOKENS, LOGIT_TILE_VOCAB = 4096, 32768
TILES_LIVE = {"gpu": 2}
CPU_VOCAB_ROWS_LIVE = 5.5
RUNTIME_GIB = 0.35
"""torch, tokenizer, datasets and the Python heap around training: measured ~0.3 GiB on CPU."""
CPU_BUDGET_SHARE = 0.25
GPU_BUDGET_SHARE = 0.9


@dataclass(frozen=True)
class ModelShape:
    """The sizes a memory prediction needs, read from a model's architecture."""
    params: int
    """All weights, head included."""
    hidden: int
    intermediate: int
    """The MLP's inner width."""
    layers: int
    heads: int
    kv_dim: int
    """Key (or value) width per token: key-value heads x head size."""
    vocab: int
    linears: tuple[tuple[str, int, int], ...]
    """(name, in_features, out_features) of every linear layer but the LM head: what LoRA may adapt."""


def model_shape(model) -> ModelShape:
    """The sizes of a model (real or on the meta device)."""
    import torch
    c = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    out_emb = model.get_output_embeddings()
    linears = tuple((name, m.in_features, m.out_features) for name, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and m is not out_emb)
    return ModelShape(params=sum(p.numel() for p in model.parameters()), hidden=c.hidden_size,
                      intermediate=getattr(c, "intermediate_size", 4 * c.hidden_size), layers=c.num_hidden_layers,
                      heads=heads, kv_dim=(getattr(c, "num_key_value_heads", None) or heads) * head_dim,
                      vocab=c.vocab_size, linears=linears)


def meta_model_shape(path: str, trust_remote_code: bool = False) -> ModelShape:
    """`model_shape` without loading weights: the architecture is built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return model_shape(model)


def lora_params(shape: ModelShape, r: int, target_modules) -> int:
    """Trainable LoRA parameters: r x (in + out) per targeted linear layer (PEFT's `all-linear`: all but the head)."""
    import re
    if isinstance(target_modules, str) and target_modules.lower() != "all-linear":
        hit = lambda name: re.fullmatch(target_modules, name) is not None  # noqa: E731
    elif isinstance(target_modules, str):
        hit = lambda name: True  # noqa: E731
    else:
        hit = lambda name: name.split(".")[-1] in set(target_modules)  # noqa: E731
    return sum(r * (i + o) for name, i, o in shape.linears if hit(name))


def activation_bytes_per_token(shape: ModelShape, seq_len: int, elem: int, lora_dropout: bool) -> int:
    """What backward needs from one token of one micro-batch, summed over the decoder layers.

    Per layer: the two norms' inputs and outputs (4h), q/k/v (h + 2kv), their rotary copies (h + 2kv),
    the attention output (h) and, where attention runs unfused with a padding mask, its probabilities
    (heads x seq_len), the o_proj input (h), the MLP's gate, up, activation and product (4i), and,
    with LoRA dropout, each adapted layer's dropped-out input and mask (7.5h + 1.25i).
    """
    h, kv, i = shape.hidden, shape.kv_dim, shape.intermediate
    per_layer = 8 * h + 4 * kv + 4 * i + shape.heads * seq_len
    if lora_dropout:
        per_layer += 7.5 * h + 1.25 * i
    return int(shape.layers * per_layer * elem)


@dataclass(frozen=True)
class TrainPeak:
    """Predicted bytes held at the peak of one training step, by what holds them."""
    weights: int
    optimizer: int
    """Gradients and AdamW's two moments of the trainable weights, fp32."""
    activations: int
    """What the backward pass needs from the micro-batch's forward pass."""
    logits_chunk: int
    """The LM head's live logits: the fused head's tiles (GPU), its vocabulary-wide temporaries (CPU), or
    whole logits (opsd)."""
    runtime: int
    """torch, tokenizer, datasets and the Python heap around training."""

    @property
    def peak(self) -> int:
        return self.weights + self.optimizer + self.activations + self.logits_chunk + self.runtime

    def gib(self) -> dict[str, float]:
        """Each part and the peak in GiB, for summaries."""
        return {k: round(v / GIB, 3) for k, v in {**asdict(self), "peak": self.peak}.items()}


FULL_LOGITS_LIVE = 6
"""Vocabulary-wide fp32 copies per distilled token when a trainer materialises whole logits (opsd's
`full_logits` and `topk_logits` modes): the student's logits, their log-softmax and its gradient, the
teacher's logits and log-softmax, and the divergence's temporary."""


def train_peak_bytes(shape: ModelShape, *, tokens: int, seq_len: int, weight_elem: int, act_elem: int,
                     trainable: int, lora_dropout: bool, checkpointing: bool, device: str,
                     full_logits_tokens: int = 0) -> TrainPeak:
    """Predicted peak of one training step whose micro-batch holds `tokens` (padded) tokens of `seq_len`.
    `full_logits_tokens`: tokens of the micro-batch whose whole logits the trainer materialises (opsd's
    completions) instead of TRL's fused, tiled LM head."""
    per_token = activation_bytes_per_token(shape, seq_len, act_elem, lora_dropout)
    if checkpointing:  # each layer's input is kept; one layer's activations are rebuilt at a time
        per_token = shape.layers * shape.hidden * act_elem + per_token // shape.layers
    if device.startswith("cuda"):
        logits = TILES_LIVE["gpu"] * min(tokens, LOGIT_TILE_TOKENS) * min(shape.vocab, LOGIT_TILE_VOCAB) * 4
    else:
        logits = int(CPU_VOCAB_ROWS_LIVE * min(tokens, LOGIT_TILE_TOKENS) * shape.vocab * 4)
    if full_logits_tokens:
        logits = FULL_LOGITS_LIVE * full_logits_tokens * shape.vocab * 4
    return TrainPeak(weights=shape.params * weight_elem, optimizer=trainable * 4 * 3, activations=tokens * per_token,
                     logits_chunk=logits, runtime=int(RUNTIME_GIB * GIB))


def default_budget_gib(device: str) -> float:
    """A quarter of RAM on CPU (the machine is shared with the OS, other jobs and the allocator's slack);
    90% of the GPU's memory on CUDA."""
    if device.startswith("cuda"):
        import torch
        index = torch.device(device).index or 0
        return GPU_BUDGET_SHARE * torch.cuda.get_device_properties(index).total_memory / GIB
    try:
        return CPU_BUDGET_SHARE * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB
    except (ValueError, OSError):
        return 8.0


def predicted_peak(shape: ModelShape, cfg, longest: int, micro: int, checkpointing: bool, device: str,
                   weight_elem: int, act_elem: int, full_logits_row: int = 0) -> TrainPeak:
    """`train_peak_bytes` for `cfg` (a TrainConfig) at a micro-batch of `micro` rows of `longest` tokens,
    `full_logits_row` of each with whole logits (opsd: the completion)."""
    trainable = lora_params(shape, cfg.lora_r, cfg.target_modules) if cfg.lora else shape.params
    return train_peak_bytes(shape, tokens=micro * longest, seq_len=longest, weight_elem=weight_elem,
                            act_elem=act_elem, trainable=trainable, lora_dropout=cfg.lora and cfg.lora_dropout > 0,
                            checkpointing=checkpointing, device=device, full_logits_tokens=micro * full_logits_row)


def longest_row(lengths: list[int], cfg) -> int:
    """Tokens per row of the widest micro-batch: padded to its longest row (packed: max_length)."""
    return cfg.max_length if cfg.packing else min(max(lengths, default=1), cfg.max_length)


@dataclass(frozen=True)
class MemoryPlan:
    """How training runs each optimizer step so that it fits its memory budget."""
    micro_batch: int
    """Rows per forward and backward pass (per process)."""
    grad_accum: int
    """Micro-batches per optimizer step: batch_size x grad_accum rows, as configured."""
    gradient_checkpointing: bool
    budget_gib: float
    longest_row: int
    """Tokens per row of the widest micro-batch (rows are padded to it)."""
    predicted_gib: dict[str, float] = field(default_factory=dict)
    """`TrainPeak.gib()` at this micro-batch: each part and the peak."""

    @property
    def peak_gib(self) -> float:
        return self.predicted_gib["peak"]


def plan_training(shape: ModelShape, lengths: list[int], cfg, device: str, weight_elem: int,
                  act_elem: int, batch_size: int | None = None, grad_accum: int | None = None,
                  full_logits_row: int = 0) -> MemoryPlan:
    """Micro-batch, gradient accumulation and checkpointing for `cfg` (a TrainConfig) on rows of `lengths` tokens.

    The micro-batch is the largest divisor of `batch_size` whose predicted peak, with its rows as long as the
    longest row (padding), fits `memory_budget_gib`; the rest of the batch becomes gradient accumulation, so
    each optimizer step sees the same rows and the same token-averaged loss. If one row does not fit, gradient
    checkpointing is turned on too. `batch_size` and `grad_accum` default to `cfg`'s (opsd passes its own step
    shape); `full_logits_row` is the tokens of each row whose whole logits the trainer holds (opsd's completion).
    """
    batch = batch_size or cfg.batch_size
    accum = grad_accum or cfg.grad_accum
    budget = cfg.memory_budget_gib or default_budget_gib(device)
    longest = longest_row(lengths, cfg)

    def peak(micro: int, checkpointing: bool) -> TrainPeak:
        return predicted_peak(shape, cfg, longest, micro, checkpointing, device, weight_elem, act_elem,
                              full_logits_row)

    checkpointing = cfg.gradient_checkpointing
    divisors = [d for d in range(batch, 0, -1) if batch % d == 0]
    micro = next((d for d in divisors if peak(d, checkpointing).peak <= budget * GIB), None)
    if micro is None and not checkpointing:
        checkpointing = True
        micro = next((d for d in divisors if peak(d, True).peak <= budget * GIB), None)
    micro = micro or 1  # nothing fits: the smallest step; the prediction says by how much it exceeds
    return MemoryPlan(micro_batch=micro, grad_accum=accum * batch // micro,
                      gradient_checkpointing=checkpointing, budget_gib=round(budget, 2), longest_row=longest,
                      predicted_gib=peak(micro, checkpointing).gib())
