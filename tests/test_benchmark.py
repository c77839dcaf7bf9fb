"""The comparative benchmark (``art-prune benchmark``): a smoke run on digits, its inputs, ART's quirks."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from art_pruning_defense import benchmark as bench  # noqa: E402
from art_pruning_defense.benchmark.defences import base  # noqa: E402
from art_pruning_defense.lab.cli import main

#: A smoke run: tiny settings, one ART filter, STRIP, fine-pruning and pruning.
SMOKE_DEFENCES = ("none", "pruning", "fine-pruning", "spectral-signatures", "strip")


def _failing(run: base.Run) -> list[dict]:
    raise RuntimeError("this defence always fails")


@pytest.fixture(scope="module")
def smoke_run():
    """
    One small digits benchmark (with an extra defence that raises), shared by the tests below: its rows, and the data
    and BadNet it measured them on (caught on their way into the run).
    """
    import keras

    from art_pruning_defense.benchmark import runner

    caught = {}
    real_load, real_train = runner.load_benchmark_data, runner.train_badnet

    def load(config):
        caught["data"] = real_load(config)
        return caught["data"]

    def train(*args, **kwargs):
        caught["classifier"] = real_train(*args, **kwargs)
        return caught["classifier"]

    registry = dict(bench.DEFENCES)
    bench.DEFENCES["always-fails"] = bench.Defence("always-fails", "raises", _failing, lambda config: ["broken"])
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(runner, "load_benchmark_data", load)
            patch.setattr(runner, "train_badnet", train)
            keras.utils.set_random_seed(0)
            config = bench.BenchmarkConfig(
                data="digits", epochs=12, fine_tune_epochs=3, defences=SMOKE_DEFENCES + ("always-fails",)
            )
            rows = bench.run_benchmark(config, verbose=False)
    finally:
        bench.DEFENCES.clear()
        bench.DEFENCES.update(registry)
    return rows, caught["data"], caught["classifier"]


@pytest.fixture(scope="module")
def smoke_rows(smoke_run):
    return smoke_run[0]


def test_benchmark_smoke_run_rows(smoke_rows):
    names = [row["defence"] for row in smoke_rows]
    assert names == [
        "no defence",
        "pruning X=2",
        "pruning X=4",
        "pruning X=10",
        "GoodNet X=10",
        "fine-pruning",
        "fine-pruning GoodNet",
        "fine-pruning GoodNet (1% FPR)",
        "fine-pruning GoodNet (5% FPR)",
        "spectral signatures",
        "STRIP",
        "STRIP score (1% FPR)",
        "STRIP score (5% FPR)",
        "broken",
    ]
    for row in smoke_rows:
        assert tuple(row) == bench.ROW_KEYS
        for key in bench.ROW_KEYS[1:7]:
            assert row[key] is None or 0.0 <= row[key] <= 100.0, (row["defence"], key, row[key])
        assert row["seconds"] >= 0.0
        # The process's peak while the defence ran: at least what TensorFlow, the data and B take (> 100 MiB).
        assert isinstance(row["peak_rss_mib"], float) and row["peak_rss_mib"] > 100.0, row
    rows = {row["defence"]: row for row in smoke_rows}
    assert rows["no defence"]["attack_success_rate"] > 50 and rows["no defence"]["clean_accuracy"] > 80
    assert all(row["error"] is None for name, row in rows.items() if name != "broken")
    # Training-set filters report detection rates; test-time defences report flags; B'(X) and B report neither.
    for name in ("pruning X=2", "pruning X=10", "fine-pruning", "spectral signatures"):
        assert rows[name]["poison_detection_tpr"] is not None and rows[name]["poisoned_flagged"] is None, name
    for name in ("GoodNet X=10", "fine-pruning GoodNet", "STRIP"):
        assert rows[name]["poison_detection_tpr"] is None and rows[name]["poisoned_flagged"] is not None, name
    assert rows["no defence"]["poison_detection_tpr"] is None and rows["no defence"]["poisoned_flagged"] is None
    # Test-time detectors carry AUROC, TPR at 1 % FPR and a ROC curve; the GoodNet's training-set score an AUROC.
    for name in ("GoodNet X=10", "fine-pruning GoodNet", "fine-pruning GoodNet (1% FPR)", "STRIP"):
        row = rows[name]
        assert 0.0 <= row["auroc"] <= 1.0 and 0.0 <= row["tpr_at_1pct_fpr"] <= 100.0, name
        assert len(row["roc"]["fpr"]) == len(row["roc"]["tpr"]) and row["roc"]["tpr"][-1] == 1.0, name
        assert all(a <= b for a, b in zip(row["roc"]["tpr"], row["roc"]["tpr"][1:])), name
    for name in ("pruning X=2", "fine-pruning"):
        assert 0.0 <= rows[name]["poison_detection_auroc"] <= 1.0 and rows[name]["auroc"] is None, name
    for name in ("no defence", "spectral signatures", "fine-pruning"):
        assert rows[name]["auroc"] is None and rows[name]["roc"] is None, name
    assert rows["fine-pruning GoodNet"]["auroc"] > 0.9  # the fine-pruned GoodNet separates triggered inputs
    # The repair is the package's default fit, on all 300 validation images of the digits. The calibrated rows come
    # from a second fit: 99 images held out (the fewest for 1 %), 201 fine-tune; both rates share its score (AUROC).
    assert "fine-tuning on 300 clean images" in rows["fine-pruning"]["note"]
    assert "fine-tuning on 300 clean images" in rows["fine-pruning GoodNet"]["note"]
    one_auroc = rows["fine-pruning GoodNet (1% FPR)"]["auroc"]
    for name in ("fine-pruning GoodNet (1% FPR)", "fine-pruning GoodNet (5% FPR)"):
        calibrated = rows[name]
        assert calibrated["auroc"] == one_auroc, name
        assert "conformal threshold" in calibrated["note"] and "from 99 of the 300 clean" in calibrated["note"], name
        assert "fine-tuning on 201 clean images" in calibrated["note"] and "that B' alone: clean " in calibrated["note"]
    for name in ("STRIP score (1% FPR)", "STRIP score (5% FPR)"):
        assert rows[name]["auroc"] == rows["STRIP"]["auroc"] and "from 99 of the 300" in rows[name]["note"], name
        assert rows[name]["clean_flagged"] is not None and rows[name]["poisoned_flagged"] is not None, name
    # A higher promised rate flags at least as many inputs (the same score, a lower threshold).
    for detector in ("fine-pruning GoodNet", "STRIP score"):
        one, five = rows[f"{detector} (1% FPR)"], rows[f"{detector} (5% FPR)"]
        assert one["clean_flagged"] <= five["clean_flagged"] and one["poisoned_flagged"] <= five["poisoned_flagged"]
    assert rows["fine-pruning"]["attack_success_rate"] < rows["no defence"]["attack_success_rate"]
    # GoodNet answers the target only where B' does too, and is right on clean data only where B' is.
    goodnet, pruned = rows["fine-pruning GoodNet"], rows["fine-pruning"]
    assert goodnet["attack_success_rate"] <= pruned["attack_success_rate"]
    assert goodnet["clean_accuracy"] <= pruned["clean_accuracy"]
    # The failing defence is recorded, not fatal.
    broken = rows["broken"]
    assert broken["error"] == "RuntimeError: this defence always fails"
    assert all(broken[key] is None for key in bench.ROW_KEYS[1:7])


def test_benchmark_detection_matches_the_detector(smoke_run):
    """
    The pruning rows' detection rates are FinePruningDetector's with fine_tune_epochs=0 and accuracy_drop=X, on the
    smoke run's own data and BadNet (which the defences run after pruning must have left untouched).
    """
    from art_pruning_defense import FinePruningDetector
    from art_pruning_defense._metrics import detection_metrics

    rows, data, classifier = smoke_run
    for drop in (4.0, 10.0):
        detector = FinePruningDetector(
            classifier, data.x_train, data.y_train, data.x_valid, data.y_valid, accuracy_drop=drop, fine_tune_epochs=0
        )
        report, is_clean = detector.detect_poison(verbose=False)
        tpr, fpr = base.detection_rates(np.asarray(is_clean) == 0, data.is_poison_train)
        row = next(row for row in rows if row["defence"] == f"pruning X={drop:g}")
        assert (row["poison_detection_tpr"], row["poison_detection_fpr"]) == pytest.approx((tpr, fpr))
        auroc = detection_metrics(np.asarray(report["scores"]), data.is_poison_train)["auroc"]
        assert row["poison_detection_auroc"] == pytest.approx(auroc)


def test_write_benchmark_files(smoke_rows, tmp_path):
    out = tmp_path / "bench"
    command = "art-prune benchmark --data digits --epochs 12 --out bench"
    written = bench.write_benchmark(smoke_rows, str(out), command)
    assert sorted(os.listdir(out)) == [".art-prune-output", "results.json", "results.md", "results.png", "roc.png"]
    assert sorted(map(os.path.basename, written)) == ["results.json", "results.md", "results.png", "roc.png"]
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "results.json").read_text()) == smoke_rows
    markdown = (out / "results.md").read_text()
    assert markdown.index(command) < markdown.index("| defence |")
    assert "| fine-pruning GoodNet |" in markdown and "error: RuntimeError: this defence always fails" in markdown
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError, match="overwrite"):
        bench.write_benchmark(smoke_rows, str(out), command)
    bench.write_benchmark(smoke_rows[:2], str(out), command, overwrite=True)
    assert len(json.loads((out / "results.json").read_text())) == 2
    assert sorted(os.listdir(tmp_path)) == ["bench"]  # nothing temporary left beside it
    with pytest.raises(ValueError, match="command"):
        bench.write_benchmark(smoke_rows, str(tmp_path / "other"), " ")


def test_strip_scores_rank_a_surviving_trigger_first():
    """STRIP's score: blends of an input whose trigger dominates stay confident (low entropy, high score)."""
    import keras

    from art_pruning_defense.benchmark.defences.strip import strip_scores

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    kernel = np.zeros((4, 3), np.float32)
    kernel[0, 0] = 40.0  # feature 0 (the "trigger") drives class 0 whatever else is there
    kernel[1, 1] = kernel[2, 2] = 2.0
    model.layers[-1].set_weights([kernel, np.zeros(3, np.float32)])
    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 1, (50, 4)).astype(np.float32)
    clean[:, 0] = 0.0
    triggered = clean[:10].copy()
    triggered[:, 0] = 1.0
    scores = strip_scores(model, np.concatenate([clean[:10], triggered]), clean, num_samples=8, seed=0)
    assert scores.shape == (20,) and np.all(scores <= 0.0)
    assert scores[10:].min() > scores[:10].max()
    again = strip_scores(model, np.concatenate([clean[:10], triggered]), clean, num_samples=8, seed=0, batch_size=3)
    np.testing.assert_allclose(again, scores, rtol=1e-6)  # the seed fixes the blends, not the batch size


