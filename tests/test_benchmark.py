"""The comparative benchmark: a smoke run on digits, and its inputs."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from art_pruning_defense.cli import main
from art_pruning_defense.comparison import BenchmarkConfig, load_npz_images, run_benchmark

KEYS = {"defence", "clean_accuracy", "attack_success_rate", "poison_detection_tpr", "poison_detection_fpr", "seconds"}


def test_smoke_run_on_digits_writes_the_table(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["benchmark", "--data", "digits", "--epochs", "12", "--out", str(out), "--quiet",
            "--defences", "none", "pruning", "fine-pruning", "spectral-signatures", "strip"]
    assert main(argv) == 0
    assert sorted(os.listdir(out)) == ["results.json", "results.md", "results.png"]
    rows = json.loads((out / "results.json").read_text())
    names = [row["defence"] for row in rows]
    assert names[0] == "no defence" and "fine-pruning GoodNet" in names and "STRIP" in names
    assert "spectral signatures" in names and "pruning X=4" in names
    for row in rows:
        assert KEYS <= set(row) and "error" not in row, row
        for key in KEYS - {"defence", "seconds"}:
            assert row[key] is None or 0.0 <= row[key] <= 100.0
        assert row["seconds"] > 0
    by_name = {row["defence"]: row for row in rows}
    assert by_name["no defence"]["attack_success_rate"] > 50
    assert by_name["no defence"]["poison_detection_tpr"] is None  # filters only
    assert by_name["spectral signatures"]["poison_detection_tpr"] is not None
    assert by_name["STRIP"]["poisoned_flagged"] is not None
    assert by_name["fine-pruning"]["attack_success_rate"] < by_name["no defence"]["attack_success_rate"]
    markdown = (out / "results.md").read_text()
    assert "`art-prune benchmark --data digits" in markdown or "`art-prune" in markdown
    assert "| fine-pruning GoodNet |" in markdown
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "| no defence |" in capsys.readouterr().out


def test_unknown_defence_is_refused():
    with pytest.raises(ValueError, match="Unknown defences"):
        run_benchmark(BenchmarkConfig(defences=["magic"]), verbose=False)


def test_npz_loader_scales_and_checks(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8), y_train=rng.integers(0, 3, 20),
             x_test=rng.integers(0, 256, (10, 8, 8), dtype=np.uint8), y_test=rng.integers(0, 3, 10))
    x_train, _, x_test, _ = load_npz_images(str(path))
    assert x_train.shape == (20, 8, 8, 1) and x_test.dtype == np.float32 and x_train.max() <= 1.0
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((3, 8, 8)), y_train=np.zeros(3))
    with pytest.raises(ValueError, match="x_test"):
        load_npz_images(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "flat.npz", x_train=np.zeros((3, 8)), y_train=np.zeros(3), x_test=np.zeros((3, 8)),
             y_test=np.zeros(3))
    with pytest.raises(ValueError, match="must hold images"):
        load_npz_images(str(tmp_path / "flat.npz"))
