"""The documentation (Sphinx, docs/: the guide pages and the API reference) builds offline with warnings as errors, as
the README's command builds it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
#: The README's command, run from the repository root (the output directory is replaced by a temporary one here).
README_COMMAND = "python -m sphinx -W --keep-going -b html docs docs/_build/html"
#: The user-facing pages beside the API reference.
GUIDE_PAGES = ("guide", "lab", "benchmark", "internals", "performance", "safety", "performance-log")


def _sphinx(source: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("ART_PRUNE_DOCS_INTERSPHINX", None)  # offline: no intersphinx inventories
    args = README_COMMAND.split()[1:-2]
    return subprocess.run(
        [sys.executable, *args, str(source), str(out)],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_readme_gives_the_command():
    assert f"`{README_COMMAND}`" in (REPOSITORY / "README.md").read_text(encoding="utf-8")


def test_the_api_reference_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    done = _sphinx(REPOSITORY / "docs", tmp_path / "html")
    warnings = [line for line in done.stderr.splitlines() if re.search(r"WARNING|ERROR", line) and "docs" in line]
    assert done.returncode == 0 and not warnings, done.stderr[-4000:]
    html = tmp_path / "html"
    pages = {name: (html / f"{name}.html").read_text(encoding="utf-8") for name in ("api", "keras", "data")}
    for name in ("FinePruning.fit", "GoodNetClassifier.save", "FinePruningDetector.detect_poison", "SweepStep"):
        assert f'id="art_pruning_defense.{name}"' in pages["api"], name
    for name in ("masked_copy", "build_deepid", "find_prune_point", "fine_tune"):
        assert f'id="art_pruning_defense.keras.{name}"' in pages["keras"], name
    assert 'id="art_pruning_defense.lab.data.images_to_lab_h5"' in pages["data"]
    assert 'id="art_pruning_defense.lab.quiet"' in pages["api"]
    for name in GUIDE_PAGES:  # the README's former sections, as pages of the documentation (Markdown via myst-parser)
        assert (html / f"{name}.html").is_file(), name
    assert "Your own model" in (html / "guide.html").read_text(encoding="utf-8")


def test_a_docstring_error_fails_the_build(tmp_path):
    """-W turns a reST mistake into a failed build (so the test above can fail)."""
    pytest.importorskip("sphinx")
    source = tmp_path / "src"
    source.mkdir()
    (source / "conf.py").write_text("project = 'broken'\n")
    (source / "index.rst").write_text("Title\n=====\n\n:param x: unterminated `interpreted text\n\n* a\nb\n")
    done = _sphinx(source, tmp_path / "html")
    assert done.returncode != 0 and "WARNING" in done.stderr, done.stderr
