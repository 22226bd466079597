"""Several processes (`accelerate launch` / `torchrun`): split generation and judging, merge the rows.

Each rank takes every world_size-th pending request and appends its rows to its own resumable
shard next to the stage's file (`answers.shard1of4.jsonl`). After a barrier the main process
merges the shards into the ordinary artifact (same name and format as a single-process run,
rows in request order, every id exactly once or an error) and deletes them; all ranks then
read the merged file. Shards a crash left behind are folded back in when the stage is next
opened, whatever the world size, so finished rows are never recomputed.

With one process none of this runs and torch.distributed is never initialised.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
from pathlib import Path
from typing import Callable

from .artifacts import StageArtifact, StageCost, iter_jsonl, recorded_cost, write_jsonl
from .errors import S3FTError


def world_size() -> int:
    # Set by torchrun (which `accelerate launch` uses) or mpirun: readable without a process group.
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        if os.environ.get(name):
            return int(os.environ[name])
    return 1


def state():
    """accelerate's process state; the first call joins the process group (nccl on GPUs, gloo on CPUs)."""
    import torch
    from accelerate import PartialState
    _leave_group_at_exit()
    # Without cpu=True accelerate sees no distributed setup on a machine without GPUs.
    return PartialState(cpu=not torch.cuda.is_available())


@functools.cache
def _leave_group_at_exit() -> None:
    def leave():
        import torch.distributed as td
        if td.is_available() and td.is_initialized():
            td.destroy_process_group()
    atexit.register(leave)  # exiting with a live gloo group aborts the process


def rank() -> int:
    return state().process_index if world_size() > 1 else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        state().wait_for_everyone()


def on_main(fn: Callable):
    """Run `fn()` on the main process only; every rank returns its result or raises its error
    (so a failure there stops all ranks instead of leaving them at the next barrier)."""
    if world_size() == 1:
        return fn()
    from accelerate.utils import broadcast_object_list
    box, err = [None], None
    if is_main():
        try:
            box = [("ok", fn())]
        except Exception as e:  # sent as text: not every exception pickles
            box, err = [("error", f"{type(e).__name__}: {e}")], e
    broadcast_object_list(box, from_process=0)
    if err is not None:
        raise err
    kind, value = box[0]
    if kind == "error":
        raise S3FTError(f"main process failed: {value}")
    return value


def gather(obj) -> list:
    """`obj` from every rank, in rank order."""
    if world_size() == 1:
        return [obj]
    from accelerate.utils import gather_object
    return gather_object([obj])


def shard(items: list) -> list:
    """This rank's share: every world_size-th item (strided, so long and short rows spread evenly)."""
    n = world_size()
    return items if n == 1 else items[rank()::n]


def shard_path(path: Path, rank: int, world: int) -> Path:
    return path.with_name(f"{path.stem}.shard{rank}of{world}{path.suffix}")


def _shard_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.stem}.shard*of*{path.suffix}"))


def merge_rows(ids: list, parts: list[list[dict]]) -> list[dict]:
    """Rows of all parts in `ids` order; an id missing, unknown or found twice is an error."""
    by_id: dict = {}
    for part in parts:
        for row in part:
            if row["id"] in by_id:
                raise S3FTError(f"merging shards: id {row['id']!r} was produced twice")
            by_id[row["id"]] = row
    missing = [i for i in ids if i not in by_id]
    unknown = sorted(set(by_id) - set(ids), key=str)
    if missing or unknown:
        raise S3FTError(f"merging shards: {len(missing)} ids missing (e.g. {missing[:3]}), "
                        f"{len(unknown)} unknown (e.g. {unknown[:3]})")
    return [by_id[i] for i in ids]


def _fold_leftover_shards(art: StageArtifact) -> None:
    """Move the rows (and cost) of shards a crashed run left behind into `art` (main process only)."""
    costs = []
    for p in _shard_files(art.path):
        meta = p.with_name(p.stem + ".meta.json")
        try:
            inputs = json.loads(meta.read_text(encoding="utf-8"))["inputs"]
        except (OSError, ValueError, KeyError):
            inputs = None
        if inputs and inputs.get("stage") == art.fingerprint:  # else made with other settings: dropped
            shard = StageArtifact(p, inputs)
            art.append(shard.rows.values())  # fsynced before the shard goes
            costs.append(shard.cost)
        p.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
    if costs:
        art.add_cost(StageCost.parallel(costs))


def open_stage(path: Path, inputs: dict, force: bool) -> tuple[StageArtifact, StageArtifact]:
    """The stage's artifact and the one this rank appends to (the same object in one process)."""
    if world_size() == 1:
        art = StageArtifact(path, inputs, force=force)
        return art, art

    def check():  # stale settings are reported (or reset with --force) once, by the main process
        _fold_leftover_shards(StageArtifact(path, inputs, force=force))

    on_main(check)
    art = StageArtifact(path, inputs)  # read-only now: its sidecar matches
    mine = StageArtifact(shard_path(path, rank(), world_size()),
                         {"stage": art.fingerprint, "rank": rank(), "world_size": world_size()})
    return art, mine


def close_stage(art: StageArtifact, ids: list, stats: Callable[[dict], dict]) -> StageArtifact:
    """Mark the stage done; with several processes the main one first merges every shard into it."""
    if world_size() == 1:
        art.finish(stats(art.rows))
        return art
    barrier()  # every shard is complete on disk

    def merge():
        merged = StageArtifact(art.path, art.inputs)
        shards = [shard_path(art.path, r, world_size()) for r in range(world_size())]
        rows = merge_rows(ids, [list(merged.rows.values())] + [list(iter_jsonl(p)) for p in shards if p.exists()])
        write_jsonl(art.path, rows)
        merged = StageArtifact(art.path, art.inputs)
        merged.add_cost(StageCost.parallel(recorded_cost(p) for p in shards))
        merged.finish(stats(merged.rows))
        for p in shards:
            p.unlink(missing_ok=True)
            p.with_name(p.stem + ".meta.json").unlink(missing_ok=True)

    on_main(merge)
    return StageArtifact(art.path, art.inputs)
