"""Code-judge throughput: MBPP's own reference solutions through s3ft's `code` judge.

Each response is the gold target (the reference code in a ```python block), judged
against the row's test asserts exactly as `s3ft run` judges a model's answer: task
loader -> `judge_generations` -> `code` judge -> one sandboxed child process per program.
References should all pass, so the pass rate doubles as a check of the sandbox; any
failure is listed with its reason.

    python bench/judge_speed.py --data-dir ../shared/data --json bench/results/judge_speed.json
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

# Running MBPP's reference code is the point of this benchmark, so opt in here.
os.environ["S3FT_ALLOW_CODE_EXEC"] = "1"

from emit import emit, peak_rss_mib  # noqa: E402
from s3ft.config import DataConfig  # noqa: E402
from s3ft.judges import get_judge, judge_generations  # noqa: E402
from s3ft.judges.code_exec import isolation_in_force  # noqa: E402
from s3ft.tasks import get_task  # noqa: E402


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=os.environ.get("S3FT_DATA_DIR"),
                    help="hub-schema JSONL directory holding mbpp/ (or env S3FT_DATA_DIR)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=None, help="at most this many rows (seeded sample)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    task = get_task(DataConfig(task="mbpp", data_dir=args.data_dir, test_limit=args.n, train_limit=args.n))
    examples = task.load(args.split)
    judge = get_judge("code", workers=args.workers)
    isolation = isolation_in_force()  # probe the sandbox now, outside the timed region
    gens = [{"id": e.id, "text": e.gold, "finish_reason": "stop"} for e in examples]
    t0 = time.perf_counter()
    verdicts = judge_generations(judge, [e.to_dict() for e in examples], gens)
    wall = time.perf_counter() - t0

    failures = [{"id": e.id, "reason": v.reason} for e, v in zip(examples, verdicts) if not v.correct]
    n = len(examples)
    result = {
        "split": args.split, "programs": n, "workers": judge.workers, "isolation": isolation,
        "timeout_s": judge.timeout_s, "wall_s": round(wall, 2), "programs_per_s": round(n / wall, 1),
        "passed": n - len(failures), "pass_rate": round((n - len(failures)) / n, 4),
        "failure_kinds": dict(Counter(f["reason"].split(":")[0] for f in failures).most_common()),
        "failures": failures,
    }
    return emit(result, f"code judge: {result['programs_per_s']} programs/s with {judge.workers} workers "
                        f"({isolation}); {result['passed']}/{n} reference solutions pass", args.json)


if __name__ == "__main__":
    main()
