"""What a user sees: the package's own progress bars only, no Keras epoch bars, ANSI codes or library noise, and one
closing line per command saying what was written and the wall time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

from art_pruning_defense.lab.cli import main
from art_pruning_defense.lab.data import write_lab_h5
from art_pruning_defense.keras import mnist_cnn

REPOSITORY = str(Path(__file__).resolve().parents[1])
#: Things Keras, TensorFlow or absl print that must not reach a user (epoch bars, C++ logs, ANSI escapes).
NOISE = re.compile(r"Epoch \d+/|\d+/\d+ ━|step - loss|\x1b\[|E0000|W0000|I0000|cuInit|tfg_optimizer|oneDNN|absl")
CLOSING = re.compile(r"art-prune: (wrote .+|done) in \d+\.\d s( \(nothing written\))?")


def test_repair_with_fine_tuning_shows_only_our_bars_and_a_closing_line(tmp_path):
    keras.utils.set_random_seed(0)
    mnist_cnn((12, 10, 3), 4).save(tmp_path / "model.keras")
    rng = np.random.default_rng(0)
    write_lab_h5(str(tmp_path / "valid.h5"), rng.uniform(0, 255, (64, 12, 10, 3)), rng.integers(0, 4, 64))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "art_pruning_defense.lab.cli",
            "repair",
            "--model",
            "model.keras",
            "--valid",
            "valid.h5",
            "--drops",
            "5",
            "--fine-tune-epochs",
            "3",
            "--out",
            "out",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": REPOSITORY},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert not NOISE.search(done.stdout + done.stderr), done.stderr
    lines = [line for line in re.split(r"[\r\n]+", done.stderr) if line.strip()]
    # An untrained network on random data is at chance: our warnings say so (B at chance, X and prune_until beyond
    # its accuracy above chance), one line each.
    warnings = [line for line in lines if line.startswith("art-prune: warning:")]
    assert len(warnings) == 3 and "near chance" in warnings[0], warnings
    assert "prune_until" in warnings[2], warnings
    lines = [line for line in lines if line not in warnings]
    bars = {line.split(":")[0] for line in lines[:-1]}
    assert bars <= {"Pruning conv_2", "Fine-tuning"}, bars  # tqdm's bars, nothing else
    assert CLOSING.fullmatch(lines[-1]) and lines[-1].startswith("art-prune: wrote out ("), lines[-1]
    assert "fine_pruned.keras" in lines[-1] and "wrote" not in done.stdout


def test_every_command_ends_with_one_closing_line(tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a_label=1.png")
    assert main(["make-h5", str(tmp_path), str(tmp_path / "a.h5")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and CLOSING.fullmatch(err[0]) and "wrote" in err[0], err
    assert main(["demo", "--quiet", "--epochs", "1", "--drops", "50", "--fine-tune-epochs", "0"]) == 0
    captured = capsys.readouterr()
    assert "| B (BadNet) |" in captured.out and not NOISE.search(captured.out + captured.err)
    err = captured.err.splitlines()
    # X=50 on a one-epoch BadNet: the GoodNet flags most clean inputs, and the one warning line says so.
    assert len(err) == 2 and err[0].startswith("art-prune: warning: GoodNet X=50 flags clean validation inputs"), err
    assert CLOSING.fullmatch(err[1]) and err[1].endswith("s (nothing written)"), err


def test_sweep_plot_labels_each_step_once(tmp_path, monkeypatch):
    """Several X stopping at the same step share one label (they used to overprint)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    from art_pruning_defense.lab.output import plot_sweep

    labels: list[str] = []
    original = Axes.annotate

    def recording(self, text, *args, **kwargs):
        labels.append(text)
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(Axes, "annotate", recording)
    records = [
        {"fraction_pruned": i / 10, "clean_accuracy": 100 - i, "attack_success_rate": 100 - 5 * i} for i in range(11)
    ]
    plot_sweep(records, {2.0: 5, 4.0: 5, 10.0: 7}, str(tmp_path / "sweep.png"))
    assert labels == ["X=2, 4", "X=10"]
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_markdown_table_left_aligns_text_and_right_aligns_numbers():
    from art_pruning_defense.lab.output import markdown_table

    rows = [
        {"defence": "no defence", "clean": 79.82, "auroc": "0.8357", "mean": "75.88 ± 1.20", "notes": None},
        {"defence": "pruning", "clean": 75, "auroc": None, "mean": "70.10 ± 0.50", "notes": "17 of 64 channels"},
    ]
    columns = [("defence", "defence"), ("clean", "clean %"), ("auroc", "AUROC"), ("mean", "mean"), ("notes", "notes")]
    lines = markdown_table(rows, columns).splitlines()
    assert lines[1] == "| --- | ---: | ---: | ---: | --- |"
    assert lines[2] == "| no defence | 79.82 | 0.8357 | 75.88 ± 1.20 | – |"
    assert lines[3] == "| pruning | 75 | – | 70.10 ± 0.50 | 17 of 64 channels |"
