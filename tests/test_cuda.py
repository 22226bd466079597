"""The HF backend and training on CUDA. Runs where a GPU is present (we run it on a lent
GPU machine); elsewhere each test reports 'needs CUDA' as its skip reason."""

from __future__ import annotations

import json

import pytest
import torch

from s3ft.backends import GenRequest
from s3ft.backends.hf import HFBackend
from s3ft.config import GenerationConfig, ModelConfig, load_config
from s3ft.models import load_model, pick_dtype
from s3ft.pipeline import run_pipeline
from test_hf_decode import requests

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_auto_device_and_dtype_pick_the_gpu(tiny_model_dir):
    model = load_model(str(tiny_model_dir), ModelConfig())
    assert model.device.type == "cuda"
    assert model.dtype == pick_dtype("auto", "cuda") == torch.bfloat16


def test_batched_generation_matches_one_at_a_time_on_cuda(tiny_model_dir):
    reqs = [GenRequest(str(i), [{"role": "user", "content": "x " * (i * 3 + 1) + "?"}]) for i in range(12)]
    cfg = ModelConfig(dtype="float32")
    model = load_model(str(tiny_model_dir), cfg)
    one = HFBackend(str(tiny_model_dir), cfg, GenerationConfig(batch_size=1), model=model)
    many = HFBackend(str(tiny_model_dir), cfg, GenerationConfig(batch_size=12), model=model)
    a = {g.id: g.text for b in one.generate(reqs, 16) for g in b}
    b = {g.id: g.text for b in many.generate(reqs, 16) for g in b}
    # Padded batches change float rounding; on random weights a near-tie may flip a token.
    assert sum(a[k] == b[k] for k in a) >= 10


def test_pipeline_trains_and_evaluates_on_cuda(run_overrides, tmp_path):
    cfg = load_config(None, [o for o in run_overrides if not o.startswith("model.dtype")] +
                      ["model.dtype=auto", "methods=[sft,s3ft]"])
    summary = run_pipeline(cfg)
    assert set(summary["in_domain"]) == {"base", "sft", "s3ft"}
    meta = json.loads((tmp_path / "run" / "adapters" / "s3ft" / "train_meta.json").read_text())
    assert meta["done"] and meta["stats"]["steps"] > 0


def _texts(backend, reqs, max_new=16) -> dict[str, str]:
    return {g.id: g.text for b in backend.generate(reqs, max_new) for g in b}


def test_cuda_graph_decoding_gives_the_eager_paths_text(varied_model_dir):
    reqs = requests(12, system="You are a careful solver. Think step by step and state the answer at the end.")
    cfg = ModelConfig(dtype="float32")
    model = load_model(str(varied_model_dir), cfg)
    backend = HFBackend(str(varied_model_dir), cfg, GenerationConfig(batch_size=8, cuda_graphs=True), model=model)
    assert backend.static_decode
    graphs = _texts(backend, reqs)
    dec = backend._static
    assert dec.captures >= 1 and dec.replays > dec.captures
    dec.graphs = False  # the same static step, launched eagerly: replay must not change a number
    assert _texts(backend, reqs) == graphs
    backend.static_decode = False  # transformers' generate with the growing cache
    plain = _texts(backend, reqs)
    # Different kernels (a fixed-length masked cache vs a growing one) round differently; on random
    # weights a near-tie may flip a token in a row.
    assert sum(plain[k] == graphs[k] for k in plain) >= len(plain) - 1


def test_bucketed_batch_sizes_reuse_captured_graphs(varied_model_dir):
    backend = HFBackend(str(varied_model_dir), ModelConfig(dtype="float32"),
                        GenerationConfig(batch_size=4, cuda_graphs=True))
    backend.eos_ids = []  # every row runs to the budget: 4 rows together, then the last 2 in slots 0 and 1
    _texts(backend, requests(6), 24)
    dec = backend._static
    assert sorted(dec.cuda_graphs) == [2, 4] and dec.captures == 2
    assert dec.replays >= 5 * dec.captures
    _texts(backend, requests(6)[::-1], 20)  # a second call that fits: same buffers, same graphs
    assert backend._static is dec and dec.captures == 2
