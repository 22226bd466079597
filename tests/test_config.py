import json

import pytest

from s3ft.checks import load_checked_config as load_config
from s3ft.config import SFT_ARGS_NOT_FINGERPRINTED, SFT_ARGS_REFUSED, to_dict
from s3ft.errors import S3FTError


def test_defaults_match_the_s3ft_paper():
    cfg = load_config()
    assert (cfg.train.lora_r, cfg.train.lora_alpha, cfg.train.lora_dropout) == (8, 16, 0.1)
    assert cfg.generation.temperature == 0.0


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  task: arithmetic\n  train_limit: 10\ntrain:\n  lora_r: 4\n")
    cfg = load_config(p, ["train.lora_r=16", "methods=[sft, ssr]", "data.task_args={n_train: 5}"])
    assert cfg.data.task == "arithmetic" and cfg.data.train_limit == 10
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


def test_a_directory_or_an_empty_file_as_config_is_a_one_line_error_naming_it(tmp_path):
    with pytest.raises(S3FTError) as err:
        load_config(tmp_path)
    assert str(err.value) == f"{tmp_path}: is a directory, not a config file"
    for text in ("", "\n# only a comment\n"):
        p = tmp_path / "empty.yaml"
        p.write_text(text)
        with pytest.raises(S3FTError) as err:
            load_config(p)  # never the full defaults by accident
        assert str(err.value).startswith(f"{p}: empty config file") and "\n" not in str(err.value)
        assert load_config(p, ["data.train_limit=3"]).data.train_limit == 3  # settings given with --set
    p.write_bytes(b"data: \xff\xfe\n")
    with pytest.raises(S3FTError, match=f"^{p}: cannot read the config file"):
        load_config(p)


def test_empty_config_through_the_cli_is_one_line_and_non_zero(tmp_path):
    from typer.testing import CliRunner

    from s3ft.cli import app
    p = tmp_path / "empty.yaml"
    p.write_text("")
    for target in (p, tmp_path):
        result = CliRunner().invoke(app, ["run", str(target)])
        assert result.exit_code != 0 and "Traceback" not in result.output, result.output
        assert str(target) in result.output


def test_unknown_key_in_file_names_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("generation:\n  max_tokens: 5\n")
    with pytest.raises(S3FTError, match=r"c.yaml: generation: unknown key 'max_tokens'"):
        load_config(p)


def test_data_dir_from_env(monkeypatch):
    monkeypatch.setenv("S3FT_DATA_DIR", "/some/where")
    assert load_config().data.data_dir == "/some/where"


