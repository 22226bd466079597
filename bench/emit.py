"""The ending every benchmark shares: print the figures, a one-line summary, and write JSON."""

from __future__ import annotations

import json
import resource
from pathlib import Path


def peak_rss_mib() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def emit(result: dict, summary: str, json_path: Path | None) -> dict:
    print(json.dumps(result, indent=2))
    print(summary)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result
