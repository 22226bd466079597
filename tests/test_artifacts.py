import json

import pytest

from s3ft.artifacts import StageArtifact, StageCost, read_jsonl
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
