"""Several processes: shards merge without loss or duplication; a 2-process `accelerate launch`
run writes the same artifacts as a single-process run; the example accelerate configs load."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from s3ft import distributed as dist
from s3ft.artifacts import read_jsonl
from s3ft.config import load_config
from s3ft.errors import S3FTError

ROOT = Path(__file__).parents[1]


# --- shard / merge logic, ranks simulated in one process ---------------------------------
@pytest.fixture
def ranks(monkeypatch):
    """`set(world, rank)` makes this process act as that rank; on_main runs only on rank 0."""
    me = {"world": 1, "rank": 0}
    monkeypatch.setattr(dist, "world_size", lambda: me["world"])
    monkeypatch.setattr(dist, "rank", lambda: me["rank"])
    monkeypatch.setattr(dist, "barrier", lambda: None)
    monkeypatch.setattr(dist, "on_main", lambda fn: fn() if me["rank"] == 0 else None)
    return lambda world, rank: me.update(world=world, rank=rank)


IDS = [f"r{i}" for i in range(7)]


def row(i):
    return {"id": i, "text": f"answer to {i}"}


def fill(path, world, rank, set_rank, upto=None):
    """Open the stage as `rank` and append (the first `upto` of) its strided share."""
    set_rank(world, rank)
    art, mine = dist.open_stage(path, {"x": 1}, force=False)
    todo = dist.shard([i for i in IDS if i not in art.rows])
    mine.append([row(i) for i in todo[:upto]])
    return art


def test_merge_rows_orders_and_rejects_loss_and_duplicates():
    assert [r["id"] for r in dist.merge_rows(IDS, [[row("r2"), row("r0")], [row(i) for i in IDS[3:] + ["r1"]]])] == IDS
    with pytest.raises(S3FTError, match=r"1 ids missing \(e.g. \['r6'\]\)"):
        dist.merge_rows(IDS, [[row(i) for i in IDS[:6]]])
    with pytest.raises(S3FTError, match="id 'r3' was produced twice"):
        dist.merge_rows(IDS, [[row(i) for i in IDS], [row("r3")]])
    with pytest.raises(S3FTError, match="1 unknown"):
        dist.merge_rows(IDS, [[row(i) for i in IDS + ["x9"]]])


def test_shards_survive_a_crash_and_merge_under_another_world_size(tmp_path, ranks):
    path = tmp_path / "answers.jsonl"
    # 2 ranks; both die part-way: rank 0 wrote r0 (of r0 r2 r4 r6), rank 1 r1 r3 (of r1 r3 r5)
    fill(path, 2, 0, ranks, upto=1)
    fill(path, 2, 1, ranks, upto=2)
    assert sorted(p.name for p in tmp_path.glob("answers.shard*.jsonl")) == ["answers.shard0of2.jsonl",
                                                                            "answers.shard1of2.jsonl"]
    # restarted with 3 ranks: rank 0 folds the leftovers in, then the rest is split three ways
    art = fill(path, 3, 0, ranks)
    assert set(art.rows) == {"r0", "r1", "r3"}  # finished rows are not recomputed
    assert dist.shard([i for i in IDS if i not in art.rows]) == ["r2", "r6"]
    for r in (1, 2):
        fill(path, 3, r, ranks)
    for r in (2, 1, 0):  # the main process merges last, after the barrier
        ranks(3, r)
        merged = dist.close_stage(art, IDS, lambda rows: {"rows": len(rows)})
    assert [r["id"] for r in read_jsonl(path)] == IDS and merged.done
    assert json.loads(path.with_name("answers.meta.json").read_text())["stats"] == {"rows": 7}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl", "answers.meta.json"]


def test_a_lost_shard_row_is_an_error_not_a_silent_gap(tmp_path, ranks):
    path = tmp_path / "answers.jsonl"
    art = fill(path, 2, 0, ranks)
    fill(path, 2, 1, ranks, upto=2)  # rank 1 "finished" without r5
    ranks(2, 0)
    with pytest.raises(S3FTError, match=r"1 ids missing \(e.g. \['r5'\]\)"):
        dist.close_stage(art, IDS, lambda rows: {})


def test_one_process_writes_no_shards(tmp_path, ranks):
    art, mine = dist.open_stage(tmp_path / "a.jsonl", {"x": 1}, force=False)
    assert mine is art
    mine.append([row(i) for i in IDS])
    dist.close_stage(art, IDS, lambda rows: {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "a.meta.json"]


# --- a real 2-process run vs a single-process run -----------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ARTIFACTS = ["data/train.jsonl", "answers.jsonl", "answers_verdicts.jsonl", "paraphrases.jsonl",
             "paraphrases_verdicts.jsonl", "train_s3ft.jsonl", "eval/base.jsonl", "eval/base_verdicts.jsonl",
             "eval/s3ft.jsonl", "eval/s3ft_verdicts.jsonl"]


def by_id(path: Path) -> dict:
    rows = read_jsonl(path)
    assert len({r["id"] for r in rows}) == len(rows), f"{path}: duplicate ids"
    return {r["id"]: r for r in rows}


@pytest.fixture(scope="module")
def chatty_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """conftest's tiny Llama with larger random weights: its greedy text differs from row to row
    (with the default init every row gets the same newlines) and has no near-ties to flip."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      initializer_range=0.5, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    out = tmp_path_factory.mktemp("chatty")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_two_processes_match_one(chatty_model_dir, tmp_path):
    import torch
    from s3ft.pipeline import run_pipeline
    # Per-row results must not depend on how rows are batched or split: batch_size=1 (no padding).
    # learning_rate=0 keeps the adapter an exact no-op, since DDP's 2x1-row steps cannot reproduce
    # one process's 2-row steps bit for bit; training still runs, syncs and saves under DDP.
    overrides = [f"model.name_or_path={chatty_model_dir}", "model.dtype=float32",
                 "data.task=arithmetic", "data.train_limit=7", "data.test_limit=5", "methods=[s3ft]",
                  "generation.max_new_tokens=6", "generation.batch_size=1", "train.epochs=1",
                  "train.batch_size=1", "train.max_length=256", "train.learning_rate=0.0", "train.save_steps=100"]

    one = tmp_path / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the launched ranks (OMP_NUM_THREADS=1): same float rounding
    try:
        run_pipeline(load_config(None, overrides + [f"output_dir={one}"]))
    finally:
        torch.set_num_threads(threads)

    two = tmp_path / "two"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("")
    # `accelerate launch --cpu` starts a single process (several need mpirun); --multi_gpu starts
    # them through torchrun and s3ft joins them over gloo when no GPU is visible.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "s3ft.cli", "run", str(cfg)]
    cmd += [x for o in overrides + [f"output_dir={two}"] for x in ("--set", o)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]

    for name in ARTIFACTS:  # one process writes rows as batches finish; merged files are in request order
        assert by_id(two / name) == by_id(one / name), name
        meta = name.replace(".jsonl", ".meta.json")
        if (one / meta).exists():  # same fingerprint and stats (not cost): resumable by either kind of run
            same = [{k: v for k, v in json.loads((d / meta).read_text()).items() if k != "cost"} for d in (one, two)]
            assert same[0] == same[1], meta
    texts = [r["text"] for r in read_jsonl(two / "answers.jsonl")]
    assert len(set(texts)) == len(texts) == 7  # a row landing on the wrong id would show
    assert not list(two.rglob("*.shard*")), "shards are deleted once merged"
    meta = json.loads((two / "adapters/s3ft/train_meta.json").read_text())
    assert meta["done"] and meta["stats"]["steps"] == 4  # 7 rows, 1 per rank and step, 2 ranks
    assert (two / "adapters/s3ft/model/adapter_model.safetensors").exists()
    summary = json.loads((two / "summary.json").read_text())
    assert summary["in_domain_n"] == {"base": 5, "s3ft": 5}
    # the cost table counts every rank's rows once
    assert summary["cost"]["stages"]["generate:answers"]["rows"] == 7


# --- example accelerate configs -------------------------------------------------------------
@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero3"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser
    path = ROOT / "configs" / "accelerate" / f"{name}.yaml"
    cfg = load_config_from_file(str(path))  # unknown top-level keys fail here
    options = {a.dest for a in launch_command_parser()._actions}
    nested = {**cfg.fsdp_config, **cfg.deepspeed_config}
    assert set(nested) <= options, set(nested) - options  # keys `accelerate launch` would not apply
    assert f"--config_file configs/accelerate/{name}.yaml -m s3ft.cli run" in path.read_text()
    if name == "fsdp":  # LoRA: PEFT's wrap policy needs flat params; rank>0 must load real weights
        assert cfg.fsdp_config["fsdp_use_orig_params"] is False
        assert cfg.fsdp_config["fsdp_cpu_ram_efficient_loading"] is False
    if name == "deepspeed_zero3":
        assert cfg.deepspeed_config["zero_stage"] == 3 and cfg.deepspeed_config["zero3_save_16bit_model"]
        assert "gradient_accumulation_steps" not in cfg.deepspeed_config  # "auto": from train.grad_accum
