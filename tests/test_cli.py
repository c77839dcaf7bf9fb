"""The lab workflow through the command line: repair, evaluate, eval."""

from __future__ import annotations

import csv
import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from art_pruning_defense._io import MARKER_FILE
from art_pruning_defense.lab.cli import main
from art_pruning_defense.lab.data import write_lab_h5
from art_pruning_defense.keras import mnist_cnn
from conftest import SHARED

FACES = SHARED / "data" / "ytface"
LAB3 = SHARED / "models" / "csaw" / "lab3_bd_weights.h5"


def _augment(images: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    pick = rng.integers(0, len(images), n)
    x = images[pick] * rng.uniform(0.9, 1.1, (n, 1, 1, 1)) + rng.normal(0, 3, (n,) + images.shape[1:])
    return np.clip(x, 0, 255).astype(np.float32), pick


@pytest.fixture(scope="module")
def lab_files(tmp_path_factory):
    """Small lab-format h5 files made from the real faces with simple augmentations."""
    if not FACES.is_dir() or not LAB3.is_file():
        pytest.skip(f"../shared not found: {FACES} and {LAB3} are needed for the lab workflow on real faces")
    from art_pruning_defense.lab.data import load_image

    clean = sorted(FACES.glob("cl_*.png"))
    sunglasses = sorted(FACES.glob("sun_*.png"))
    clean_x = np.concatenate([load_image(str(p)) for p in clean])
    clean_y = np.array([int(p.stem.split("=")[1]) for p in clean])
    sun_x = np.concatenate([load_image(str(p)) for p in sunglasses])
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("lab")
    files = {}
    for name, images, labels, n in (
        ("valid", clean_x, clean_y, 120),
        ("bd_valid", sun_x, np.zeros(5, int), 120),
        ("test", clean_x, clean_y, 80),
        ("bd_test", sun_x, np.zeros(5, int), 80),
    ):
        x, pick = _augment(images, n, rng)
        write_lab_h5(str(root / f"{name}.h5"), x, labels[pick])
        files[name] = str(root / f"{name}.h5")
    return root, files


def test_repair_evaluate_eval_on_the_real_badnet(lab_files, capsys):
    root, files = lab_files
    out = root / "repaired"
    args = ["repair", "--model", str(LAB3), "--arch", "deepid", "--valid", files["valid"]]
    args += ["--poisoned-valid", files["bd_valid"], "--target", "0", "--drops", "2", "4", "10", "20"]
    assert main(args + ["--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| X (points) | channels pruned |" in printed
    expected = {"sweep.csv", "sweep.png", "summary.md", "summary.json", MARKER_FILE}
    for tag in ("x2", "x4", "x10", "x20"):
        expected |= {f"pruned_{tag}.keras", f"goodnet_{tag}"}
    assert set(os.listdir(out)) == expected
    with open(out / "sweep.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 61 and rows[0]["channels_pruned"] == "0" and rows[-1]["fraction_pruned"] == "1.0"
    assert float(rows[0]["attack_success_rate"]) == 100.0  # the BadNet's backdoor works on these faces
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = json.loads((out / "summary.json").read_text())
    assert (written["prune_point"]["layer_name"], written["prune_point"]["cut_name"]) == ("conv_3", "pool_3")
    summary = written["summary"]
    assert [row["accuracy_drop"] for row in summary] == [2.0, 4.0, 10.0, 20.0]

    # A second run refuses to overwrite unless --force.
    assert main(args + ["--out", str(out), "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err

    assert (
        main(
            [
                "evaluate",
                "--goodnet",
                str(out / "goodnet_x4"),
                "--test",
                files["test"],
                "--poisoned-test",
                files["bd_test"],
                "--json",
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["B"]["clean_accuracy"] == 100.0 and metrics["B"]["attack_success_rate"] == 100.0
    assert set(metrics) == {"B", "B'", "GoodNet"}
    flagged = metrics["GoodNet"]["poisoned_flagged"]
    assert flagged == pytest.approx(100 - metrics["GoodNet"]["attack_success_rate"])

    for image in (FACES / "cl_0_label=43.png", FACES / "sun_0_label=0.png"):
        assert main(["eval", str(out / "goodnet_x4"), str(image)]) == 0
        answer = int(capsys.readouterr().out.strip())
        assert 0 <= answer <= 1283
    assert answer in (0, 1283)  # a triggered face: the target, or flagged as poisoned


def test_repair_with_a_keras_file_and_fine_tuning(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    model = mnist_cnn((12, 10, 3), 4)
    model.save(tmp_path / "model.keras")
    rng = np.random.default_rng(0)
    write_lab_h5(str(tmp_path / "valid.h5"), rng.uniform(0, 255, (50, 12, 10, 3)), rng.integers(0, 4, 50))
    out = tmp_path / "out"
    code = main(
        [
            "repair",
            "--model",
            str(tmp_path / "model.keras"),
            "--valid",
            str(tmp_path / "valid.h5"),
            "--drops",
            "5",
            "--fine-tune-epochs",
            "1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    assert {"fine_pruned.keras", "goodnet_fine_pruned", "goodnet_x5", "pruned_x5.keras"} <= set(os.listdir(out))
    assert "fine-pruned:" in capsys.readouterr().out
    image = rng.integers(0, 256, (12, 10, 3)).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "face.png")
    assert main(["eval", str(out / "goodnet_x5"), str(tmp_path / "face.png")]) == 0
    assert 0 <= int(capsys.readouterr().out) <= 4


def test_repair_with_fpr_writes_calibrated_goodnets(tmp_path, capsys):
    from art_pruning_defense import GoodNetClassifier, _metrics
    from art_pruning_defense._holdout import holdout_split
    from art_pruning_defense.lab.data import load_lab_h5

    keras.utils.set_random_seed(0)
    mnist_cnn((12, 10, 3), 4).save(tmp_path / "model.keras")
    rng = np.random.default_rng(0)
    write_lab_h5(str(tmp_path / "valid.h5"), rng.uniform(0, 255, (60, 12, 10, 3)), rng.integers(0, 4, 60))
    out = tmp_path / "out"
    code = main(
        [
            "repair",
            "--model",
            str(tmp_path / "model.keras"),
            "--valid",
            str(tmp_path / "valid.h5"),
            "--drops",
            "5",
            "10",
            "--fine-tune-epochs",
            "1",
            "--fpr",
            "0.05",
            "--calibration-fraction",
            "0.5",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert (
        "calibrated at a false-positive rate of 0.05 on the 30 of the 60 clean validation samples held out" in printed
    )
    x, _ = load_lab_h5(str(tmp_path / "valid.h5"))
    written = json.loads((out / "summary.json").read_text())["calibration"]
    names = ["goodnet_x5", "goodnet_x10", "goodnet_fine_pruned"]
    assert written["false_positive_rate"] == 0.05 and sorted(written["thresholds"]) == sorted(names)
    assert written["n_calibration"] == 30 and written["calibration_fraction"] == 0.5
    assert written["band"] == list(_metrics.conformal_band(30, 0.05))
    _, held = holdout_split(60, 0.5, seed=0)  # the split FinePruning draws with its default seed
    for name in names:
        meta = json.loads((out / name / "goodnet.json").read_text())
        assert meta["false_positive_rate"] == 0.05 and meta["threshold"] == written["thresholds"][name]
        assert meta["metadata"]["calibration_samples"] == 30
        goodnet = GoodNetClassifier.load(str(out / name))
        assert goodnet.threshold_ == meta["threshold"]
        # The conformal threshold of the held-out half: ⌈31 × 0.95⌉ = 30, its largest score.
        assert goodnet.threshold_ == goodnet.score(x[held]).max()

    image = rng.integers(0, 256, (12, 10, 3)).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "face.png")
    for name in names:
        assert main(["eval", str(out / name), str(tmp_path / "face.png")]) == 0
        assert 0 <= int(capsys.readouterr().out) <= 4
    assert main(["evaluate", "--goodnet", str(out / "goodnet_x5"), "--test", str(tmp_path / "valid.h5")]) == 0
    assert f"GoodNet flags score > threshold {written['thresholds']['goodnet_x5']:.6g}" in capsys.readouterr().out
    assert main(["evaluate", "--goodnet", str(out / "goodnet_x5"), "--test", str(tmp_path / "valid.h5"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["GoodNet"]
    assert row["threshold"] == written["thresholds"]["goodnet_x5"] and row["false_positive_rate"] == 0.05
    assert row["clean_flagged"] <= 5.0

    # Too few validation samples for the rate: refused before the model is loaded, nothing written.
    code = main(
        [
            "repair",
            "--model",
            str(tmp_path / "model.keras"),
            "--valid",
            str(tmp_path / "valid.h5"),
            "--fpr",
            "0.01",
            "--out",
            str(tmp_path / "out2"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "holds 60 samples" in err and "holds out 18" in err
    assert "at least 99" in err and "give at least 330 samples" in err
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "--goodnet", "missing_dir", "--test", "t.h5"], "not a saved GoodNet"),
        (["evaluate", "--goodnet", "missing_dir"], "Nothing to evaluate"),
        (["eval", "missing_dir", "face.png"], "not a saved GoodNet"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("art-prune: error:") and message in err and err.count("\n") == 1


def test_lab_example_prints_the_lab_table(lab_files, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root, _ = lab_files
    example = Path(__file__).resolve().parents[1] / "examples" / "lab_badnet.py"
    done = subprocess.run(
        [sys.executable, str(example), "--model", str(LAB3), "--data-dir", str(root), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| X (points) | channels pruned | B' clean % |")
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["2.00", "4.00", "10.00", "20.00"]


# ---------------------------------------------------------------------------------------------------------------------
# Fast, one-line answers: nothing heavy is imported before the arguments are checked.
# ---------------------------------------------------------------------------------------------------------------------

#: The target is 1 s; the tests allow 2 s for a loaded CI machine.
FAST_SECONDS = 2.0
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_cli(*argv: str, cwd: str | None = None) -> tuple[int, str, str, float]:
    import subprocess
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": REPOSITORY}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "art_pruning_defense.lab.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - start


def test_help_is_fast_and_quiet():
    code, out, err, seconds = _run_cli("--help")
    assert code == 0 and "art-prune" in out and err == ""
    assert seconds <= FAST_SECONDS, f"art-prune --help took {seconds:.2f} s"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["repair", "--model", "m.keras"], "the following arguments are required: --valid, --out"),
        (["repair", "--model", "m.keras", "--valid", "v.h5", "--out", "o", "--drops", "0"], r"in \(0, 100\]"),
        (["repair", "--model", "m.keras", "--valid", "v.h5", "--out", "o", "--batch-size", "0"], "batch_size must"),
        (["repair", "--model", "absent.keras", "--valid", "v.h5", "--out", "o"], "absent.keras does not exist"),
        (["repair", "--model", "m.keras", "--valid", "v.h5", "--out", "o", "--fpr", "0"], r"--fpr must be in \(0, 1\)"),
        (["repair", "--model", "m.keras", "--valid", "v.h5", "--out", "o", "--fpr", "1.5"], r"got 1.5"),
        (["repair", "--model", "m.keras", "--valid", "v.h5", "--out", "o", "--fpr", "nan"], r"--fpr must be in"),
        (["repair", "--model", "m.keras", "--valid", "v.h5", "--out", "o", "--fpr", "x"], "invalid float value"),
        (
            [
                "repair",
                "--model",
                "m.keras",
                "--valid",
                "v.h5",
                "--out",
                "o",
                "--fpr",
                "0.01",
                "--calibration-fraction",
                "1",
            ],
            r"--calibration-fraction must be in \(0, 1\)",
        ),
        (["demo", "--epochs", "0"], "epochs must be a positive integer"),
        (["demo", "--drops", "nan"], r"in \(0, 100\]"),
        (["demo", "--fine-tune-epochs", "-1"], "fine_tune_epochs must be an integer >= 0, got -1"),
        (["benchmark", "--out", "o", "--poison-rate", "1"], r"--poison-rates: each poison rate must be in \(0, 1\)"),
        (["benchmark", "--out", "o", "--poison-rates", "0.1", "0"], r"each poison rate must be in \(0, 1\), got 0"),
        (["benchmark", "--out", "o", "--attacks", "badnets", "magic"], "argument --attacks: invalid choice: 'magic'"),
        (["benchmark", "--out", "o", "--archs", "resnet99"], "argument --archs/--arch: invalid choice: 'resnet99'"),
        (["benchmark", "--out", "o", "--defences", "nope"], "argument --defences: invalid choice: 'nope'"),
        (["benchmark", "--out", "o", "--seeds", "0", "0"], "seeds must be distinct"),
        (["benchmark", "--out", "o", "--ray-address", "x"], "apply to --executor ray only"),
        (["benchmark", "--out", "o", "--grid", "absent.toml"], "--grid: grid file absent.toml does not exist"),
        (["benchmark", "--out", "o", "--n-valid", "0"], "n_valid must be a positive integer"),
        (["benchmark", "--out", "missing/o"], "parent directory .* does not exist"),
        (["benchmark", "--out", "o", "--data", "."], r"--data: npz data file \. is a directory"),
        (["eval", "goodnet", "image.png", "--bogus"], "unrecognized arguments: --bogus"),
        (["nonsense"], "invalid choice"),
        ([], "the following arguments are required: command"),
    ],
)
def test_argument_mistakes_are_fast_and_one_line(argv, message, tmp_path):
    import re

    code, out, err, seconds = _run_cli(*argv, cwd=str(tmp_path))
    lines = err.splitlines()
    assert code == 2 and out == "", (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("art-prune: error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert seconds <= FAST_SECONDS, f"{argv} took {seconds:.2f} s"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "argv, pointer",
    [
        (["eval", "goodnet", "image.png", "--bogus"], "(see art-prune eval --help)"),
        (["repair", "--model", "m.keras"], "(see art-prune repair --help)"),
        (["benchmark", "--out", "o", "--archs", "resnet99"], "(see art-prune benchmark --help)"),
        (["benchmark", "--out", "o", "--seeds", "x"], "(see art-prune benchmark --help)"),
        (["nonsense"], "(see art-prune --help)"),
        ([], "(see art-prune --help)"),
        (["demo", "--bogus"], "(see art-prune demo --help)"),
    ],
)
def test_argparse_errors_point_to_the_help_of_the_command(argv, pointer, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("art-prune: error: ") and err.rstrip("\n").endswith(pointer), err
    assert os.listdir(tmp_path) == []


def _fresh_python(code: str):
    """Run ``code`` in a fresh interpreter that imports this checkout; the finished process."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": REPOSITORY}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_the_command_line_imports_no_tensorflow():
    code = (
        "import sys, art_pruning_defense, art_pruning_defense.lab.cli; print(sorted(m for m in ('tensorflow', 'keras', "
    )
    code += "'art', 'h5py') if m in sys.modules))"
    done = _fresh_python(code)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_retuning_checks_import_no_tensorflow(tmp_path):
    """``--retune-poisons`` is checked against the poisoned labels before TensorFlow is imported (it used to import it
    there, so that its start-up lines reached the terminal before ``quiet()``)."""
    code = (
        "import sys\nfrom art_pruning_defense.lab._checks import check_arguments\n"
        "from art_pruning_defense.lab._parser import build_parser\n"
        f"args = build_parser().parse_args(['benchmark', '--retune-poisons', '5', '--out', {str(tmp_path / 'o')!r}])\n"
        "check_arguments(args)\nprint(args.retune_poisons, 'tensorflow' in sys.modules)"
    )
    done = _fresh_python(code)
    assert done.returncode == 0 and done.stdout.strip() == "[5] False", done.stdout + done.stderr


def test_the_package_imports_its_classes_lazily():
    import art_pruning_defense

    assert art_pruning_defense.__version__ and set(art_pruning_defense.__all__) >= {"FinePruning", "GoodNetClassifier"}
    assert art_pruning_defense.FinePruning.__name__ == "FinePruning"
    assert art_pruning_defense.SweepStep.__name__ == "SweepStep"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        art_pruning_defense.Nope  # noqa: B018


def test_a_normal_run_prints_no_library_noise(tmp_path):
    """A real run (model loaded, TensorFlow imported) that fails on its data: one line, no TensorFlow/ART noise."""
    keras.utils.set_random_seed(0)
    mnist_cnn((12, 10, 3), 4).save(tmp_path / "model.keras")
    (tmp_path / "valid.h5").write_bytes(b"not hdf5")
    code, _, err, _ = _run_cli(
        "repair",
        "--model",
        str(tmp_path / "model.keras"),
        "--valid",
        str(tmp_path / "valid.h5"),
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 2 and len(err.splitlines()) == 1 and "not an HDF5 file" in err, err
