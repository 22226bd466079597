"""Load a split from a local hub-schema JSONL mirror, or from the hub."""

from __future__ import annotations

from pathlib import Path

from ..artifacts import iter_jsonl
from ..errors import S3FTError


def read_rows(path: Path, fields: tuple[str, ...] = ()) -> list[dict]:
    """All rows of a (possibly gzipped) JSONL file; a row missing a field is an error naming file and line."""
    rows = []
    for lineno, row in enumerate(iter_jsonl(path), 1):
        for f in fields:
            if f not in row:
                raise S3FTError(f"{path}:{lineno}: missing field '{f}'")
        rows.append(row)
    return rows


def load_rows(data_dir: str | None, name: str, split: str, hub: tuple[str, str | None],
              fields: tuple[str, ...] = ()) -> list[dict]:
    if data_dir:
        path = Path(data_dir) / name / f"{split}.jsonl"
        if not path.exists():
            raise S3FTError(f"{path}: not found (data.data_dir={data_dir})")
        return read_rows(path, fields)
    try:
        import datasets
        ds = datasets.load_dataset(hub[0], hub[1], split=split)
    except Exception as e:
        raise S3FTError(f"could not load {hub[0]} ({split}) from the hub: {e}; "
                        "offline, pass --data-dir / S3FT_DATA_DIR with a local copy") from None
    return list(ds)
