"""Specification of the docs: every relative link in README.md, docs/ and bench/README.md resolves (file
and heading anchor), the README keeps its two commands, and docs/python-api.md's examples run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link in a heading counts by its text
    text = text.replace("`", "").replace("*", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M):
        s = slug(m.group(1))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    return [m.group(1) for m in LINK.finditer(text)]


def test_slug_matches_github():
    assert slug("Best-of-k own answers (`generation.self_samples`)") == "best-of-k-own-answers-generationself_samples"
    assert slug("Engines, servers and several GPUs") == "engines-servers-and-several-gpus"
    assert slug("`s3ft.load_config`") == "s3ftload_config"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    broken = []
    for target in links(doc):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not checked offline
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading '#{anchor}' in {dest.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


def test_readme_keeps_its_two_commands_and_is_short():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo   # installs into .venv" in text and "make test   # installs into .venv" in text
    assert len(text.splitlines()) <= 200
    assert not re.search(r"\b(at|code of|commit) [0-9a-f]{7}\b", text), "the README dates nothing by commit"


def test_every_experiment_record_gives_date_command_commit_and_machine():
    records = [p for p in (ROOT / "docs" / "experiments").glob("*.md") if p.name != "README.md"]
    assert records
    index = (ROOT / "docs" / "experiments" / "README.md").read_text(encoding="utf-8")
    for p in records:
        assert re.match(r"\d{4}-\d{2}-\d{2}-", p.name), f"{p.name}: not named by its date"
        text = p.read_text(encoding="utf-8")
        for field in ("Command", "Commit", "Machine"):
            assert re.search(rf"\*\*{field}s?\b", text) or re.search(rf"\*\*Date and {field.lower()}", text), \
                f"{p.name}: no {field}"
        assert f"({p.name})" in index, f"{p.name}: not listed in docs/experiments/README.md"


def python_examples() -> list[str]:
    text = (ROOT / "docs" / "python-api.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def test_python_api_doc_has_runnable_examples_for_each_function():
    joined = "\n".join(python_examples())
    for call in ("s3ft.load_config(", "s3ft.select("):
        assert call in joined
    assert "s3ft.run(" in (ROOT / "docs" / "python-api.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("i", range(len(python_examples())))
def test_python_api_doc_example_runs(i):
    code = python_examples()[i]
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"example {i} of docs/python-api.md failed:\n{code}\n{result.stderr[-2000:]}"
