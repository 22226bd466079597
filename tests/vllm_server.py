"""Serve a model directory through vLLM's OpenAI-compatible server for tests and benchmarks.

    with serve_vllm(model_dir, served_name="smollm2") as base_url:   # "http://127.0.0.1:PORT/v1"
        OpenAI(base_url=base_url, api_key="x").completions.create(model="smollm2", prompt="Hi")

The server is `python -m vllm.entrypoints.openai.api_server` (vLLM's CPU build on a CPU, `make test`
installs it) in its own process group, so stopping it also stops anything it spawned; it is always
stopped, even when the body raises or startup fails. Its settings on a CPU are those of s3ft's own
vLLM backend (src/s3ft/backends/vllm.py): eager mode (no compile at load) and a small, fixed KV
cache instead of vLLM's default of most of the machine's memory. Importable from bench/ via sys.path.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

KV_CACHE_BYTES = 256 << 20
"""KV cache: ~5k tokens of SmolLM2-135M at fp32, more than the tests' few short prompts need."""


def free_port() -> int:
    """A port that was free a moment ago (the kernel picks it; a race is possible but rare)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL it if anything in it lingers."""
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)  # the whole group: also the engine process vLLM may have started
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; give the rest of the group a moment, then make sure
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return


@contextmanager
def serve_vllm(model_dir: str | Path, served_name: str | None = None, port: int | None = None,
               max_model_len: int = 2048, dtype: str = "float32", startup_timeout_s: float = 300.0,
               python: str | None = None, extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """Start vLLM's server on `model_dir` (a HF model directory with its tokenizer), yield its OpenAI
    base URL (ending in /v1) once `/v1/models` answers, stop it.

    `served_name`: the model name requests use (default: the directory's name). Raises RuntimeError
    with the command and the tail of the server's log if it exits or is not ready in time.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"not a HF model directory (no config.json): {model_dir}")
    port = port or free_port()
    cmd = [python or sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", served_name or model_dir.name, "--host", "127.0.0.1", "--port", str(port),
           "--dtype", dtype, "--max-model-len", str(max_model_len), "--seed", "0",
           "--enforce-eager", "--kv-cache-memory-bytes", str(KV_CACHE_BYTES), *extra_args]
    env = dict(os.environ)
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # it would override --kv-cache-memory-bytes on a CPU
    # The engine runs in the server's process instead of a second one importing torch and vLLM again,
    # as in s3ft's vLLM backend (tens of seconds of start on a small CPU).
    env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    with serve_openai(cmd, port, f"vLLM server on {model_dir}", startup_timeout_s, env) as base:
        yield base


@contextmanager
def serve_openai(cmd: list[str], port: int, what: str, startup_timeout_s: float,
                 env: dict | None = None) -> Iterator[str]:
    """Run `cmd`, an OpenAI-compatible server listening on 127.0.0.1:`port`, in its own process group;
    yield its base URL once `/v1/models` answers; stop the group. Also the llama.cpp server's launcher
    (bench/llama_server.py). RuntimeError naming `what`, the command and the log's tail if the server
    exits or is not ready in time."""
    log = tempfile.NamedTemporaryFile("w+", prefix="openai-server-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)  # own process group: killpg stops it all
    base = f"http://127.0.0.1:{port}/v1"
    try:
        t0 = time.monotonic()
        while not _ready(f"{base}/models"):
            if proc.poll() is not None or time.monotonic() - t0 > startup_timeout_s:
                log.flush()
                tail = Path(log.name).read_text(errors="replace")[-4000:]
                why = f"exited with {proc.returncode}" if proc.poll() is not None else \
                    f"not ready after {startup_timeout_s:.0f}s"
                raise RuntimeError(f"{what} {why}; command: {' '.join(cmd)}\n"
                                   f"log {log.name} (last 4000 characters):\n{tail}")
            time.sleep(0.25)
        yield base
    finally:
        _stop(proc)
        log.close()
        try:
            os.unlink(log.name)
        except OSError:
            pass

if __name__ == "__main__":  # manual check: python tests/vllm_server.py MODEL_DIR
    t0 = time.monotonic()
    with serve_vllm(sys.argv[1]) as url:
        print(f"ready at {url} after {time.monotonic() - t0:.1f}s")
        with urllib.request.urlopen(f"{url}/models") as r:
            print(r.read().decode())
