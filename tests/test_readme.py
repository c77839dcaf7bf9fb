"""
README.md and the documentation pages (docs/*.md) run as written: every ```python block in a fresh process, and the
lab workflow's ```bash block on the real faces of ``../shared``; each must print the ```text block that follows it
("It prints:"). Every other ``art-prune`` command shown must at least be a valid command line.

Figures are compared exactly; a number that differs by at most 1 (one digit flipped among a few hundred test digits on
another CPU) passes with a warning naming it, anything else fails.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import pytest

from conftest import SHARED

REPOSITORY = Path(__file__).resolve().parents[1]
README = REPOSITORY / "README.md"
#: The pages whose blocks run: the README, then the documentation's Markdown pages.
DOCUMENTS = [README, *sorted((REPOSITORY / "docs").glob("*.md"))]
#: Largest difference between a printed number and the page's that passes (with a warning).
TOLERANCE = 1.0
#: Seconds a block may run (each trains the digits BadNet: 10–60 s on 2 cores).
TIMEOUT = 600
#: What TensorFlow, absl and ART print on stderr when nothing silences them (C++ log lines, absl's preamble,
#: ART's warning), none of which may appear after ``art_pruning_defense.lab.quiet()``.
_NOISE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|absl::InitializeLog|PyTorch not found|oneDNN custom operations", re.M)

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class Block(NamedTuple):
    """One fenced block: where it is, its language, its text and the ```text block of what it prints (or None)."""

    where: str
    lang: str
    code: str
    expected: str | None


def document_blocks(path: Path) -> list[Block]:
    """
    :return: Every fenced block of the Markdown file ``path``, named ``<file> / <section>`` (the ``#`` or ``##``
             heading it is under); the expected output is the ```text block that follows the block with at most one line of prose
             between.
    """
    text = path.read_text(encoding="utf-8")
    found = list(_FENCE.finditer(text))
    blocks = []
    for i, match in enumerate(found):
        before = _FENCE.sub("", text[: match.start()])  # headings, not the comments of earlier blocks
        section = ([""] + re.findall(r"^##? (.+)$", before, re.M))[-1]
        expected = None
        if i + 1 < len(found) and found[i + 1].group(1) == "text":
            between = text[match.end() : found[i + 1].start()].strip()
            if len(between.splitlines()) <= 1:
                expected = found[i + 1].group(2)
        blocks.append(Block(f"{path.name} / {section}", match.group(1), match.group(2), expected))
    return blocks


ALL_BLOCKS = [block for path in DOCUMENTS for block in document_blocks(path)]


def _python_blocks() -> list[Block]:
    """The python blocks, each run once: a block shown on two pages (the README's example) runs under both names."""
    unique: dict[tuple[str, str | None], Block] = {}
    for block in ALL_BLOCKS:
        if block.lang == "python":
            key = (block.code, block.expected)
            first = unique.get(key)
            unique[key] = block if first is None else first._replace(where=f"{first.where} = {block.where}")
    return list(unique.values())


PYTHON_BLOCKS = _python_blocks()


def compare_output(printed: str, expected: str, where: str) -> None:
    """
    Assert that ``printed`` is ``expected``: the same text, the same numbers (a difference of at most
    :data:`TOLERANCE` warns).
    """
    got, want = printed.strip().splitlines(), expected.strip().splitlines()
    assert len(got) == len(want), f"{where}: printed {len(got)} lines, the page shows {len(want)}:\n{printed}"
    for line, reference in zip(got, want):
        if line == reference:
            continue
        assert _NUMBER.sub("#", line) == _NUMBER.sub("#", reference), f"{where}: printed\n{line}\npage:\n{reference}"
        for a, b in zip(_NUMBER.findall(line), _NUMBER.findall(reference)):
            assert abs(float(a) - float(b)) <= TOLERANCE, f"{where}: printed\n{line}\npage:\n{reference}"
        warnings.warn(f"{where}: figures differ slightly from the page: printed {line!r}, page {reference!r}")


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPOSITORY), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_DETERMINISTIC_OPS", None)  # a user's shell: TensorFlow's default kernels, as the pages' figures
    return env


def test_the_pages_have_their_snippets_and_their_outputs():
    names = [block.where for block in PYTHON_BLOCKS]
    # The README's example, the six examples of the guide's sections, quiet scripts and your own model.
    assert len(PYTHON_BLOCKS) >= 8, names
    assert any(block.where.startswith("README.md") for block in PYTHON_BLOCKS), names
    missing = [block.where for block in PYTHON_BLOCKS if block.expected is None]
    assert not missing, f"python blocks without the ```text block of what they print, in: {missing}"
    for block in PYTHON_BLOCKS:
        compile(block.code, block.where, "exec")  # a syntax error fails here, at once


def test_the_comparison_can_fail():
    compare_output("B: clean 99.50 %\n", "B: clean 99.50 %\n", "same")
    with pytest.warns(UserWarning, match="differ slightly"):
        compare_output("B: clean 99.25 %\n", "B: clean 99.50 %\n", "close")
    for printed in ("B: clean 97.00 %\n", "B: dirty 99.50 %\n", "B: clean 99.50 %\nmore\n"):
        with pytest.raises(AssertionError):
            compare_output(printed, "B: clean 99.50 %\n", "different")