def _npz(path, **arrays):
    rng = np.random.default_rng(0)
    values = {
        "x_train": rng.integers(0, 256, (30, 8, 8), dtype=np.uint8),
        "y_train": rng.integers(0, 3, 30),
        "x_test": rng.integers(0, 256, (10, 8, 8), dtype=np.uint8),
        "y_test": rng.integers(0, 3, 10),
    }
    values.update(arrays)
    np.savez(path, **{key: value for key, value in values.items() if value is not None})
    return str(path)


def test_benchmark_npz_loader_scales_and_adds_the_channel_axis(tmp_path):
    x_train, y_train, x_test, y_test = bench.load_npz_images(_npz(tmp_path / "a.npz"))
    assert x_train.shape == (30, 8, 8, 1) and x_test.shape == (10, 8, 8, 1)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0 and x_train.max() > 0.9
    assert y_train.dtype == np.int64 and y_test.shape == (10,)
    unit = np.full((30, 8, 8, 3), 0.5, dtype=np.float32)
    x_train, *_ = bench.load_npz_images(
        _npz(tmp_path / "b.npz", x_train=unit, x_test=unit[:10], y_train=np.arange(30) % 3)
    )
    assert x_train.shape == (30, 8, 8, 3) and np.all(x_train == 0.5)  # floats in [0, 1] are kept
    x_train, *_ = bench.load_npz_images(
        _npz(tmp_path / "c.npz", x_train=unit * 255, x_test=unit[:10], y_train=(np.arange(30) % 3)[:, None])
    )
    assert np.allclose(x_train, 0.5)  # floats above 1 are 0..255


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"y_test": None}, "lacks y_test"),
        ({"x_train": np.zeros((30, 64))}, r"x_train has shape \(30, 64\); expected greyscale images"),
        ({"x_test": np.zeros((10, 8, 8, 5))}, "expected greyscale images"),
        ({"x_test": np.zeros((10, 9, 9), dtype=np.uint8)}, "they must match"),
        ({"x_train": np.full((30, 8, 8), 300.0)}, r"expected \[0, 1\]"),
        ({"x_train": np.full((30, 8, 8), np.nan)}, "NaN"),
        ({"y_train": np.full(30, 0.5)}, "non-integer"),
        ({"y_train": -np.ones(30)}, "negative"),
        ({"y_train": np.zeros((30, 3))}, "expected integer labels"),
        ({"y_train": np.zeros(30)}, "single class"),
        ({"x_train": np.array(["a"] * 30)}, "expected numbers"),
    ],
)
def test_benchmark_npz_loader_errors(tmp_path, arrays, match):
    with pytest.raises(ValueError, match=match):
        bench.load_npz_images(_npz(tmp_path / "bad.npz", **arrays))


