"""MBPP (hub `google-research-datasets/mbpp`, config `full`), or local hub-schema JSONL in
`<data_dir>/mbpp/{train,test}.jsonl` (fields task_id, text, code, test_list, test_setup_code,
challenge_test_list). Splits are the hub's, by task_id: prompt 1-10, test 11-510,
validation 511-600, train 601-974.

The prompt is the standard MBPP one (Austin et al., 2021; also the S3FT paper's): the task
text and its three test asserts, which also fix the function name. The gold target is the
reference code in a ```python block; the `code` judge runs code + test_setup_code + asserts
(test_setup_code after the code: where MBPP has one, it uses classes the solution defines;
the `challenge_test_list` is kept in meta but not run, as in the standard evaluation).
Needs `S3FT_ALLOW_CODE_EXEC=1` (see judges/code.py).
"""

from __future__ import annotations

from ._code import CodeTask, fenced
from . import Example, register_task
from .hub import load_rows

FIELDS = ("task_id", "text", "code", "test_list")


def mbpp_prompt(text: str, tests: list[str]) -> str:
    return (f"You are an expert Python programmer, and here is your task: {text.strip()} "
            "Your code should pass these tests:\n\n" + "\n".join(tests))


@register_task("mbpp")
class MBPP(CodeTask):
    def load_split(self, split: str) -> list[Example]:
        rows = load_rows(self.cfg.data_dir, "mbpp", split, hub=("google-research-datasets/mbpp", "full"),
                         fields=FIELDS)
        out = []
        for r in rows:
            tests = [t.replace("\r\n", "\n") for t in r["test_list"]]
            # MBPP's test_setup_code (tasks 367 and 927 only) builds inputs from classes the
            # solution defines, so it runs after the solution, just before the asserts; the
            # judge's own `test_setup_code` (run before the solution) stays empty.
            setup = (r.get("test_setup_code") or "").replace("\r\n", "\n").strip("\n")
            out.append(Example(
                id=f"mbpp-{r['task_id']}", question=mbpp_prompt(r["text"], tests), gold=fenced(r["code"]),
                meta={"task_id": r["task_id"], "test_setup_code": "", "tests": ([setup] if setup else []) + tests,
                      "challenge_tests": list(r.get("challenge_test_list") or [])}))
        return out
