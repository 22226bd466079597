import errno
import json
import os

from pathlib import Path

import pytest

from s3ft.artifacts import StageArtifact, StageCost, read_jsonl, write_json, write_jsonl
from s3ft.errors import S3FTError


def test_append_resume_and_partial_tail(tmp_path):
    path = tmp_path / "gen.jsonl"
    art = StageArtifact(path, {"model": "m"})
    art.append([{"id": 1, "text": "a"}, {"id": 2, "text": "b"}])
    # a crash in the middle of writing row 3 leaves a torn last line
    with path.open("a") as f:
        f.write('{"id": 3, "te')
    again = StageArtifact(path, {"model": "m"})
    assert sorted(again.rows) == [1, 2]
    assert again.pending([1, 2, 3]) == [3]
    again.append([{"id": 3, "text": "c"}, {"id": 1, "text": "dup"}])  # an id already on disk is not re-added
    assert [r["id"] for r in read_jsonl(path)] == [1, 2, 3]
    assert again.rows[1]["text"] == "a"


def test_changed_inputs_are_refused_then_recomputed_with_force(tmp_path):
    path = tmp_path / "gen.jsonl"
    StageArtifact(path, {"model": "m", "prompt": "v1"}).append([{"id": 1}])
    with pytest.raises(S3FTError, match="changed: prompt"):
        StageArtifact(path, {"model": "m", "prompt": "v2"})
    fresh = StageArtifact(path, {"model": "m", "prompt": "v2"}, force=True)
    assert fresh.rows == {} and not path.exists() or read_jsonl(path) == []


def test_done_flag(tmp_path):
    art = StageArtifact(tmp_path / "x.jsonl", {"a": 1})
    assert not art.done
    art.finish({"rows": 0})
    assert StageArtifact(tmp_path / "x.jsonl", {"a": 1}).done
    assert json.loads((tmp_path / "x.meta.json").read_text())["stats"] == {"rows": 0}


def test_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": 1}\nnot json\n{"id": 2}\n')
    with pytest.raises(S3FTError, match=r"bad.jsonl:2: invalid JSON"):
        read_jsonl(p)


def test_stage_cost_sums_work_and_keeps_the_highest_peak_memory_across_invocations_and_processes(tmp_path):
    path = tmp_path / "gen.jsonl"
    art = StageArtifact(path, {"model": "m"})
    art.append([{"id": 1}], StageCost(2.0, 10, 1, peak_rss_gib=3.5))
    again = StageArtifact(path, {"model": "m"})  # a resumed invocation, with a smaller peak
    again.append([{"id": 2}], StageCost(1.0, 5, 1, peak_rss_gib=1.25))
    assert StageArtifact(path, {"model": "m"}).cost == StageCost(3.0, 15, 2, peak_rss_gib=3.5)
    side_by_side = StageCost.parallel([StageCost(4.0, 1, 1, 2.0), StageCost(3.0, 2, 1, 6.0)])
    assert side_by_side == StageCost(4.0, 3, 2, peak_rss_gib=6.0)


def _disk_full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_is_one_line_naming_the_file_and_finished_rows_are_kept(tmp_path, monkeypatch):
    path = tmp_path / "answers.jsonl"
    art = StageArtifact(path, {"model": "m"})
    art.append([{"id": 1}, {"id": 2}])
    monkeypatch.setattr(os, "fsync", _disk_full)
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: _disk_full(None))
    for write in (lambda: art.append([{"id": 3}]), lambda: write_jsonl(tmp_path / "w.jsonl", [{"id": 1}]),
                  lambda: write_json(tmp_path / "w.json", {"a": 1})):
        with pytest.raises(S3FTError) as err:
            write()
        message = str(err.value)
        assert message.endswith("disk full (No space left on device) while writing; finished rows are kept: "
                                "free some space and run the same command again to resume"), message
        assert message.split(":")[0] in {str(path), str(tmp_path / "w.jsonl"), str(tmp_path / "w.json")}
        assert "\n" not in message
    assert not list(tmp_path.glob("*.tmp"))  # no half-written temp files left behind
    monkeypatch.undo()
    again = StageArtifact(path, {"model": "m"})
    assert again.pending([1, 2, 4]) == [4]  # the finished rows are still there
    other = OSError(errno.EACCES, "Permission denied")  # other errors are not dressed up as a full disk
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(other))
    with pytest.raises(OSError):
        again.append([{"id": 4}])


def test_a_full_disk_during_a_run_exits_with_one_line_and_the_rerun_resumes(run_overrides, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from s3ft.cli import app
    cfg = tmp_path / "c.yaml"
    cfg.write_text("")
    args = ["generate", str(cfg), *[x for o in run_overrides + ["generation.batch_size=2"] for x in ("--set", o)]]
    calls = []
    real = os.fsync

    def fills_up(fd):  # the disk fills after a few rows
        calls.append(fd)
        if len(calls) > 2:
            _disk_full(fd)
        real(fd)
    monkeypatch.setattr(os, "fsync", fills_up)
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    assert "disk full (No space left on device)" in result.output and "finished rows are kept" in result.output
    monkeypatch.setattr(os, "fsync", real)
    answers = next((tmp_path / "run").rglob("answers.jsonl"))
    kept = read_jsonl(answers)
    assert kept  # rows finished before the disk filled
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = read_jsonl(answers)
    assert [r["id"] for r in rows[:len(kept)]] == [r["id"] for r in kept]
    assert len({r["id"] for r in rows}) == len(rows) == 12
