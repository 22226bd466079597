"""Label masking: the prompt is ignored by the loss, the completion and end-of-turn are trained."""

import pytest

from s3ft.config import ModelConfig, TrainConfig
from s3ft.train import build_trainer


def test_prompt_masked_completion_and_eos_labelled(tiny_model_dir, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "What is 2 + 3?"}], "target": "2 + 3 = 5.\n#### 5"},
            {"messages": [{"role": "user", "content": "And 4 x 4, step by step?"}], "target": "4 x 4 = 16.\n#### 16"}]
    trainer = build_trainer(str(tiny_model_dir), ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32"),
                            TrainConfig(batch_size=2, max_length=256), rows, tmp_path)
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for i, row in enumerate(rows):
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        prompt = tok.apply_chat_template(row["messages"], add_generation_prompt=True, tokenize=True)
        prompt = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
        assert ids[:len(prompt)] == prompt  # same rendering as generation
        assert all(label == -100 for label in labels[:len(prompt)])
        trained = [t for t, lab in zip(ids, labels) if lab != -100]
        text = tok.decode(trained)
        assert text.startswith(row["target"])
        assert tok.eos_token_id in trained  # the model learns to stop
        # padding (the shorter row) is not trained
        n_real = int(batch["attention_mask"][i].sum())
        assert all(label == -100 for label in labels[n_real:])


def test_lora_defaults_reach_peft(tiny_model_dir, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "1+1?"}], "target": "#### 2"}]
    trainer = build_trainer(str(tiny_model_dir), ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32"),
                            TrainConfig(), rows, tmp_path)
    peft_cfg = trainer.model.peft_config["default"]
    assert (peft_cfg.r, peft_cfg.lora_alpha, peft_cfg.lora_dropout) == (8, 16, 0.1)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in trainer.model.parameters()) / 2


def test_gradient_checkpointing_and_packing_reach_trainer(tiny_model_dir, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"{i}+1?"}], "target": f"#### {i + 1}"} for i in range(4)]
    model_cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32")
    plain = build_trainer(str(tiny_model_dir), model_cfg, TrainConfig(batch_size=2, max_length=64), rows, tmp_path / "a")
    assert not plain.args.gradient_checkpointing and not plain.args.packing
    trainer = build_trainer(str(tiny_model_dir), model_cfg,
                            TrainConfig(batch_size=2, max_length=512, gradient_checkpointing=True, packing=True),
                            rows, tmp_path / "b", max_steps=1)
    assert trainer.args.gradient_checkpointing and trainer.args.packing
    assert len(trainer.train_dataset) < len(rows)  # packed: several short rows share one sequence
    trainer.train()  # a step with checkpointed activations runs
    assert trainer.model.base_model.model.is_gradient_checkpointing


class KilledWhileSaving(Exception):
    pass


def test_checkpoint_half_written_when_killed_is_removed_and_training_resumes_from_the_last_complete(
        tiny_model_dir, tmp_path, monkeypatch, capsys):
    from trl import SFTTrainer
    from s3ft.train import train
    rows = [{"messages": [{"role": "user", "content": f"{i} + 1?"}], "target": f"#### {i + 1}"} for i in range(16)]
    model_cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32")
    cfg = TrainConfig(batch_size=4, epochs=1, max_length=64, save_steps=1)  # 4 steps, a checkpoint after each
    ckpts = tmp_path / "adapter" / "checkpoints"
    real_save = SFTTrainer._save_checkpoint

    def save_then_die_at_step_3(self, *args, **kwargs):
        if self.state.global_step == 3:  # what a kill -9 early in the save leaves: the folder, a README
            (ckpts / "checkpoint-3").mkdir()
            (ckpts / "checkpoint-3" / "README.md").write_text("half written")
            raise KilledWhileSaving
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "_save_checkpoint", save_then_die_at_step_3)
    with pytest.raises(KilledWhileSaving):
        train(str(tiny_model_dir), model_cfg, cfg, rows, tmp_path / "adapter")
    assert sorted(p.name for p in ckpts.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    monkeypatch.setattr(SFTTrainer, "_save_checkpoint", real_save)
    capsys.readouterr()

    stats = train(str(tiny_model_dir), model_cfg, cfg, rows, tmp_path / "adapter")
    log = capsys.readouterr().err
    assert "checkpoint-3: incomplete checkpoint (killed while saving): removed" in log
    assert f"resuming training from {ckpts / 'checkpoint-2'}" in log
    assert stats["steps"] == 4 and (tmp_path / "adapter" / "model" / "adapter_model.safetensors").exists()
