"""Every file a docstring or a doc page points to exists inside the repository.

Users clone medseg without the specification folder the developers work from, so a reference to
``../shared/...`` (or to any ``docs/*.md`` / ``benchmarks/*`` / ``src/...`` file that does not exist) is a dead
link for them.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.glob("src/medseg/**/*.py"), *ROOT.glob("src/medseg/**/*.yaml"), *ROOT.glob("docs/*.md"),
                  *ROOT.glob("benchmarks/*.py"), *ROOT.glob("benchmarks/*.md"), ROOT / "README.md",
                  ROOT / "ARCHITECTURE.md"])
# a path into the repository, as docs and docstrings write it: docs/x.md, benchmarks/y.py, src/medseg/z.py
REPO_PATH = re.compile(r"(?<![\w./-])((?:docs|benchmarks|src/medseg|scripts)/[\w./-]*\w\.(?:md|py|yaml|png))")


def _references(text: str) -> list[str]:
    return sorted(set(REPO_PATH.findall(text)))


def test_reference_pattern_finds_paths_and_the_check_can_fail() -> None:
    found = _references("see ``docs/ife.md``, section Scores, and `benchmarks/metrics_speed.py`; not xdocs/a.md")
    assert found == ["benchmarks/metrics_speed.py", "docs/ife.md"]
    assert not (ROOT / "docs/no_such_page.md").exists()


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_leaves_the_repository(source: Path) -> None:
    text = source.read_text(errors="replace")
    assert "shared/spec" not in text and "../shared/" not in text.replace("../shared/data", ""), (
        f"{source.relative_to(ROOT)} points to the developers' specification folder, which users do not have; "
        "write what the user needs into docs/ and point there")
    missing = [ref for ref in _references(text) if not (ROOT / ref).exists()]
    assert not missing, f"{source.relative_to(ROOT)} points to files that do not exist: {missing}"