def test_benchmark_npz_loader_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        bench.load_npz_images(str(tmp_path / "absent.npz"))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"defences": ["magic"]}, ValueError, "Unknown defence"),
        ({"defences": []}, ValueError, "not empty"),
        ({"defences": "strip"}, TypeError, "list of defence names"),
        ({"poison_rate": 0.0}, ValueError, "poison_rate"),
        ({"poison_rate": "0.1"}, TypeError, "poison_rate"),
        ({"trigger": "square"}, ValueError, "trigger"),
        ({"target": -1}, ValueError, "target"),
        ({"goodnet_drop": 5}, ValueError, "goodnet_drop"),
        ({"accuracy_drops": (0,)}, ValueError, "accuracy drop"),
        ({"n_valid": 100}, ValueError, "digits split is fixed"),
        ({"epochs": 0}, ValueError, "epochs"),
        ({"fine_tune_epochs": 0}, ValueError, "fine_tune_epochs"),
        ({"neural_cleanse_steps": 2.5}, ValueError, "neural_cleanse_steps"),
        ({"strip_false_acceptance_rate": 1.0}, ValueError, "strip_false_acceptance_rate"),
        ({"data": "mnist.h5"}, ValueError, "npz"),
    ],
)
def test_benchmark_config_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        bench.BenchmarkConfig(**kwargs)


