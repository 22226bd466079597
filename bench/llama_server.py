"""Serve a GGUF model through llama.cpp's OpenAI-compatible server, for the generation benchmark.

    with serve_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", alias="smollm2") as base_url:   # "http://127.0.0.1:PORT/v1"
        OpenAI(base_url=base_url, api_key="x").completions.create(model="smollm2", prompt="Hi")

The server is `python -m llama_cpp.server` from `llama-cpp-python[server]`, which no extra installs
(it compiles llama.cpp, ~17 minutes on 2 cores): `pip install 'llama-cpp-python[server]'` to run
this side. It runs in its own process group, so stopping it also stops anything it spawned; it is
always stopped, even when the body raises or startup times out.
"""

from __future__ import annotations

import sys
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # one launcher for both servers
from vllm_server import free_port, serve_openai  # noqa: E402


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
    with serve_openai(cmd, port, f"llama.cpp server on {path.name}", startup_timeout_s) as base:
        yield base


if __name__ == "__main__":  # manual check: python bench/llama_server.py FILE.gguf
    with serve_gguf(sys.argv[1]) as url:
        print("ready at", url)
        with urllib.request.urlopen(f"{url}/models") as r:
            print(r.read().decode())
