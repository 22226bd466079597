"""Method `opsd` (on-policy self-distillation): the teacher sees the question and the gold answer and
scores the student's own samples; the divergence falls with training; config errors name file, line
and key; the adapter goes through evaluation, the forgetting meter, the summary and `s3ft compare`
like the other methods'."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from s3ft.artifacts import read_jsonl
from s3ft.cli import app
from s3ft.checks import load_checked_config as load_config
from s3ft.config import DataConfig, ModelConfig, TrainConfig
from s3ft.errors import S3FTError
from s3ft.methods.opsd import PAPER_TEMPLATE, OPSDConfig, select_rows, teacher_messages
from s3ft.pipeline import run_pipeline
from s3ft.tasks import get_task

GOLD = "2 + 3 = 5.\nThe answer is 5."


def _row(i: int, question: str, gold: str) -> dict:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]
    return {"id": f"r{i}", "messages": msgs, "teacher_messages": teacher_messages(msgs, gold, PAPER_TEMPLATE),
            "gold": gold}


def test_teacher_turn_holds_question_and_gold_keeps_system_prompt_and_literal_braces():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Put it in \\boxed{} {question}"}]
    out = teacher_messages(msgs, "x = {demonstration}", "Q: {question}\nA: {demonstration}\nYour turn.")
    assert out[0] == msgs[0] and out[1]["role"] == "user"
    assert out[1]["content"] == "Q: Put it in \\boxed{} {question}\nA: x = {demonstration}\nYour turn."
    with pytest.raises(S3FTError, match="must end with a user turn"):
        teacher_messages(msgs + [{"role": "assistant", "content": "a"}], "g", PAPER_TEMPLATE)


def test_each_task_has_a_teacher_template_and_the_config_overrides_it():
    arith = get_task(DataConfig(task="arithmetic", task_args={"n_train": 3, "n_test": 1}))
    train = arith.load("train")
    rows, stats = select_rows(arith, train, OPSDConfig())
    assert stats["target_mix"] == {"on-policy": 3} and stats["teacher_template"] == PAPER_TEMPLATE
    for r, e in zip(rows, train):
        assert r["messages"] == arith.messages(e) and r["gold"] == e.gold and r["source"] == "on-policy"
        assert e.gold in r["teacher_messages"][-1]["content"] and e.question in r["teacher_messages"][-1]["content"]
        assert e.gold not in r["messages"][-1]["content"]
    from s3ft.tasks.nq_open import NQOpen
    assert "short phrase" in NQOpen.opsd_teacher_template and NQOpen.opsd_teacher_template != PAPER_TEMPLATE
    rows, _ = select_rows(arith, train, OPSDConfig(teacher_template="{question} || {demonstration}"))
    assert rows[0]["teacher_messages"][-1]["content"] == f"{rows[0]['messages'][-1]['content']} || {train[0].gold}"


def test_a_step_samples_from_the_question_and_the_teacher_scores_that_completion_after_question_and_gold(
        tiny_model_dir, tmp_path, monkeypatch):
    from s3ft.methods.opsd.trainer import OPSDTrainer, train
    seen = []
    real = OPSDTrainer.compute_loss

    def spy(self, model, inputs, *args, **kwargs):
        seen.append(inputs)
        return real(self, model, inputs, *args, **kwargs)
    monkeypatch.setattr(OPSDTrainer, "compute_loss", spy)
    rows = [_row(0, "What is 2 + 3?", GOLD), _row(1, "And 4 x 4?", "4 x 4 = 16.\nThe answer is 16.")]
    stats = train(str(tiny_model_dir), ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32"),
                  TrainConfig(batch_size=4, epochs=1, max_length=256), OPSDConfig(generations_per_row=2,
                                                                                  max_completion_length=8),
                  rows, tmp_path / "adapter")
    assert stats["steps"] == 1 and stats["generations"] == 4 and stats["generations_per_row"] == 2
    assert 0 < stats["generated_tokens"] <= 4 * 8 and stats["sampling_s"] > 0
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = seen[0]
    completion, mask = batch["completion_ids"], batch["completion_mask"]
    n = completion.shape[1]
    assert torch.equal(batch["teacher_input_ids"][:, -n:], completion)  # the teacher scores the student's tokens
    assert torch.equal(batch["teacher_attention_mask"][:, -n:], mask)
    for i in range(4):  # rows come in groups of generations_per_row
        teacher_prompt = batch["teacher_input_ids"][i, :-n][batch["teacher_attention_mask"][i, :-n].bool()].tolist()
        student_prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()].tolist()
        row = next(r for r in rows if tok.apply_chat_template(r["messages"], add_generation_prompt=True,
                                                              tokenize=True, return_dict=True)["input_ids"]
                   == student_prompt)
        want = tok.apply_chat_template(row["teacher_messages"], add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"]
        assert teacher_prompt == want and row["gold"] in tok.decode(teacher_prompt)
        assert row["gold"] not in tok.decode(student_prompt)
    # the adapter: s3ft's LoRA settings, student weights only
    cfg = json.loads((tmp_path / "adapter/model/adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["lora_dropout"]) == (8, 16, 0.1)
    assert not (tmp_path / "adapter/model/teacher").exists()


def test_ema_teacher_adapter_is_left_out_of_the_saved_adapter(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from s3ft.methods.opsd.trainer import train
    stats = train(str(tiny_model_dir), ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32"),
                  TrainConfig(batch_size=1, epochs=1, max_length=128), OPSDConfig(teacher="ema", max_completion_length=4),
                  [_row(0, "What is 2 + 3?", GOLD)], tmp_path / "adapter")
    assert stats["steps"] == 1
    assert not (tmp_path / "adapter/model/teacher").exists()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter/model")
    assert list(model.peft_config) == ["default"]


def test_distillation_loss_on_the_first_samples_falls_after_a_few_steps(varied_model_dir, tmp_path):
    from s3ft.methods.opsd.trainer import build_trainer
    trainer = build_trainer(str(varied_model_dir), ModelConfig(name_or_path=str(varied_model_dir), dtype="float32"),
                            TrainConfig(batch_size=1, learning_rate=1e-2, lora_dropout=0.0, warmup_ratio=0.0,
                                        max_length=256, save_steps=100),
                            OPSDConfig(max_completion_length=8), [_row(0, "What is 2 + 3?", GOLD)], tmp_path,
                            max_steps=6)
    first = {}
    real = trainer.compute_loss

    def keep_first(model, inputs, *args, **kwargs):
        loss = real(model, inputs, *args, **kwargs)
        first.setdefault("inputs", inputs)
        first.setdefault("loss", loss.item())
        return loss
    trainer.compute_loss = keep_first
    trainer.train()
    trainer.model.eval()
    with torch.no_grad():
        after = real(trainer.model, first["inputs"]).item()
    assert first["loss"] > 1.0  # the teacher, shown the gold answer, disagrees with the student at first
    assert after < 0.95 * first["loss"]  # seeded: the same samples, the same steps, every run


@pytest.mark.parametrize("yaml_text,match", [
    ("opsd:\n  distillation_mode: magic\n", r"c.yaml:2: opsd.distillation_mode: expected one of full_logits"),
    ("opsd:\n  temperature: 0\n", r"c.yaml:2: opsd.temperature: must be > 0"),
    ("opsd:\n  teacher: frozen\n", r"c.yaml:2: opsd.teacher: expected one of base, ema, live"),
    ("opsd:\n  teacher_template: 'just {question}'\n", r"c.yaml:2: opsd.teacher_template: must contain {demonstration}"),
    ("methods: [sft, opsd]\ntrain:\n  batch_size: 4\nopsd:\n  generations_per_row: 3\n",
     r"c.yaml:5: opsd.generations_per_row: must divide train.batch_size x train.grad_accum \(4\)"),
    ("methods: [opsd]\nopsd:\n  max_completion_length: 2048\n", r"c.yaml:3: opsd.max_completion_length: must be below"),
    ("opsd:\n  generations: 4\n", r"c.yaml: opsd: unknown key 'generations'"),
])
def test_bad_opsd_settings_name_file_line_and_key(tmp_path, yaml_text, match):
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(S3FTError, match=match):
        load_config(p)


def test_opsd_runs_evaluates_and_compares_like_the_other_methods(run_overrides, tmp_path):
    overrides = [o for o in run_overrides if not o.startswith("forgetting.")] + [
        "methods=[sft, opsd]", "data.train_limit=8", "data.test_limit=4", "opsd.max_completion_length=8",
        "forgetting.text_limit=4", "forgetting.prompts_limit=2", "forgetting.max_new_tokens=8"]
    cfg = load_config(None, overrides)
    summary = run_pipeline(cfg)
    run = Path(cfg.output_dir)
    assert set(summary["in_domain"]) == {"base", "sft", "opsd"}
    rows = read_jsonl(run / "train_opsd.jsonl")
    assert len(rows) == 8 and all(r["source"] == "on-policy" and r["gold"] in r["teacher_messages"][-1]["content"]
                                  for r in rows)
    meta = json.loads((run / "adapters/opsd/train_meta.json").read_text())
    assert meta["done"] and meta["inputs"]["opsd"]["max_completion_length"] == 8
    assert (run / "adapters/opsd/model/adapter_config.json").is_file()
    assert json.loads((run / "eval/opsd.metrics.json").read_text())["n"] == 4
    cost = summary["cost"]["stages"]
    assert cost["train:opsd"]["generations"] == 8 * cfg.train.epochs and cost["train:opsd"]["generations_per_row"] == 1
    assert cost["train:sft"]["rows"] == cost["train:opsd"]["rows"] == 8
    report = (run / "report.md").read_text()
    assert "opsd sampled 8 completions" in report
    assert "| method | self | paraphrase/rewrite | on-policy | gold |" in report and "| opsd | 0 | 0 | 8 | 0 |" in report
    assert "opsd" in summary["forgetting"]["models"]
    # a changed opsd setting retrains only opsd: it is part of its fingerprint, not of sft's
    with pytest.raises(S3FTError, match="adapters/opsd: trained with different settings"):
        run_pipeline(load_config(None, overrides + ["opsd.temperature=0.7"]), until="train")

    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", str(run), "--no-general", "--audit-judge", "exact", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "compare.json").read_text())
    assert data["methods"] == ["base", "sft", "opsd"]
    block = data["per_run"]["run"]["opsd"]
    assert block["in_domain"]["n"] == 4 and block["target_mix"] == {"on-policy": 8}
    assert "drift/text_nll_delta" in block["measures"]
    assert "nll" not in block and (run / "nll_sft.jsonl").is_file()  # no fixed targets to score
    assert "| opsd |" in (out / "report.md").read_text()


def test_s3ft_tasks_lists_opsd_among_the_methods():
    result = CliRunner().invoke(app, ["tasks"])
    methods = next(line for line in result.output.splitlines() if line.startswith("methods:"))
    assert "opsd" in methods.split(":", 1)[1].replace(",", " ").split()


def test_opsd_plans_micro_batches_like_training_and_its_dry_run_prices_its_sampling(run_overrides, tiny_model_dir):
    """opsd's steps are planned like the other methods' (the same completions per step, split into
    micro-batches that fit the budget, whole logits of each completion counted), and `--dry-run`
    prices its sampling and its training on prompt + completion, not SFT on gold."""
    from s3ft.cost import estimate
    from s3ft.methods.opsd.trainer import opsd_memory_plan, step_shape
    from s3ft.models import load_tokenizer

    task = get_task(DataConfig(task="arithmetic", train_limit=8))
    opsd = OPSDConfig(generations_per_row=2, max_completion_length=64)
    rows, _ = select_rows(task, task.load("train"), opsd)
    tok = load_tokenizer(str(tiny_model_dir))
    model = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32")
    roomy = opsd_memory_plan(str(tiny_model_dir), model, TrainConfig(batch_size=4, memory_budget_gib=64), opsd, tok,
                             rows)
    assert (roomy.micro_batch, roomy.grad_accum) == (4, 1)
    budget = roomy.peak_gib - 0.5 * (roomy.predicted_gib["activations"] + roomy.predicted_gib["logits_chunk"])
    tight = opsd_memory_plan(str(tiny_model_dir), model, TrainConfig(batch_size=4, memory_budget_gib=budget), opsd,
                             tok, rows)
    assert tight.micro_batch < 4 and tight.micro_batch * tight.grad_accum == 4  # same completions per step
    assert tight.peak_gib <= budget
    assert step_shape(TrainConfig(batch_size=4), opsd, len(rows)) == (4, 1)

    cfg = load_config(None, run_overrides + ["methods=[sft, opsd]", "data.train_limit=8", "opsd.generations_per_row=2",
                                             "opsd.max_completion_length=64"])
    stages = estimate(cfg, probe=False)["stages"]
    sft, own = stages["train:sft"], stages["train:opsd"]
    assert own["rows"] == 2 * sft["rows"] == 16  # completions, not rows
    assert own["sampling"]["output_tokens_max"] == 16 * 64 * cfg.train.epochs
    from s3ft.memory import FULL_LOGITS_LIVE, GIB, meta_model_shape
    vocab = meta_model_shape(str(tiny_model_dir)).vocab  # whole logits of every completion in the micro-batch:
    assert own["memory"]["logits_chunk"] == round(FULL_LOGITS_LIVE * own["micro_batch"] * 64 * vocab * 4 / GIB, 3)
    assert own["tokens"] >= 16 * 64