def test_benchmark_config_defaults_by_source(tmp_path):
    from art_pruning_defense.fine_pruning import RECOMMENDED_FINE_TUNE_EPOCHS

    digits = bench.BenchmarkConfig().resolved()
    assert (digits.n_valid, digits.epochs, digits.batch_size) == (300, 30, 32)
    assert digits.defences == bench.defence_names()
    npz = bench.BenchmarkConfig(data=str(tmp_path / "mnist.npz")).resolved()
    assert (npz.n_valid, npz.epochs, npz.batch_size) == (5000, 3, 64)
    assert npz.fine_tune_epochs == RECOMMENDED_FINE_TUNE_EPOCHS
    assert json.loads(json.dumps(npz.as_dict()))["defences"] == list(bench.defence_names())


def test_abstentions_and_detection_rates():
    scores = np.array([[0.1, 0.9], [0.0, 0.0], [0.7, 0.3]])
    assert base.abstaining_labels(scores).tolist() == [1, bench.ABSTAIN, 0]
    flagged = np.array([True, False, True, True])
    is_poison = np.array([True, True, False, False])
    assert base.detection_rates(flagged, is_poison) == (50.0, 100.0)
    assert base.detection_rates(flagged[2:], is_poison[2:]) == (None, 100.0)


def test_predict_in_chunks_keeps_order_and_random_draws():
    """ART's predictors take the whole array at once; in slices they give the same rows, drawing the same numbers."""
    from art_pruning_defense.benchmark.defences.base import predict_in_chunks

    x = np.arange(10, dtype=np.float32)[:, None]
    sizes = []

    def predict(part: np.ndarray) -> np.ndarray:
        sizes.append(len(part))
        return part + np.random.random(len(part))[:, None]  # one draw per input, in order (as ART's STRIP)

    np.random.seed(5)
    whole = predict(x)
    np.random.seed(5)
    sizes.clear()
    assert np.array_equal(predict_in_chunks(predict, x, 4), whole)
    assert sizes == [4, 4, 2]
    sizes.clear()
    assert predict_in_chunks(predict, x[:3], 4).shape == (3, 1) and sizes == [3]  # one call where it fits
    assert predict_in_chunks(predict, x[:0], 4).shape == (0, 1)


