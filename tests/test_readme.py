"""
README.md runs as written: every ```python block in a fresh process, and the lab workflow's ```bash block on the
real faces of ``../shared``; each must print the ```text block that follows it ("It prints:").

Figures are compared exactly; a number that differs by at most 1 (one digit flipped among a few hundred test digits on
another CPU) passes with a warning naming it, anything else fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from conftest import SHARED

REPOSITORY = Path(__file__).resolve().parents[1]
README = REPOSITORY / "README.md"
#: Largest difference between a printed number and the README's that passes (with a warning).
TOLERANCE = 1.0
#: Seconds a block may run (each trains the digits BadNet: 10–60 s on 2 cores).
TIMEOUT = 600

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def readme_blocks() -> list[tuple[str, str, str, str | None]]:
    """
    :return: ``(section, language, code, expected output or None)`` for every fenced block of README.md; the expected
             output is the ```text block that follows the block with at most one line of prose between.
    """
    text = README.read_text(encoding="utf-8")
    found = list(_FENCE.finditer(text))
    blocks = []
    for i, match in enumerate(found):
        section = ([""] + re.findall(r"^## (.+)$", text[: match.start()], re.M))[-1]
        expected = None
        if i + 1 < len(found) and found[i + 1].group(1) == "text":
            between = text[match.end() : found[i + 1].start()].strip()
            if len(between.splitlines()) <= 1:
                expected = found[i + 1].group(2)
        blocks.append((section, match.group(1), match.group(2), expected))
    return blocks


PYTHON_BLOCKS = [(section, code, expected) for section, lang, code, expected in readme_blocks() if lang == "python"]


def compare_output(printed: str, expected: str, where: str) -> None:
    """
    Assert that ``printed`` is ``expected``: the same text, the same numbers (a difference of at most
    :data:`TOLERANCE` warns).
    """
    got, want = printed.strip().splitlines(), expected.strip().splitlines()
    assert len(got) == len(want), f"{where}: printed {len(got)} lines, the README shows {len(want)}:\n{printed}"
    for line, reference in zip(got, want):
        if line == reference:
            continue
        assert _NUMBER.sub("#", line) == _NUMBER.sub("#", reference), f"{where}: printed\n{line}\nREADME:\n{reference}"
        for a, b in zip(_NUMBER.findall(line), _NUMBER.findall(reference)):
            assert abs(float(a) - float(b)) <= TOLERANCE, f"{where}: printed\n{line}\nREADME:\n{reference}"
        warnings.warn(f"{where}: figures differ slightly from the README: printed {line!r}, README {reference!r}")


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPOSITORY), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_DETERMINISTIC_OPS", None)  # a user's shell: TensorFlow's default kernels, as the README's figures
    return env


def test_the_readme_has_its_snippets_and_their_outputs():
    sections = [section for section, _, _ in PYTHON_BLOCKS]
    assert len(PYTHON_BLOCKS) >= 4, sections
    missing = [section for section, _, expected in PYTHON_BLOCKS if expected is None]
    assert not missing, f"python blocks without the ```text block of what they print, in: {missing}"
    for section, code, _ in PYTHON_BLOCKS:
        compile(code, f"README.md ({section})", "exec")  # a syntax error fails here, at once


def test_the_comparison_can_fail():
    compare_output("B: clean 99.50 %\n", "B: clean 99.50 %\n", "same")
    with pytest.warns(UserWarning, match="differ slightly"):
        compare_output("B: clean 99.25 %\n", "B: clean 99.50 %\n", "close")
    for printed in ("B: clean 97.00 %\n", "B: dirty 99.50 %\n", "B: clean 99.50 %\nmore\n"):
        with pytest.raises(AssertionError):
            compare_output(printed, "B: clean 99.50 %\n", "different")


@pytest.mark.parametrize(
    "code, expected", [(code, expected) for _, code, expected in PYTHON_BLOCKS], ids=[s for s, _, _ in PYTHON_BLOCKS]
)
def test_python_snippet_runs_alone_and_prints_what_the_readme_shows(code, expected, tmp_path):
    """Each snippet in a fresh interpreter, in an empty directory that it must leave empty (temporary files only)."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    compare_output(done.stdout, expected or "", "README snippet")
    assert os.listdir(tmp_path) == [], "the snippet left files behind"


def test_the_lab_workflow_runs_as_written(tmp_path):
    """The lab section's commands, verbatim, from a clone's root with ``../shared`` beside it."""
    if not (SHARED / "data" / "ytface").is_dir() or not (SHARED / "models" / "csaw").is_dir():
        pytest.skip(f"../shared not found ({SHARED}): the lab workflow runs on its faces and DeepID weights")
    (block,) = [b for b in readme_blocks() if b[1] == "bash" and "art-prune make-h5" in b[2]]
    _, _, script, expected = block
    assert expected is not None, "the lab block is not followed by what it prints"
    root = tmp_path / "clone"
    root.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)
    bin_dir = tmp_path / "bin"  # art-prune as installed by pip, on this checkout's code
    bin_dir.mkdir()
    (bin_dir / "art-prune").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m art_pruning_defense.lab.cli "$@"\n')
    (bin_dir / "art-prune").chmod(0o755)
    env = {**_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", "-e", "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    compare_output(done.stdout, expected, "README lab workflow")
    closing = [line for line in done.stderr.splitlines() if line.startswith("art-prune: ")]
    assert len(closing) == script.count("\nart-prune ") + script.startswith("art-prune "), done.stderr
    assert closing[0].startswith("art-prune: wrote lab/valid.h5 (5 images of 55×47×3"), closing
    assert (root / "lab" / "repaired" / "goodnet_x4" / "goodnet.json").is_file()
