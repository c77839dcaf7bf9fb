"""
Output directories (issue #13): ``--force``/``overwrite=True`` replaces only what art-prune wrote, never the current
directory, a directory holding the run's inputs, or a symbolic link; one run at a time per destination; leftovers of
killed runs are removed; the replacement is atomic; permissions follow the umask.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from art_pruning_defense import _io
from art_pruning_defense._io import MARKER_FILE, atomic_directory, atomic_file, check_output_dir, write_marker
from art_pruning_defense.lab.cli import main


def _write(directory: str, name: str = "result.txt", text: str = "new") -> None:
    with atomic_file(os.path.join(directory, name)) as tmp:
        Path(tmp).write_text(text)


def _previous_output(path: Path, kind: str = "repair") -> Path:
    path.mkdir()
    write_marker(str(path), kind)
    (path / "result.txt").write_text("old")
    return path


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_new_directory_is_marked_and_replaced_only_with_overwrite(tmp_path):
    out = tmp_path / "out"
    with atomic_directory(str(out), kind="repair") as tmp:
        _write(tmp)
    assert sorted(os.listdir(out)) == [MARKER_FILE, "result.txt"] and _io.has_marker(str(out))
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        with atomic_directory(str(out)):
            pass
    with atomic_directory(str(out), overwrite=True) as tmp:
        _write(tmp, text="newer")
    assert (out / "result.txt").read_text() == "newer" and os.listdir(tmp_path) == ["out"]


def test_directory_without_marker_is_never_replaced(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("the user's work")
    with pytest.raises(ValueError, match=r"was not written by art-prune \(it has no \.art-prune-output marker\)"):
        with atomic_directory(str(mine), overwrite=True):
            pytest.fail("must be refused before the work")
    (tmp_path / "model.keras").write_bytes(b"x")
    (tmp_path / "valid.h5").write_bytes(b"x")
    code = main(
        [
            "repair",
            "--model",
            str(tmp_path / "model.keras"),
            "--valid",
            str(tmp_path / "valid.h5"),
            "--out",
            str(mine),
            "--force",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "was not written by art-prune" in err
    assert os.listdir(mine) == ["thesis.tex"]
    (mine / MARKER_FILE).write_text("not json")  # a marker that is not art-prune's
    with pytest.raises(ValueError, match="was not written by art-prune"):
        check_output_dir(str(mine), overwrite=True)


def test_current_directory_is_never_replaced(tmp_path, monkeypatch, capsys):
    out = _previous_output(tmp_path / "work")
    (out / "model.keras").write_bytes(b"x")
    (out / "valid.h5").write_bytes(b"x")
    monkeypatch.chdir(out)
    code = main(["repair", "--model", "model.keras", "--valid", "valid.h5", "--out", ".", "--force"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and ". is the current directory; --force never replaces it" in err
    inner = out / "inner"
    inner.mkdir()
    monkeypatch.chdir(inner)
    with pytest.raises(ValueError, match="contains the current directory"):
        check_output_dir("..", overwrite=True)
    assert sorted(os.listdir(out)) == sorted([MARKER_FILE, "result.txt", "model.keras", "valid.h5", "inner"])


def test_directory_holding_the_inputs_is_never_replaced(tmp_path, capsys):
    out = _previous_output(tmp_path / "run")
    (out / "model.keras").write_bytes(b"the model")
    (tmp_path / "valid.h5").write_bytes(b"x")
    argv = ["repair", "--model", str(out / "model.keras"), "--valid", str(tmp_path / "valid.h5"), "--out", str(out)]
    assert main(argv + ["--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(r"holds the input .*model\.keras; --force never replaces", err)
    with pytest.raises(ValueError, match="holds the input"):
        check_output_dir(str(tmp_path), overwrite=True, inputs=[str(out / "model.keras")])  # a parent, unmarked too
    assert (out / "model.keras").read_bytes() == b"the model"


def test_symbolic_link_as_out_is_refused_and_kept(tmp_path, capsys):
    target = _previous_output(tmp_path / "target")
    link = tmp_path / "link"
    link.symlink_to(target)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    for path, state in ((link, "is a symbolic link"), (dangling, "is a dangling symbolic link")):
        for overwrite in (False, True):
            with pytest.raises(ValueError, match=state):
                with atomic_directory(str(path), overwrite=overwrite):
                    pytest.fail("must be refused before the work")
        assert main(["benchmark", "--out", str(path), "--force"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and state in err
        assert path.is_symlink()
    assert sorted(os.listdir(target)) == [MARKER_FILE, "result.txt"]


def test_out_parent_missing_not_a_directory_or_not_writable(tmp_path):
    with pytest.raises(FileNotFoundError, match="parent directory .* does not exist"):
        check_output_dir(str(tmp_path / "missing" / "out"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        check_output_dir(str(tmp_path / "file" / "out"))
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="is not writable"):
            check_output_dir(str(locked / "out"))


def test_second_run_on_the_same_out_fails_fast(tmp_path, capsys):
    out = tmp_path / "out"
    holder = os.open(tmp_path / ".out.lock", os.O_RDWR | os.O_CREAT)  # another run holds the lock
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        start = time.monotonic()
        with pytest.raises(BlockingIOError, match=r"Another art-prune run is writing .*out"):
            with atomic_directory(str(out)):
                pytest.fail("must be refused before the work")
        assert main(["benchmark", "--out", str(out)]) == 2
        assert time.monotonic() - start < 2.0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Another art-prune run is writing" in err
    finally:
        os.close(holder)
    assert not out.exists()
    with atomic_directory(str(out)) as tmp:  # free again
        _write(tmp)
    assert not (tmp_path / ".out.lock").exists()


def test_lock_is_taken_again_by_its_holder(tmp_path):
    out = tmp_path / "out"
    with _io.output_lock(str(out)):
        with atomic_directory(str(out)) as tmp:
            _write(tmp)
    assert out.is_dir() and os.listdir(tmp_path) == ["out"]


def test_leftovers_of_a_killed_run_are_removed(tmp_path):
    dead = tmp_path / f".out.tmp-{_dead_pid()}-abc123"
    dead.mkdir()
    (dead / "half.keras").write_bytes(b"half")
    alive = tmp_path / ".out.tmp-1-xyz"  # pid 1 lives: not ours to remove
    alive.mkdir()
    other = tmp_path / f".other.tmp-{_dead_pid()}-abc"  # another destination's
    other.mkdir()
    with atomic_directory(str(tmp_path / "out")) as tmp:
        _write(tmp)
    assert not dead.exists() and alive.exists() and other.exists()


def test_replacement_is_one_atomic_exchange(tmp_path, monkeypatch):
    out = _previous_output(tmp_path / "out")
    calls = []
    monkeypatch.setattr(os, "rename", lambda *a: calls.append(a) or pytest.fail("two renames on Linux"))
    exchanges = []
    original = _io._renameat2

    def spy(source, target, flags):
        exchanges.append(flags)
        return original(source, target, flags)

    monkeypatch.setattr(_io, "_renameat2", spy)
    with atomic_directory(str(out), overwrite=True) as tmp:
        _write(tmp, text="newer")
    assert exchanges == [_io._RENAME_EXCHANGE] and calls == []
    assert (out / "result.txt").read_text() == "newer" and os.listdir(tmp_path) == ["out"]


def test_fallback_without_renameat2_still_replaces(tmp_path, monkeypatch):
    out = _previous_output(tmp_path / "out")
    monkeypatch.setattr(_io, "_renameat2", lambda *a: False)
    with atomic_directory(str(out), overwrite=True) as tmp:
        _write(tmp, text="newer")
    assert (out / "result.txt").read_text() == "newer" and os.listdir(tmp_path) == ["out"]


@pytest.mark.parametrize("umask, directory, file", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_permissions_follow_the_umask(tmp_path, umask, directory, file):
    previous = os.umask(umask)
    try:
        with atomic_directory(str(tmp_path / "out")) as tmp:
            _write(tmp)
        with atomic_file(str(tmp_path / "single.txt")) as tmp:
            Path(tmp).write_text("x")
    finally:
        os.umask(previous)
    out = tmp_path / "out"
    assert stat.S_IMODE(out.stat().st_mode) == directory
    for path in (out / "result.txt", out / MARKER_FILE, tmp_path / "single.txt"):
        assert stat.S_IMODE(path.stat().st_mode) == file, path


def test_locked_out_fails_fast_from_the_command_line(tmp_path):
    """In a fresh process: the lock is checked before TensorFlow is imported (target 1 s; 2 s allowed)."""
    holder = os.open(tmp_path / ".out.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        start = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "art_pruning_defense.lab.cli", "benchmark", "--out", str(tmp_path / "out")],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        seconds = time.monotonic() - start
    finally:
        os.close(holder)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Another art-prune run" in done.stderr
    assert seconds <= 2.0, seconds