def test_chunked_activations_equal_arts_whole_call(monkeypatch):
    """ART's filtering defences get the activations of one whole ``get_activations`` call, slice by slice."""
    import keras
    from art.estimators.classification import KerasClassifier

    from art_pruning_defense.keras import build_architecture

    monkeypatch.setattr(base, "ACTIVATION_CHUNK", 32)
    keras.utils.set_random_seed(0)
    model = build_architecture("small-cnn", (8, 8, 1), 3)
    x = np.random.default_rng(0).random((100, 8, 8, 1), dtype=np.float32)
    whole = KerasClassifier(model, clip_values=(0.0, 1.0))
    chunked = base.ChunkedActivations(model, clip_values=(0.0, 1.0))
    calls = []
    monkeypatch.setattr(
        KerasClassifier,
        "get_activations",
        lambda self, part, *args, _original=KerasClassifier.get_activations, **kwargs: (
            calls.append(len(part)) or _original(self, part, *args, **kwargs)
        ),
    )
    layer = len(whole.layer_names) - 1  # the layer ART's activation clustering and spectral signatures read
    expected = whole.get_activations(x, layer)
    calls.clear()
    assert np.array_equal(chunked.get_activations(x, layer, batch_size=128), expected)
    assert calls == [32, 32, 32, 4]


def test_neural_cleanse_learning_rate_survives_reset():
    """ART's reset zeroes every optimiser variable, Keras 3's learning rate included; the benchmark restores it."""
    import contextlib
    import io

    from art.estimators.poison_mitigation.neural_cleanse import KerasNeuralCleanse

    from art_pruning_defense.keras import mnist_cnn

    model = mnist_cnn((12, 12, 1), 3)
    art_version = KerasNeuralCleanse(model, steps=1, learning_rate=0.1)
    art_version.reset()
    fixed = bench._NeuralCleanse(model, steps=1, learning_rate=0.1, batch_size=4)
    fixed.reset()
    assert float(fixed.opt.learning_rate.numpy()) == pytest.approx(0.1)
    if float(art_version.opt.learning_rate.numpy()) != 0.0:
        pytest.skip("ART's reset no longer zeroes the learning rate; _NeuralCleanse.reset can go.")
    # With the learning rate back, the reverse-engineered trigger moves.
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 12, 12, 1), dtype=np.float32), np.eye(3)[rng.integers(0, 3, 8)]
    before = fixed.mask_tensor_raw.numpy().copy()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        fixed.generate_backdoor(x, y, np.eye(3)[0])
    assert not np.array_equal(fixed.mask_tensor_raw.numpy(), before)


def test_sequential_copy_for_neural_cleanse():
    from art.estimators.classification import KerasClassifier

    from art_pruning_defense.keras import mnist_cnn

    model = mnist_cnn((12, 12, 1), 3)
    probe = np.random.default_rng(0).random((4, 12, 12, 1), dtype=np.float32)
    copy = bench._sequential_copy(model, probe)
    assert np.allclose(copy.predict(probe, verbose=0), model.predict(probe, verbose=0), atol=1e-6)
    # ART's "pruning" mitigation takes model.layers[len(layer_names) - 2]: the dense layer, in the Sequential copy.
    assert copy.layers[len(KerasClassifier(copy).layer_names) - 2].name == "fc_1"
    assert model.layers[len(KerasClassifier(model).layer_names) - 2].name == "flatten"  # why the copy is needed
    copy.layers[-1].set_weights([w * 0 for w in copy.layers[-1].get_weights()])
    assert np.any(model.get_layer("output").get_weights()[0] != 0)  # independent weights