def test_the_noise_pattern_matches_what_tensorflow_and_art_print():
    """The check of quiet scripts below can fail: these are lines TensorFlow 2.21 and ART 1.20 print unsilenced."""
    for line in (
        "I0000 00:00:1796662763.094534    4076 port.cc:153] oneDNN custom operations are on.",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        '  warnings.warn("PyTorch not found. Not importing DeepZ or Interval Bound Propagation functionality")',
    ):
        assert _NOISE.search(line), line
    assert not _NOISE.search("art-prune: done in 34.1 s (nothing written)")


#: Snippets run at once: two fresh interpreters side by side (each is mostly one busy thread: imports, small batches).
SNIPPETS_AT_ONCE = 2


def _run_snippet(block: Block, cwd: Path) -> subprocess.CompletedProcess:
    env = _env()
    if "quiet()" in block.code:
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-c", block.code], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


@pytest.fixture(scope="module")
def snippet_runs(request, tmp_path_factory):
    """
    Every selected snippet started in its own empty directory when the first snippet test begins,
    :data:`SNIPPETS_AT_ONCE` at a time: each test below waits for its own snippet's process and checks it (the
    processes are as independent as when run one after another; only the wall time is shared).
    """
    from concurrent.futures import ThreadPoolExecutor

    selected = [
        item.callspec.params["block"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_python_snippet_runs_alone_and_prints_what_the_page_shows"
    ]
    pool = ThreadPoolExecutor(max_workers=SNIPPETS_AT_ONCE)
    runs = {}
    for i, block in enumerate(selected):
        cwd = tmp_path_factory.mktemp(f"snippet{i}")
        runs[block] = (cwd, pool.submit(_run_snippet, block, cwd))
    yield runs
    for _, future in runs.values():
        future.cancel()
    pool.shutdown(wait=True)


@pytest.mark.parametrize(
    "block", PYTHON_BLOCKS, ids=[block.where.replace(" ", "_") for block in PYTHON_BLOCKS]
)
def test_python_snippet_runs_alone_and_prints_what_the_page_shows(block, snippet_runs):
    """
    Each snippet in a fresh interpreter, in an empty directory that it must leave empty (temporary files only). A
    snippet that calls ``quiet()`` runs without ``TF_CPP_MIN_LOG_LEVEL`` set, and must leave stderr free of
    TensorFlow's, absl's and ART's start-up messages.
    """
    quiet = "quiet()" in block.code
    cwd, future = snippet_runs[block]
    done = future.result()  # raises subprocess.TimeoutExpired after TIMEOUT seconds, as subprocess.run did here
    assert done.returncode == 0, done.stderr[-3000:]
    compare_output(done.stdout, block.expected or "", block.where)
    assert os.listdir(cwd) == [], "the snippet left files behind"
    if quiet:
        noise = [line for line in done.stderr.splitlines() if _NOISE.search(line)]
        assert not noise, f"{block.where}: quiet() let through:\n" + "\n".join(noise)


def _lab_block() -> Block:
    (block,) = [b for b in ALL_BLOCKS if b.lang == "bash" and "art-prune make-h5" in b.code and b.expected]
    return block


def test_the_lab_workflow_runs_as_written(tmp_path):
    """The lab workflow's commands, verbatim, from a clone's root with ``../shared`` beside it."""
    if not (SHARED / "data" / "ytface").is_dir() or not (SHARED / "models" / "csaw").is_dir():
        pytest.skip(f"../shared not found ({SHARED}): the lab workflow runs on its faces and DeepID weights")
    block = _lab_block()
    script = block.code
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
    compare_output(done.stdout, block.expected, f"{block.where} (lab workflow)")
    closing = [line for line in done.stderr.splitlines() if line.startswith("art-prune: ")]
    assert len(closing) == script.count("\nart-prune ") + script.startswith("art-prune "), done.stderr
    assert closing[0].startswith("art-prune: wrote lab/valid.h5 (5 images of 55×47×3"), closing
    assert (root / "lab" / "repaired" / "goodnet_x4" / "goodnet.json").is_file()


def _commands() -> list[tuple[str, list[str]]]:
    """Every ``art-prune`` command of the pages' bash blocks, continuation lines joined and comments dropped."""
    commands = []
    for block in ALL_BLOCKS:
        if block.lang != "bash":
            continue
        for line in block.code.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["art-prune"]:
                commands.append((block.where, words[1:]))
    return commands


def test_every_command_shown_is_a_valid_command_line():
    """The commands that do not run here (the README's, the benchmark's) parse as ``art-prune`` parses them."""
    from art_pruning_defense.lab.cli import build_parser

    commands = _commands()
    assert any(where.startswith("README.md") for where, _ in commands), commands
    for where, argv in commands:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:  # argparse has printed why on stderr
            pytest.fail(f"{where}: art-prune {shlex.join(argv)} is not a valid command line")
        assert args.command == argv[0], (where, argv)
