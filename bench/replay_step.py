"""Seconds per optimizer step with and without self-generated replay (`train.replay`), same rows and seed.

The demo's model and training settings (SmolLM2-135M, batch 4, fp32 on CPU), its gold arithmetic rows,
and replay samples the base model draws here through the HF backend at the replay's settings. Each side
trains `--steps` optimizer steps, `--repeats` times, the sides alternating; the first step of each training
is a warm-up and is not counted.

    python bench/replay_step.py --steps 6 --repeats 2 --replay-batch 4 --replay-tokens 128
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

from s3ft.backends import Sampling
from s3ft.backends.hf import HFBackend
from s3ft.config import load_config
from s3ft.models import load_tokenizer, materialize
from s3ft.plan import gold_rows, replay_stage
from s3ft.replay import ReplaySet, replay_messages
from s3ft.tasks import get_task
from s3ft.train import build_trainer

DEMO = Path(__file__).resolve().parents[1] / "src" / "s3ft" / "configs" / "demo.yaml"


class StepTimes(TrainerCallback):
    def __init__(self):
        self.begin, self.times = 0.0, []

    def on_step_begin(self, *a, **k):
        self.begin = time.perf_counter()

    def on_step_end(self, *a, **k):
        self.times.append(time.perf_counter() - self.begin)


def samples(path: str, cfg) -> ReplaySet:
    """The base model's replay samples, drawn as the pipeline draws them."""
    stage = replay_stage(cfg.train.replay, cfg.generation.seed)
    backend = HFBackend(path, cfg.model, cfg.generation)
    sampler = Sampling(backend, **stage.sampling_backend_args)
    gens = [g for batch in sampler.generate(stage.requests, stage.max_new_tokens) for g in batch]
    backend.close()
    return ReplaySet(replay_messages(cfg.train.replay), [g.text for g in gens], "bench")


def seconds_per_step(path: str, cfg, rows: list[dict], replay: ReplaySet | None, steps: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(path, cfg.model, cfg.train, rows, Path(tmp), max_steps=steps, replay=replay)
        timer = StepTimes()
        trainer.add_callback(timer)
        trainer.train()
    return timer.times[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--replay-batch", type=int, default=4)
    ap.add_argument("--replay-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2, help="trainings per side, alternating (load drifts)")
    a = ap.parse_args()
    cfg = load_config(DEMO, ["train.save_steps=100000", "train.replay.weight=1", "train.replay.samples=8",
                             f"train.replay.batch_size={a.replay_batch}",
                             f"train.replay.max_new_tokens={a.replay_tokens}"])
    path = materialize(cfg.model)
    task = get_task(cfg.data)
    rows = gold_rows(task, task.load("train"))[:cfg.train.batch_size * a.steps]
    replay = samples(path, cfg)
    tokens = sum(len(ids) - start for ids, start in replay.encoded(load_tokenizer(path), cfg.train.max_length))
    print(f"replay samples: {len(replay.texts)}, {tokens} response tokens")
    times: dict[str, list[float]] = {"without replay": [], "with replay": []}
    for _ in range(a.repeats):
        for name, r in (("without replay", None), ("with replay", replay)):
            times[name] += seconds_per_step(path, cfg, rows, r, a.steps)
    for name, t in times.items():
        print(f"{name}: {statistics.median(t):.2f} s per step (median of {len(t)}: "
              f"{', '.join(f'{x:.2f}' for x in t)})")


if __name__ == "__main__":
    main()