def test_sft_args_pass_through_to_the_config_as_written(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  sft_args:\n    report_to: [tensorboard]\n    weight_decay: 0.01\n")
    cfg = load_config(p, ["train.sft_args.lr_scheduler_type=linear"])
    assert cfg.train.sft_args == {"report_to": ["tensorboard"], "weight_decay": 0.01, "lr_scheduler_type": "linear"}


def test_unknown_sft_args_key_is_a_one_line_error_naming_it(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  sft_args:\n    wieght_decay: 0.01\n")
    with pytest.raises(S3FTError) as err:
        load_config(p)
    assert str(err.value).startswith(f"{p}: train.sft_args.wieght_decay: not a field of trl's SFTConfig (trl ")
    assert str(err.value).endswith("(did you mean 'weight_decay'?)") and "\n" not in str(err.value)
    with pytest.raises(S3FTError, match=r"^--set: train\.sft_args\.no_such_option: not a field of trl's SFTConfig"):
        load_config(None, ["train.sft_args.no_such_option=1"])


@pytest.mark.parametrize("key,reason", [
    ("output_dir", "where resuming looks for them"),
    ("completion_only_loss", "the prompt is masked"),
    ("seed", "use train.seed"),
    ("data_seed", "use train.seed"),
    ("num_train_epochs", "use train.epochs"),
    ("learning_rate", "use train.learning_rate"),
    ("save_strategy", "so that a killed run resumes"),
    ("hub_token", "set HF_TOKEN instead"),
])
def test_sft_args_that_s3ft_sets_itself_are_refused_with_the_reason(key, reason):
    with pytest.raises(S3FTError) as err:
        load_config(None, [f"train.sft_args.{key}=1"])
    assert str(err.value).startswith(f"--set: train.sft_args.{key}: set by s3ft: ") and reason in str(err.value)


def test_every_refused_sft_args_key_is_a_field_of_sft_config():
    import dataclasses

    from trl import SFTConfig
    fields = {f.name for f in dataclasses.fields(SFTConfig)}
    # Names other supported versions use: warmup_ratio (transformers < 5); activation_checkpointing (the
    # TRL releases that renamed gradient_checkpointing; train.py passes whichever the installed one has).
    older_names = {"warmup_ratio", "activation_checkpointing"}
    assert set(SFT_ARGS_REFUSED) - older_names | set(SFT_ARGS_NOT_FINGERPRINTED) <= fields  # no typo in either list
    assert not set(SFT_ARGS_REFUSED) & set(SFT_ARGS_NOT_FINGERPRINTED)


def test_set_into_task_args_sets_one_key_and_keeps_the_others(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  task: jsonl\n  task_args:\n    train: a.jsonl\n    test: b.jsonl\n    judge: math\n")
    cfg = load_config(p, ["data.task_args.canonical_answer=true", "data.task_args.judge=qa"])
    assert cfg.data.task_args == {"train": "a.jsonl", "test": "b.jsonl", "judge": "qa", "canonical_answer": True}


def test_a_task_args_typo_is_a_one_line_error_naming_file_line_key_and_the_known_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  task: gsm8k\n  task_args:\n    canonical_answers: true\n")
    with pytest.raises(S3FTError) as err:
        load_config(p)
    assert str(err.value) == (f"{p}:4: data.task_args.canonical_answers: not an option of task 'gsm8k' "
                              "(known: canonical_answer) (did you mean 'canonical_answer'?)")
    with pytest.raises(S3FTError, match=r"^--set: data.task_args.n_train: expected int, got 'many'$"):
        load_config(None, ["data.task_args.n_train=many"])


def test_relative_task_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    p = tmp_path / "cfg" / "c.yaml"
    p.write_text("data:\n  task: jsonl\n  task_args: {train: data/train.jsonl, test: data/test.jsonl}\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(p)
    assert cfg.data.base_dir == str(tmp_path / "cfg")
    from s3ft.tasks import get_task
    with pytest.raises(S3FTError) as err:
        get_task(cfg.data).load("train")
    # the key, the path it resolved, and the folder it resolved against
    assert str(err.value) == (f"data.task_args.train: {tmp_path}/cfg/data/train.jsonl: not found "
                              f"('data/train.jsonl' resolved against {tmp_path}/cfg)")
    # A run's config.json keeps the folder: loaded again from the run directory, the paths are the same.
    saved = tmp_path / "run" / "config.json"
    saved.parent.mkdir()
    saved.write_text(json.dumps(to_dict(cfg)))
    assert load_config(saved).data.base_dir == str(tmp_path / "cfg")


def test_where_the_config_lies_is_in_no_data_fingerprint(tmp_path):
    from s3ft.pipeline import Run, stage_data
    fps = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        p = tmp_path / folder / "c.yaml"
        p.write_text(f"output_dir: {tmp_path / folder / 'run'}\ndata: {{task: arithmetic, train_limit: 4, test_limit: 2}}\n")
        stage_data(Run(load_config(p)))
        fps.append(json.loads((tmp_path / folder / "run" / "data" / "train.meta.json").read_text())["fingerprint"])
    assert fps[0] == fps[1]


def test_a_variant_name_with_a_hyphen_or_a_space_is_an_error_naming_it():
    assert load_config(None, ["variant=+lr5x+replay"]).variant == "+lr5x+replay"
    for bad in ("+lr-5x", "a b"):
        with pytest.raises(S3FTError, match=r"^--set: variant: letters, digits, '\+', '\.' and '_' only"):
            load_config(None, [f"variant={bad}"])
