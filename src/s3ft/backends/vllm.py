"""vLLM backend (GPU; `pip install 's3ft[vllm]'`): offline batched generation, LoRA adapters
served without merging.

vLLM holds most of the GPU's memory for its KV cache and does not give it back while the
process lives, so the engine runs in a child process: `close()` ends that process and the
memory is free again before training starts. The parent renders prompts with the same
chat template as the HF backend and sends token ids, so both backends see identical
inputs and write identical artifacts.

Engine options go to `vllm.LLM(...)` unchanged through `generation.engine_args`, e.g.
`{gpu_memory_utilization: 0.85, tensor_parallel_size: 2, max_model_len: 4096}`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import multiprocessing as mp
import traceback
from pathlib import Path
from typing import Iterator

from ..config import GenerationConfig, ModelConfig
from ..errors import S3FTError
from ..models import load_tokenizer
from . import Generation, GenRequest, dedupe, register_backend, render_prompt, trim

CHUNK = 512
"""Prompts per round trip to the engine: vLLM schedules them continuously; the pipeline
saves each chunk's rows as soon as they return, so a crash loses at most one chunk."""


def engine_args(model_path: str, model_cfg: ModelConfig, gen_cfg: GenerationConfig,
                adapter: str | None) -> dict:
    """Keyword arguments for `vllm.LLM`."""
    args = {"model": model_path, "tokenizer": model_path, "dtype": model_cfg.dtype,
            "trust_remote_code": model_cfg.trust_remote_code, "seed": gen_cfg.seed}
    if adapter:
        cfg_file = Path(adapter) / "adapter_config.json"
        if not cfg_file.is_file():
            raise S3FTError(f"{cfg_file}: not found; is {adapter} a PEFT adapter directory?")
        rank = json.loads(cfg_file.read_text())["r"]
        args.update(enable_lora=True, max_lora_rank=max(8, 1 << (int(rank) - 1).bit_length()), max_loras=1)
    args.update(getattr(gen_cfg, "engine_args", None) or {})
    return args


def sampling_args(gen_cfg: GenerationConfig, max_new_tokens: int, stop: tuple[str, ...]) -> dict:
    """Keyword arguments for `vllm.SamplingParams`: the same decoding as the HF backend."""
    args = {"max_tokens": max_new_tokens, "temperature": gen_cfg.temperature, "seed": gen_cfg.seed,
            "stop": list(stop), "include_stop_str_in_output": True, "skip_special_tokens": True}
    if gen_cfg.temperature > 0:
        args["top_p"] = gen_cfg.top_p
        # A per-request seed makes identical prompts sample identical text; the engine's seed
        # (`engine_args`) keeps the run reproducible while repeated prompts differ.
        del args["seed"]
    return args


def vllm_engine(llm_args: dict, adapter: str | None):
    """The real engine, built inside the child process: `fn(prompt_ids, sampling) -> rows`."""
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest
    llm = LLM(**llm_args)
    lora = LoRARequest("adapter", 1, adapter) if adapter else None

    def generate(prompt_ids: list[list[int]], sampling: dict) -> list[tuple[str, str, int]]:
        outs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], SamplingParams(**sampling),
                            lora_request=lora, use_tqdm=False)
        return [(o.outputs[0].text, o.outputs[0].finish_reason, len(o.outputs[0].token_ids)) for o in outs]
    return generate


def _child(conn, factory: str, llm_args: dict, adapter: str | None) -> None:
    """Child process loop: build the engine once, answer ('generate', ids, sampling) messages."""
    try:
        module, name = factory.split(":")
        engine = getattr(importlib.import_module(module), name)(llm_args, adapter)
        conn.send(("ready", None))
        while True:
            msg = conn.recv()
            if msg[0] == "close":
                break
            conn.send(("ok", engine(msg[1], msg[2])))
    except BaseException:  # everything, so the parent gets the reason instead of a dead pipe
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


@register_backend("vllm")
class VLLMBackend:
    factory = "s3ft.backends.vllm:vllm_engine"
    """`module:function` building the engine in the child; tests swap in a fake engine."""

    def __init__(self, model_path: str, model_cfg: ModelConfig, gen_cfg: GenerationConfig,
                 adapter: str | None = None):
        self.gen_cfg, self.adapter = gen_cfg, adapter
        self.tokenizer = load_tokenizer(model_path, model_cfg.trust_remote_code)
        self.llm_args = engine_args(model_path, model_cfg, gen_cfg, adapter)
        self._proc = self._conn = None

    def _start(self) -> None:
        if self.factory.startswith("s3ft.") and importlib.util.find_spec("vllm") is None:
            raise S3FTError("generation.backend=vllm needs vLLM: pip install 's3ft[vllm]' (GPU only)")
        ctx = mp.get_context("spawn")  # a forked CUDA context is unusable in the child
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(child_conn, self.factory, self.llm_args, self.adapter),
                                 daemon=True, name="s3ft-vllm")
        self._proc.start()
        child_conn.close()
        self._receive()

    def _receive(self):
        try:
            kind, payload = self._conn.recv()
        except EOFError:
            self._proc.join(timeout=10)  # the pipe closes a moment before the exit code is known
            code = self._proc.exitcode
            self.close()
            raise S3FTError(f"vLLM engine process died (exit code {code}); see its output above") from None
        if kind == "error":
            self.close()
            raise S3FTError(f"vLLM engine failed:\n{payload}")
        return payload

    def generate(self, requests: list[GenRequest], max_new_tokens: int, stop: tuple[str, ...] = (),
                 stop_regex: str | None = None) -> Iterator[list[Generation]]:
        if self._proc is None:
            self._start()
        prompts = [render_prompt(self.tokenizer, r) for r in requests]
        groups = list(dedupe(prompts, sampling=self.gen_cfg.temperature > 0).values())
        ids = self.tokenizer([prompts[g[0]] for g in groups], add_special_tokens=False)["input_ids"]
        sampling = sampling_args(self.gen_cfg, max_new_tokens, stop)
        for start in range(0, len(groups), CHUNK):
            self._conn.send(("generate", ids[start:start + CHUNK], sampling))
            result = []
            for g, prompt_ids, (text, reason, n_tok) in zip(groups[start:start + CHUNK], ids[start:start + CHUNK],
                                                            self._receive()):
                text, reason = trim(text, "stop" if reason == "stop" else "length", stop, stop_regex)
                result += [Generation(requests[i].id, text, reason, len(prompt_ids), n_tok) for i in g]
            yield result

    def close(self) -> None:
        """End the engine process; its GPU memory is released with it."""
        if self._proc is not None:
            try:
                self._conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
            self._proc.join(timeout=60)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
            self._conn.close()
        self._proc = self._conn = None
