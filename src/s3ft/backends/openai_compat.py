"""OpenAI-compatible server backend (vLLM, llama.cpp, ...) through the official `openai` client.

Two ways to prompt (`EndpointConfig.api`):
  completions  the chat template is rendered here with the model's own tokenizer and the text
               goes to /v1/completions: the prompt is byte-for-byte the one the hf backend
               generates from and TRL trains on, and a prefill is simply appended (any server).
  chat         messages go to /v1/chat/completions and the server renders them; a prefill is
               sent as a final assistant message with vLLM's `continue_final_message`. Servers
               without that option (llama.cpp's) would start a new turn instead.
`auto` picks `completions` when the tokenizer loads locally, else `chat`.

Requests run `concurrency` at a time; finished ones are yielded in batches as they complete.
Transient failures (connection, timeout, HTTP 408/409/429/5xx, a malformed reply) are retried
with exponential backoff; once a request has used up its retries the batch done so far is
yielded and then an S3FTError says which URL failed, how and after how many attempts.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Iterator

from ..config import EndpointConfig, GenerationConfig, ModelConfig
from ..errors import S3FTError
from ..models import load_tokenizer
from ..progress import console
from . import Generation, GenRequest, dedupe, register_backend, render_prompt, trim

RETRY_STATUS = {408, 409, 429}


class _BadReply(Exception):
    """The server answered 200 with something that is not a usable completion."""


def resolve_endpoint(ep: EndpointConfig, default_model: str | None, where: str) -> EndpointConfig:
    """Fill base_url (env OPENAI_BASE_URL) and model (`default_model`); check the ranges."""
    ep.check(where)
    base_url = ep.base_url or os.environ.get("OPENAI_BASE_URL")
    if not base_url:
        raise S3FTError(f"{where}.base_url: not set (nor env OPENAI_BASE_URL); "
                        "e.g. http://127.0.0.1:8000/v1 for a local vLLM server")
    model = ep.model or default_model
    if not model:
        raise S3FTError(f"{where}.model: not set; name the model the server serves")
    return replace(ep, base_url=base_url.rstrip("/"), model=model)


@register_backend("openai")
class OpenAIBackend:
    def __init__(self, model_path: str | None, model_cfg: ModelConfig, gen_cfg: GenerationConfig,
                 adapter: str | None = None, tokenizer=None, where: str = "generation.endpoint"):
        import openai  # here: only this backend needs the client (extra `server`)
        if adapter:
            raise S3FTError(f"{where}: the openai backend cannot load adapter {adapter}; serve base and "
                            "adapter yourself (vLLM: --enable-lora --lora-modules) or evaluate with backend hf")
        self.openai = openai
        self.gen_cfg = gen_cfg
        self.ep = resolve_endpoint(gen_cfg.endpoint, model_cfg.name_or_path if model_cfg else None, where)
        self.where = where
        self.tokenizer = tokenizer
        if self.tokenizer is None and self.ep.api != "chat" and model_path:
            self.tokenizer = self._load_tokenizer(model_path, model_cfg, required=self.ep.api == "completions")
        if self.ep.api == "completions" and self.tokenizer is None:
            raise S3FTError(f"{where}.api: `completions` needs the model's tokenizer locally (model.name_or_path)")
        self.api = "completions" if self.tokenizer is not None and self.ep.api != "chat" else "chat"
        if self.api == "chat" and self.ep.api == "auto" and model_path:
            console.print(f"[yellow]{where}: no local tokenizer for {model_path}; using the server's chat "
                          "template (a prefill needs continue_final_message, e.g. vLLM)[/]")
        self.client = openai.OpenAI(base_url=self.ep.base_url, api_key=os.environ.get(self.ep.api_key_env) or "EMPTY",
                                    timeout=self.ep.timeout_s, max_retries=0)  # retries are ours, counted
        self._warned_prefill = False
        self.attempts = 0
        """HTTP requests sent so far (tests assert retry bounds with it)."""
        self._lock = threading.Lock()
        self._abort = threading.Event()

    @staticmethod
    def _load_tokenizer(model_path: str, model_cfg: ModelConfig, required: bool):
        try:
            return load_tokenizer(model_path, model_cfg.trust_remote_code if model_cfg else False)
        except Exception as e:  # no local files, no chat template: fall back to the server's template
            if required:
                raise S3FTError(f"endpoint api `completions`: cannot load the tokenizer of {model_path}: {e}") from None
            return None

    def close(self) -> None:
        self.client.close()

    # --- one request ------------------------------------------------------------
    def _params(self, max_new_tokens: int, stop: tuple[str, ...]) -> dict:
        g = self.gen_cfg
        p = dict(model=self.ep.model, max_tokens=max_new_tokens, temperature=g.temperature, top_p=g.top_p,
                 seed=g.seed)
        if stop:
            p["stop"] = list(stop)
        return p

    def _request(self, req: GenRequest, max_new_tokens: int, stop: tuple[str, ...]) -> tuple[str, str, int, int, str]:
        """One completion: (text, server finish_reason, prompt tokens, completion tokens, stop string hit)."""
        params = self._params(max_new_tokens, stop)
        if self.api == "completions":
            r = self.client.completions.create(prompt=render_prompt(self.tokenizer, req), **params)
            choice = _first_choice(r)
            text = choice.text
        else:
            messages = list(req.messages)
            if req.prefill:
                messages.append({"role": "assistant", "content": req.prefill})
                params["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}
            r = self.client.chat.completions.create(messages=messages, **params)
            choice = _first_choice(r)
            text = getattr(choice.message, "content", None) if getattr(choice, "message", None) else None
        if not isinstance(text, str):
            raise _BadReply(f"choice has no text: {str(choice)[:200]}")
        usage = getattr(r, "usage", None)
        # vLLM names the stop string that ended the text; the hf backend keeps it in the text.
        hit = getattr(choice, "stop_reason", None)
        return (text, str(getattr(choice, "finish_reason", None)), int(getattr(usage, "prompt_tokens", 0) or 0),
                int(getattr(usage, "completion_tokens", 0) or 0), hit if isinstance(hit, str) and hit in stop else "")

    def _with_retries(self, req: GenRequest, max_new_tokens: int, stop: tuple[str, ...]):
        oa, ep = self.openai, self.ep
        problem = ""
        for attempt in range(1, ep.max_retries + 2):
            if self._abort.is_set():  # another request already failed for good: do not keep trying
                return None
            with self._lock:
                self.attempts += 1
            try:
                return self._request(req, max_new_tokens, stop)
            except oa.APIStatusError as e:  # the server answered with an HTTP error
                problem = f"HTTP {e.status_code}: {_short(e.message)}"
                if e.status_code not in RETRY_STATUS and e.status_code < 500:  # our request is wrong: say so now
                    raise S3FTError(f"{self.where}: {ep.base_url} rejected the request for model "
                                    f"{ep.model!r} ({problem})") from None
            except oa.APITimeoutError:
                problem = f"no reply within timeout_s={ep.timeout_s:g}"
            except oa.APIConnectionError as e:
                problem = f"cannot connect ({_short(e.__cause__ or e)})"
            except (oa.APIResponseValidationError, _BadReply, ValueError, TypeError, AttributeError) as e:
                problem = f"malformed reply ({type(e).__name__}: {_short(e)})"  # ValueError: bad JSON
            if attempt <= ep.max_retries:
                self._abort.wait(ep.retry_backoff_s * 2 ** (attempt - 1))
        raise S3FTError(f"{self.where}: {ep.base_url} (model {ep.model!r}) failed after {ep.max_retries + 1} "
                        f"attempts: {problem}")

    def _finish(self, req_id: str, out, stop: tuple[str, ...], stop_regex: str | None) -> Generation:
        text, server_reason, n_prompt, n_completion, hit = out
        reason = "length" if server_reason == "length" else "stop"
        extra = {} if server_reason in ("stop", "length") else {"server_finish_reason": server_reason}
        text, reason = trim(text + hit, reason, stop, stop_regex)  # stop_regex: the answer was complete there
        return Generation(req_id, text, reason, n_prompt, n_completion, extra)

    # --- the protocol ---------------------------------------------------------------
    def generate(self, requests: list[GenRequest], max_new_tokens: int, stop: tuple[str, ...] = (),
                 stop_regex: str | None = None) -> Iterator[list[Generation]]:
        stop = tuple(stop)
        if self.api == "chat" and any(r.prefill for r in requests) and not self._warned_prefill:
            console.print(f"[yellow]{self.where}: prefill sent as continue_final_message; a server without it "
                          "(llama.cpp) starts a new turn instead. Set api: completions to render prompts here.[/]")
            self._warned_prefill = True
        groups = [[requests[i] for i in g] for g in dedupe([(repr(r.messages), r.prefill) for r in requests],
                                                          sampling=self.gen_cfg.temperature > 0).values()]
        self._abort.clear()
        pool = ThreadPoolExecutor(self.ep.concurrency, thread_name_prefix="s3ft-openai")
        futures = {pool.submit(self._with_retries, g[0], max_new_tokens, stop): g for g in groups}
        done_batch: list[Generation] = []
        failure: BaseException | None = None
        try:
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    if f.cancelled():
                        continue
                    try:
                        out = f.result()
                    except BaseException as e:
                        if failure is None:  # requests in flight still finish and are kept; no new ones
                            failure = e
                            self._abort.set()
                            for p in pending:
                                p.cancel()
                        continue
                    if out is not None:
                        done_batch += [self._finish(r.id, out, stop, stop_regex) for r in futures[f]]
                size = max(1, self.gen_cfg.batch_size)
                while len(done_batch) >= size or (done_batch and (failure or not pending)):
                    yield done_batch[:size]
                    done_batch = done_batch[size:]
            if failure is not None:
                raise failure
        finally:  # also when the consumer stops early: cancel queued requests, stop retrying
            self._abort.set()
            pool.shutdown(wait=True, cancel_futures=True)


def _first_choice(r):
    choices = getattr(r, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise _BadReply(f"no choices in {str(r)[:200]!r}")
    return choices[0]


def _short(x, n: int = 200) -> str:
    s = " ".join(str(x).split())
    return s if len(s) <= n else s[:n] + "..."
