"""Serve a GGUF model through llama.cpp's OpenAI-compatible server, for the generation benchmark.

    with serve_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", alias="smollm2") as base_url:   # "http://127.0.0.1:PORT/v1"
        OpenAI(base_url=base_url, api_key="x").completions.create(model="smollm2", prompt="Hi")

The server is `python -m llama_cpp.server` from `llama-cpp-python[server]`, which no extra installs
(it compiles llama.cpp, ~17 minutes on 2 cores): `pip install 'llama-cpp-python[server]'` to run
this side. It runs in its own process group, so stopping it also stops anything it spawned; it is
always stopped, even when the body raises or startup times out.
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
    """SIGTERM the process group, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def serve_gguf(path: str | Path, port: int | None = None, n_ctx: int = 2048, n_threads: int = 2,
               alias: str | None = None, startup_timeout_s: float = 120.0, python: str | None = None,
               extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """Start llama.cpp's server on `path`, yield its OpenAI base URL (ending in /v1), stop it.

    `alias`: the model name the server reports (default: the file's stem); requests may name
    any model, a single-model llama.cpp server answers with the one it has.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    port = port or free_port()
    cmd = [python or sys.executable, "-m", "llama_cpp.server", "--model", str(path),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
           "--n_threads", str(n_threads), "--n_threads_batch", str(n_threads),
           "--model_alias", alias or path.stem, *extra_args]
    log = tempfile.NamedTemporaryFile("w+", prefix="llama-server-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)  # own process group: killpg stops it all
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not _ready(f"{base}/models"):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = Path(log.name).read_text(errors="replace")[-3000:]
                why = f"exited with {proc.returncode}" if proc.poll() is not None else \
                    f"not ready after {startup_timeout_s:.0f}s"
                raise RuntimeError(f"llama.cpp server on {path.name} {why}; command: {' '.join(cmd)}\n"
                                   f"log {log.name}:\n{tail}")
            time.sleep(0.25)
        yield base
    finally:
        _stop(proc)
        log.close()
        try:
            os.unlink(log.name)
        except OSError:
            pass


if __name__ == "__main__":  # manual check: python bench/llama_server.py FILE.gguf
    with serve_gguf(sys.argv[1]) as url:
        print("ready at", url)
        with urllib.request.urlopen(f"{url}/models") as r:
            print(r.read().decode())
