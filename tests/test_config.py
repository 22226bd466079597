import pytest

from s3ft.config import load_config
from s3ft.errors import S3FTError


def test_defaults_match_the_s3ft_paper():
    cfg = load_config()
    assert (cfg.train.lora_r, cfg.train.lora_alpha, cfg.train.lora_dropout) == (8, 16, 0.1)
    assert cfg.generation.temperature == 0.0


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  task: gsm8k\n  train_limit: 10\ntrain:\n  lora_r: 4\n")
    cfg = load_config(p, ["train.lora_r=16", "methods=[sft, ssr]", "data.task_args={n_train: 5}"])
    assert cfg.data.task == "gsm8k" and cfg.data.train_limit == 10
    assert cfg.train.lora_r == 16 and cfg.methods == ["sft", "ssr"]
    assert cfg.data.task_args == {"n_train": 5}


@pytest.mark.parametrize("overrides,match", [
    (["train.lora_rank=4"], r"--set: train: unknown key 'lora_rank'"),
    (["nope=1"], r"--set: unknown key 'nope'"),
    (["train.lora_r=abc"], r"train.lora_r: expected int"),
    (["train=3"], r"train: expected a mapping"),
    (["methods=[sft, magic]"], r"unknown strategy 'magic'"),
    (["noequals"], r"expected key=value"),
])
def test_bad_overrides(overrides, match):
    with pytest.raises(S3FTError, match=match):
        load_config(None, overrides)


def test_bad_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("data:\n  task: gsm8k\n   oops: [\n")
    with pytest.raises(S3FTError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(p)


def test_unknown_key_in_file_names_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("generation:\n  max_tokens: 5\n")
    with pytest.raises(S3FTError, match=r"c.yaml: generation: unknown key 'max_tokens'"):
        load_config(p)


def test_data_dir_from_env(monkeypatch):
    monkeypatch.setenv("S3FT_DATA_DIR", "/some/where")
    assert load_config().data.data_dir == "/some/where"