def test_cli_benchmark_writes_the_table(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", raising=False)
    out = tmp_path / "bench"
    # A setting the command line has no option for comes from a grid file (3 epochs of fine-tuning, as the smoke run).
    grid = tmp_path / "grid.toml"
    grid.write_text("fine_tune_epochs = 3\n")
    argv = [
        "benchmark",
        "--data",
        "digits",
        "--epochs",
        "12",
        "--grid",
        str(grid),
        "--out",
        str(out),
        "--quiet",
        "--defences",
        "none",
        "fine-pruning",
        "attack-aware",
        "strip",
    ]
    assert main(argv) == 0
    assert json.loads((out / "grid.json").read_text())["settings"]["fine_tune_epochs"] == 3
    # The benchmark asks for TensorFlow's system allocator (a no-op here, TensorFlow being loaded already).
    assert os.environ["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"] == "1"
    assert sorted(os.listdir(out)) == [
        ".art-prune-output",
        "cells",
        "grid.json",
        "results.json",
        "results.md",
        "results_badnets.png",
        "roc_badnets.png",
    ]
    (cell,) = json.loads((out / "results.json").read_text())["cells"]
    assert cell["key"] == f"digits__small-cnn__badnets__0.1__seed0--{cell['hash']}"
    rows = {row["defence"]: row for row in cell["rows"]}
    assert {"no defence", "fine-pruning", "attack-aware pruning", "attack-aware fine-pruning", "STRIP"} <= set(rows)
    for row in rows.values():
        assert row.get("error") is None, row
    assert rows["no defence"]["attack_success_rate"] > 50
    assert rows["attack-aware fine-pruning"]["attack_success_rate"] < rows["no defence"]["attack_success_rate"]
    markdown = (out / "results.md").read_text()
    # The grid's table shows the detectors' AUROC (four decimals) and the mean ROC curve is kept per group.
    group_rows = {row["defence"]: row for row in json.loads((out / "results.json").read_text())["groups"][0]["rows"]}
    for name in ("fine-pruning GoodNet", "fine-pruning GoodNet (1% FPR)", "STRIP"):
        auroc = rows[name]["auroc"]
        assert group_rows[name]["auroc_mean"] == auroc and group_rows[name]["roc"] == rows[name]["roc"], name
        assert f"| {auroc:.4f} |" in markdown, name
    assert "| detection AUROC | TPR % at 1 % FPR |" in markdown
    assert "art-prune benchmark --data digits" in markdown
    assert "## badnets on digits, small-cnn, poison rate 0.1 (seeds 0)" in markdown
    no_defence = rows["no defence"]
    # One seed: the figures themselves, no "±".
    line = f"| no defence | {no_defence['clean_accuracy']:.2f} | {no_defence['attack_success_rate']:.2f} |"
    assert line in markdown and "±" not in markdown
    assert "| no defence |" in capsys.readouterr().out


def test_defence_registry_matches_the_command_line_names():
    """The CLI checks --defences against _defaults.DEFENCE_NAMES without importing TensorFlow: keep both equal."""
    from art_pruning_defense._defaults import DEFENCE_NAMES

    assert bench.defence_names() == DEFENCE_NAMES
    assert set(bench.__all__) >= {"BenchmarkConfig", "run_benchmark", "write_benchmark", "DEFENCES", "train_badnet"}


def test_roc_curves_of_one_score_are_drawn_once():
    from art_pruning_defense.benchmark.report import _distinct_curves

    a, b = {"fpr": [0.0, 1.0], "tpr": [0.5, 1.0]}, {"fpr": [0.0, 1.0], "tpr": [0.2, 1.0]}
    merged = _distinct_curves([("GoodNet", a), ("STRIP", b), ("GoodNet (1% FPR)", dict(a))])
    assert merged == [("GoodNet / GoodNet (1% FPR)", a), ("STRIP", b)]
