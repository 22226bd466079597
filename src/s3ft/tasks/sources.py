"""Where the `dataset` task reads rows from: a local file (JSONL, JSON, Parquet, CSV), a local
dataset folder (`save_to_disk` output, or a hub-style folder of data files that
`datasets.load_dataset` reads), a hub dataset id, or its offline mirror under `data.data_dir`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import iter_jsonl
from ..errors import S3FTError

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
BUILDERS = {".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class Source:
    """One split's source, resolved: what the config said and what it was found to be."""
    key: str
    """The option that names it, e.g. `data.task_args.train`."""
    value: str
    """As written."""
    split: str
    """The split to read from a dataset folder or hub id."""
    path: Path | None = None
    """The local file or folder it resolved to; None: a hub id."""
    base: Path | None = None
    """The folder a relative path resolved against."""

    def __str__(self) -> str:
        """How errors name it: the key and the path resolved (and against which folder), or the hub id."""
        if self.path is None:
            return f"{self.key}: hub dataset {self.value!r} (split {self.split!r}; no such path under {self.base})"
        against = f" (resolved against {self.base})" if not Path(self.value).expanduser().is_absolute() else ""
        return f"{self.key}: {self.path}{against}"


def resolve(key: str, value: str, split: str, base: Path, data_dir: str | None) -> Source:
    """A local path (relative ones against `base`), a mirror `<data_dir>/<name>/<split>.jsonl` of a hub
    id, or the hub id itself; a value that is none of these is an error naming key, path and base."""
    path = base / Path(value).expanduser()
    if path.exists():
        return Source(key, value, split, path, base)
    if HUB_ID.match(value) and not any(value.endswith(s) for s in (*BUILDERS, ".jsonl", ".gz")):
        for name in (value, value.split("/")[1]) if data_dir else ():
            mirror = Path(data_dir) / name / f"{split}.jsonl"
            if mirror.exists():
                return Source(key, value, split, mirror, Path(data_dir))
        return Source(key, value, split, base=base)
    raise S3FTError(f"{key}: {path}: not found ({value!r} resolved against {base})")


def read(src: Source, name: str | None, revision: str | None) -> list[dict]:
    """Every row of the source, in order."""
    if src.path is not None and src.path.is_file():
        suffix = "".join(src.path.suffixes[-2:]) if src.path.suffix == ".gz" else src.path.suffix
        if suffix in (".jsonl", ".jsonl.gz", ".ndjson"):
            try:
                return list(iter_jsonl(src.path))
            except S3FTError as e:  # "<file>:<line>: invalid JSON": add the option that names the file
                raise S3FTError(f"{src.key}: {e}") from None
        if suffix not in BUILDERS:
            raise S3FTError(f"{src}: unknown file type {suffix!r} (known: .jsonl, .jsonl.gz, .json, .parquet, .csv)")
        return _load(src, BUILDERS[suffix], data_files=str(src.path), split="train")
    if src.path is not None and any((src.path / f).exists() for f in ("state.json", "dataset_dict.json")):
        return _from_disk(src)
    target = str(src.path) if src.path is not None else src.value
    return _load(src, target, name=name, split=src.split, revision=None if src.path else revision)


def _load(src: Source, *args, **kwargs) -> list[dict]:
    import datasets  # heavy: only for the sources that need it
    try:
        return list(datasets.load_dataset(*args, **kwargs))
    except Exception as e:  # datasets raises many kinds (missing split, no network, bad file)
        msg = " ".join(str(e).split())[:300]
        raise S3FTError(f"{src}: could not load it with datasets.load_dataset: {type(e).__name__}: {msg}") from None


def _from_disk(src: Source) -> list[dict]:
    import datasets
    ds = datasets.load_from_disk(str(src.path))
    if isinstance(ds, datasets.DatasetDict):
        if src.split not in ds:
            raise S3FTError(f"{src}: no split {src.split!r} (splits: {', '.join(ds)})")
        ds = ds[src.split]
    return list(ds)
