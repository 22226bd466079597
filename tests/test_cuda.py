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
