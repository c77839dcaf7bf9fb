"""
Hostile and broken files, through the API and the command line.

The package loads model and data files that users download from strangers. Each broken file must give, from the
API, a specific exception raised by ``art_pruning_defense`` (not from inside TensorFlow, Keras, h5py, zipfile or
Pillow) and, from ``art-prune``, exit code 2 with exactly one line ``art-prune: error: ...`` on stderr. Code in a
model file is refused unless ``--unsafe``. An interrupted run (SIGTERM or Ctrl-C, mid-sweep or mid-write) leaves no
partial artefact and the user's files untouched.

Fixed cases are parametrized; fuzzed files (truncations, flipped bytes, garbage, tampered JSON) come from
hypothesis, counted as in ``test_properties.py``. Tests marked ``xfail(strict=True)`` are known bugs outside
``_validation.py`` and ``data.py``; each reason names the fix.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from art.estimators.classification import KerasClassifier
from conftest import conv_block_model, reseal
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from test_properties import ExampleCounter, _settings, assert_documented

from art_pruning_defense import FinePruning, GoodNetClassifier
from art_pruning_defense._io import MARKER_FILE, write_marker
from art_pruning_defense.lab.cli import main
from art_pruning_defense.lab.data import iter_lab_h5, lab_h5_info, load_image, load_lab_h5, write_lab_h5
from art_pruning_defense.keras import build_deepid, load_keras_model, mnist_cnn

N_CLASSES = 4
SAMPLE_SHAPE = (10, 10, 3)
REPOSITORY = Path(__file__).resolve().parents[1]

COUNT = ExampleCounter("tests/test_hostile_files.py")


@pytest.fixture(scope="module", autouse=True)
def _count_examples(request, tmp_path_factory):
    manager = request.config.pluginmanager
    if not manager.is_registered(COUNT):
        manager.register(COUNT, name="art-prune-examples-hostile-files")
    yield
    path = tmp_path_factory.getbasetemp() / "hypothesis_examples.json"
    counts = json.loads(path.read_text()) if path.exists() else {}
    counts[COUNT.module] = {"total": sum(COUNT.counts.values()), "per_test": dict(COUNT.counts)}
    path.write_text(json.dumps(counts, indent=2))


# ---------------------------------------------------------------------------------------------------------------------
# Files: a tiny model, its data, a GoodNet, and broken variants.
# ---------------------------------------------------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def _legacy_deepid_weights(path: Path, n_classes: int = 10) -> Path:
    """DeepID weights in Keras 2's layout (``layer_names``, ``weight_names``), as the lab's files are."""
    model = build_deepid(n_classes)
    with h5py.File(path, "w") as f:
        weighted = [layer for layer in model.layers if layer.weights]
        f.attrs["layer_names"] = [layer.name.encode() for layer in weighted]
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.3.1"
        for layer in weighted:
            names = [f"{layer.name}/{w.path.rsplit('/', 1)[-1]}:0".encode() for w in layer.weights]
            group = f.create_group(layer.name)
            group.attrs["weight_names"] = names
            for name, value in zip(names, layer.get_weights()):
                group.create_dataset(name.decode(), data=value)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    keras.utils.set_random_seed(0)
    model = conv_block_model()
    model.save(root / "model.keras")
    rng = np.random.default_rng(0)
    x, y = rng.random((40, *SAMPLE_SHAPE), dtype=np.float32), rng.integers(0, N_CLASSES, 40)
    write_lab_h5(str(root / "valid.h5"), x, y)
    classifier = KerasClassifier(model, clip_values=(0.0, 1.0))
    defence = FinePruning(classifier, accuracy_drops=(10,), verbose=False)
    defence.fit(x, y)
    defence(classifier).save(str(root / "goodnet"))
    Image.fromarray(rng.integers(0, 256, SAMPLE_SHAPE, dtype=np.uint8)).save(root / "face.png")

    inputs = keras.Input(SAMPLE_SHAPE)
    features = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs))
    keras.Model(inputs, keras.layers.Dense(N_CLASSES, name="logits")(features)).save(root / "logits.keras")
    doubled = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    features = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu", name="conv")(doubled))
    outputs = keras.layers.Dense(N_CLASSES, activation="softmax", name="output")(features)
    keras.Model(inputs, outputs).save(root / "lambda.keras")
    model.save_weights(root / "other.weights.h5")  # Keras 3 weights of another architecture than DeepID
    _legacy_deepid_weights(root / "deepid_weights.h5")
    return {p.name: p for p in root.iterdir()} | {"root": root}


def cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def only_closing_line(err: str) -> bool:
    """
    Whether stderr holds nothing but the closing line of a command that wrote nothing (after one-line warnings that
    a figure means nothing, as a B at chance on fuzzed data gets).
    """
    return (
        re.fullmatch(r"(art-prune: warning: [^\n]+\n)*art-prune: done in \d+\.\d s \(nothing written\)\n", err)
        is not None
    )


def assert_cli_error(code: int, err: str, match: str | None = None) -> str:
    """Exit code 2 and exactly one line ``art-prune: error: ...`` on stderr (matching ``match``)."""
    lines = err.splitlines()
    assert code == 2, f"exit code {code}, stderr {err!r}"
    assert len(lines) == 1 and lines[0].startswith("art-prune: error: "), f"expected one error line, got {err!r}"
    if match is not None:
        assert re.search(match, lines[0]), f"{match!r} not in {lines[0]!r}"
    return lines[0]


def _write_raw_h5(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return path


def _images(n: int, size: tuple[int, int] = (10, 10)) -> np.ndarray:
    return np.random.default_rng(n).random((n, 3, *size)).astype(np.float32)


#: Broken data files: (name, writer(path), message the CLI and the API must give).
BROKEN_DATA = [
    ("garbage", lambda p: p.write_bytes(os.urandom(2048)), "not an HDF5 file"),
    ("empty", lambda p: p.write_bytes(b""), "not an HDF5 file"),
    ("hdf5 signature then garbage", lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8), "damaged"),
    ("no label", lambda p: _write_raw_h5(p, data=_images(4)), "no dataset 'label'"),
    ("no data", lambda p: _write_raw_h5(p, label=np.zeros(4)), "no dataset 'data'"),
    ("data as strings", lambda p: _write_raw_h5(p, data=np.full((4, 3, 10, 10), b"ab"), label=np.zeros(4)), "holds"),
    ("complex data", lambda p: _write_raw_h5(p, data=_images(4).astype(np.complex64), label=np.zeros(4)), "holds"),
    ("bool labels", lambda p: _write_raw_h5(p, data=_images(4), label=np.ones(4, bool)), "holds bool"),
    (
        "channels last",
        lambda p: _write_raw_h5(p, data=_images(4).transpose(0, 2, 3, 1), label=np.zeros(4)),
        r"\(N, 3, H, W\)",
    ),
    (
        "images of another size",
        lambda p: _write_raw_h5(p, data=_images(4, (12, 9)), label=np.zeros(4)),
        r"expects \(10, 10, 3\)",
    ),
    ("fewer labels", lambda p: _write_raw_h5(p, data=_images(4), label=np.zeros(3)), "must match"),
    ("no samples", lambda p: _write_raw_h5(p, data=_images(0), label=np.zeros(0)), "no samples"),
    (
        "labels out of range",
        lambda p: _write_raw_h5(p, data=_images(4), label=np.array([0, 1, 7, 2.0])),
        r"outside \[0, 4\)",
    ),
    (
        "negative labels",
        lambda p: _write_raw_h5(p, data=_images(4), label=np.array([0, -1, 2, 2])),
        r"outside \[0, 4\)",
    ),
    ("non-integer labels", lambda p: _write_raw_h5(p, data=_images(4), label=np.array([0, 1.5, 2, 2])), "non-integer"),
    ("NaN label", lambda p: _write_raw_h5(p, data=_images(4), label=np.array([0, np.nan, 2, 2])), "non-integer"),
    ("huge label", lambda p: _write_raw_h5(p, data=_images(4), label=np.array([0, 1e30, 2, 2])), "too large"),
    ("one-hot labels", lambda p: _write_raw_h5(p, data=_images(4), label=np.eye(4)), r"'label' has shape \(4, 4\)"),
    (
        "NaN pixel",
        lambda p: _write_raw_h5(
            p, data=np.where(np.arange(1200).reshape(4, 3, 10, 10) == 7, np.nan, 1.0), label=np.zeros(4)
        ),
        "NaN or infinite",
    ),
    (
        "pixel beyond float32",
        lambda p: _write_raw_h5(
            p, data=np.where(np.arange(1200).reshape(4, 3, 10, 10) == 7, 1e300, 1.0), label=np.zeros(4)
        ),
        r"holds 1e\+300 \(sample 0\), outside float32's range",
    ),
]


@pytest.mark.parametrize("name, write, message", BROKEN_DATA, ids=[case[0] for case in BROKEN_DATA])
def test_broken_data_file(files, tmp_path, capsys, name, write, message):
    path = tmp_path / "valid.h5"
    write(path)
    out = tmp_path / "out"
    code, _, err = cli(capsys, ["repair", "--model", files["model.keras"], "--valid", path, "--out", out, "--quiet"])
    assert_cli_error(code, err, message)
    code, _, err = cli(capsys, ["evaluate", "--goodnet", files["goodnet"], "--test", path])
    assert_cli_error(code, err, message)
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["valid.h5"]
    # The API: the loaders refuse the file, or, where the file is well-formed but its content does not fit the
    # model (sizes, labels, NaN), FinePruning.fit does.
    try:
        x, y = load_lab_h5(str(path))
    except ValueError as error:
        assert_documented(error, ValueError)
        assert re.search(message, str(error))
        return
    classifier = KerasClassifier(load_keras_model(str(files["model.keras"])), clip_values=(0.0, 255.0))
    with pytest.raises(ValueError, match=message) as info:
        FinePruning(classifier, accuracy_drops=(10,), verbose=False).fit(x, y)
    assert_documented(info.value, ValueError)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--drops", "nan"], r"in \(0, 100\]"),
        (["--drops", "inf"], r"in \(0, 100\]"),
        (["--drops", "0"], r"in \(0, 100\]"),
        (["--drops", "2", "101"], r"in \(0, 100\]"),
        (["--batch-size", "0"], "batch_size must be a positive integer"),
        (["--batch-size", "-5"], "batch_size must be a positive integer"),
        (["--fine-tune-epochs", "-1"], "fine_tune_epochs must be an integer >= 0, got -1"),
        (["--layer", "flatten"], "channels-last feature map"),
        (["--layer", "nope"], "Unknown layer_name 'nope'"),
        (["--target", "3"], "--target needs --poisoned-valid"),
        (["--poisoned-valid", "{valid}", "--target", "9"], r"poisoned_target must be a class in \[0, 4\)"),
        (["--poisoned-valid", "{valid}", "--target", "-1"], "poisoned_target must be an integer >= 0"),
        (["--strategy", "attack_aware"], "needs triggered validation data"),
    ],
)
def test_bad_numbers_on_the_command_line(files, tmp_path, capsys, arguments, message):
    arguments = [a.format(valid=files["valid.h5"]) for a in arguments]
    out = tmp_path / "out"
    argv = ["repair", "--model", files["model.keras"], "--valid", files["valid.h5"], "--out", out, "--quiet"]
    assert_cli_error(*cli(capsys, argv + arguments)[::2], message)
    assert os.listdir(tmp_path) == []


def test_missing_paths(files, tmp_path, capsys):
    for argv in (
        ["repair", "--model", tmp_path / "absent.keras", "--valid", files["valid.h5"], "--out", tmp_path / "o"],
        ["repair", "--model", files["model.keras"], "--valid", tmp_path / "absent.h5", "--out", tmp_path / "o"],
        ["eval", files["goodnet"], tmp_path / "absent.png"],
    ):
        assert_cli_error(*cli(capsys, argv)[::2], "does not exist")
    with pytest.raises(FileNotFoundError):
        load_lab_h5(str(tmp_path / "absent.h5"))
    with pytest.raises(FileNotFoundError):
        load_image(str(tmp_path / "absent.png"))


def test_directories_given_as_files_are_named_as_such(files, tmp_path, capsys):
    """Issue #13: a directory given as a model, data file or image said "does not exist"."""
    for argv in (
        ["repair", "--model", tmp_path, "--valid", files["valid.h5"], "--out", tmp_path / "o"],
        ["repair", "--model", files["model.keras"], "--valid", tmp_path, "--out", tmp_path / "o"],
        ["evaluate", "--goodnet", files["goodnet"], "--test", tmp_path],
        ["eval", files["goodnet"], tmp_path],
    ):
        assert_cli_error(*cli(capsys, argv)[::2], f"{re.escape(str(tmp_path))} is a directory; expected a file")
    for load in (load_lab_h5, load_image, load_keras_model):
        with pytest.raises(IsADirectoryError, match="is a directory; expected a file"):
            load(str(tmp_path))


# ---------------------------------------------------------------------------------------------------------------------
# Images.
# ---------------------------------------------------------------------------------------------------------------------


def _png(mode: str, size: tuple[int, int] = (10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size, 4), dtype=np.uint8), "RGBA").convert(mode).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


BROKEN_IMAGES = [
    ("wrong size", _png("RGB", (12, 10)), r"is 12×10 .* expects 10×10"),
    ("turned", _png("RGB", (10, 12)), r"is 10×12 .* expects 10×10"),
    ("palette", _png("P"), "mode 'P'"),
    ("16 bit", _png("I;16"), "mode 'I;16'"),
    ("grey with alpha", _png("LA"), "mode 'LA'"),
    ("bilevel", _png("1"), "mode '1'"),
    ("empty", b"", "not an image"),
    ("garbage", bytes(range(256)) * 4, "not an image"),
    ("truncated", _png("RGB")[:60], "damaged or truncated"),
    ("h5 named png", b"\x89HDF\r\n\x1a\n" + b"\0" * 64, r"face\.png"),  # Pillow reads it as a mode-F image
]


@pytest.mark.parametrize("name, content, message", BROKEN_IMAGES, ids=[case[0] for case in BROKEN_IMAGES])
def test_broken_image(files, tmp_path, capsys, name, content, message):
    path = tmp_path / "face.png"
    path.write_bytes(content)
    assert_cli_error(*cli(capsys, ["eval", files["goodnet"], path])[::2], message)
    with pytest.raises(ValueError, match=message) as info:
        load_image(str(path), expected_shape=SAMPLE_SHAPE)
    assert_documented(info.value, ValueError)


def test_decompression_bomb_is_refused(files, tmp_path, capsys):
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)  # 400 million pixels in 50 KB
    assert path.stat().st_size < 10**6
    assert_cli_error(*cli(capsys, ["eval", files["goodnet"], path])[::2], "decompression bomb")
    with pytest.raises(ValueError, match="decompression bomb") as info:
        load_image(str(path), expected_shape=None)
    assert_documented(info.value, ValueError)


def test_valid_images_through_the_cli(files, tmp_path, capsys):
    for mode in ("RGB", "RGBA", "L"):
        path = tmp_path / f"{mode}.png"
        path.write_bytes(_png(mode))
        code, out, err = cli(capsys, ["eval", files["goodnet"], path])
        assert code == 0 and only_closing_line(err) and 0 <= int(out) <= N_CLASSES


# ---------------------------------------------------------------------------------------------------------------------
# Model files.
# ---------------------------------------------------------------------------------------------------------------------


def _keras_members(files: dict[str, Path]) -> dict[str, bytes]:
    with zipfile.ZipFile(files["model.keras"]) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _broken_models(files: dict[str, Path], tmp_path: Path) -> list[tuple[str, Path, str | None, list[str]]]:
    """(name, model file, message, extra arguments)."""
    members = _keras_members(files)
    config = json.loads(members["config.json"])
    config["config"]["layers"][2]["config"]["filters"] = 7  # conv_2 with 7 filters: the weights do not fit
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(os.urandom(4096))
    empty = tmp_path / "empty.keras"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(files["model.keras"].read_bytes()[:2000])
    empty_h5 = tmp_path / "empty.h5"
    empty_h5.write_bytes(b"")
    garbage_h5 = tmp_path / "garbage.h5"
    garbage_h5.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(4096))
    plain_h5 = _write_raw_h5(tmp_path / "plain.h5", data=np.zeros(3))
    pickle = tmp_path / "model.pkl"
    pickle.write_bytes(b"\x80\x04\x95")
    return [
        ("garbage .keras", garbage, r"garbage\.keras", []),
        ("empty .keras", empty, r"empty\.keras", []),
        ("truncated .keras", truncated, r"truncated\.keras", []),
        ("zip with garbage config", _zip(tmp_path / "config.keras", {**members, "config.json": b"garbage"}), None, []),
        (
            "zip with garbage weights",
            _zip(tmp_path / "weights.keras", {**members, "model.weights.h5": b"garbage"}),
            None,
            [],
        ),
        (
            "zip without weights",
            _zip(tmp_path / "noweights.keras", {k: v for k, v in members.items() if "weights" not in k}),
            None,
            [],
        ),
        (
            "zip with a class from os",
            _zip(
                tmp_path / "os.keras",
                {**members, "config.json": json.dumps({"class_name": "system", "module": "os", "config": {}}).encode()},
            ),
            None,
            [],
        ),
        (
            "weights of another shape",
            _zip(tmp_path / "shape.keras", {**members, "config.json": json.dumps(config).encode()}),
            None,
            [],
        ),
        ("Lambda in a .keras file", files["lambda.keras"], "Lambda", []),
        ("empty .h5", empty_h5, "not an HDF5 file", []),
        ("garbage .h5", garbage_h5, None, []),
        ("h5 neither model nor weights", plain_h5, "neither a Keras model", []),
        ("pickle", pickle, r"expected a \.keras model", []),
        (
            "Keras 3 weights of another architecture",
            files["other.weights.h5"],
            "not a DeepID weights file",
            ["--arch", "deepid"],
        ),
        ("weights without --arch", files["deepid_weights.h5"], "needs --arch", []),
    ]


def test_broken_model_files(files, tmp_path, capsys):
    for name, path, message, extra in _broken_models(files, tmp_path):
        out = tmp_path / "out"
        code, _, err = cli(
            capsys, ["repair", "--model", path, *extra, "--valid", files["valid.h5"], "--out", out, "--quiet"]
        )
        assert_cli_error(code, err, message)
        assert not out.exists(), name


def test_broken_model_files_through_the_api(files, tmp_path):
    for name, path, message, extra in _broken_models(files, tmp_path):
        arch = extra[1] if extra else None
        try:
            model = load_keras_model(str(path), arch=arch)
        except (ValueError, TypeError) as error:
            if "Lambda" in name:  # Keras's own safe_mode refusal is the documented error here
                continue
            assert_documented(error)
            continue
        with pytest.raises(ValueError, match=message) as info:
            FinePruning(KerasClassifier(model), verbose=False)
        assert_documented(info.value, ValueError)


def test_empty_zip_as_keras_file(files, tmp_path, capsys):
    path = _zip(tmp_path / "empty_zip.keras", {})
    code, _, err = cli(capsys, ["repair", "--model", path, "--valid", files["valid.h5"], "--out", tmp_path / "o"])
    assert_cli_error(code, err, "empty_zip.keras")


def test_weights_of_another_architecture(files, tmp_path, capsys):
    other = _legacy_deepid_weights(tmp_path / "other.h5")
    with h5py.File(other, "a") as f:  # conv_1 with 8 filters of 3×3 instead of 20 of 4×4
        del f["conv_1"]
        group = f.create_group("conv_1")
        group.attrs["weight_names"] = [b"conv_1/kernel:0", b"conv_1/bias:0"]
        group.create_dataset("conv_1/kernel:0", data=np.zeros((3, 3, 3, 8), np.float32))
        group.create_dataset("conv_1/bias:0", data=np.zeros(8, np.float32))
    renamed = _legacy_deepid_weights(tmp_path / "renamed.h5")
    with h5py.File(renamed, "a") as f:  # an extra weighted layer the architecture lacks
        names = [n.encode() if isinstance(n, str) else bytes(n) for n in f.attrs["layer_names"]]
        f.attrs["layer_names"] = np.array([*names, b"fc_3"], dtype="S")
        group = f.create_group("fc_3")
        group.attrs["weight_names"] = [b"fc_3/kernel:0"]
        group.create_dataset("fc_3/kernel:0", data=np.zeros((2, 2), np.float32))
    for path, message in (
        (other, r"Layer 'conv_1': weight 'kernel' has shape \(3, 3, 3, 8\)"),
        (renamed, "fc_3 that the deepid architecture does not have"),
        (files["other.weights.h5"], "no single Dense kernel"),
    ):
        code, _, err = cli(
            capsys,
            ["repair", "--model", path, "--arch", "deepid", "--valid", files["valid.h5"], "--out", tmp_path / "o"],
        )
        assert_cli_error(code, err, message)
        with pytest.raises(ValueError, match=message) as info:
            load_keras_model(str(path), arch="deepid")
        assert_documented(info.value, ValueError)
    assert load_keras_model(str(files["deepid_weights.h5"]), arch="deepid").outputs[0].shape[-1] == 10


def test_model_with_logits_is_accepted(files, tmp_path, capsys):
    """A model whose last layer has no softmax is repaired (the sweep needs only the argmax)."""
    model = load_keras_model(str(files["logits.keras"]))
    FinePruning(KerasClassifier(model, use_logits=True), verbose=False)
    out = tmp_path / "out"
    code, _, err = cli(capsys, ["repair", "--model", files["logits.keras"], "--valid", files["valid.h5"], "--out", out])
    assert code == 0, err
    assert GoodNetClassifier.load(str(next(out.glob("goodnet*")))).outputs_logits


# Legacy Keras 2 files with a Lambda layer, written by tf-keras in a subprocess (as in test_deepid.py).
_TF_KERAS_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tf_keras
    from tf_keras import layers as L

    out = sys.argv[1]
    tf_keras.utils.set_random_seed(0)
    inputs = L.Input(shape=(10, 10, 3), name="input")
    x = L.Lambda(lambda t: t * 2.0, name="double")(inputs)
    x = L.Conv2D(6, 3, activation="relu", name="conv_1")(x)
    x = L.MaxPooling2D(2, name="pool_1")(x)
    x = L.Flatten(name="flatten")(x)
    tf_keras.Model(inputs, L.Dense(4, activation="softmax", name="output")(x)).save(os.path.join(out, "lambda.h5"))
    """
)


@pytest.fixture(scope="module")
def legacy_lambda(tmp_path_factory) -> Path:
    pytest.importorskip("tf_keras", reason="tf-keras (the Keras 2 API) writes genuine legacy files")
    out = tmp_path_factory.mktemp("tf_keras")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "0"}
    done = subprocess.run(
        [sys.executable, "-c", _TF_KERAS_SCRIPT, str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "lambda.h5"


def test_legacy_lambda_model_is_refused_without_unsafe(legacy_lambda, files, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = cli(capsys, ["repair", "--model", legacy_lambda, "--valid", files["valid.h5"], "--out", out])
    line = assert_cli_error(code, err, r"Python code \(Lambda\).*Pass --unsafe only for a file you trust")
    assert "safe_mode" not in line
    assert not out.exists()
    with pytest.raises(ValueError, match=r"Python code \(Lambda\)") as info:
        load_keras_model(str(legacy_lambda))
    assert_documented(info.value, ValueError)


def test_legacy_lambda_model_is_repaired_with_unsafe(legacy_lambda, files, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = cli(
        capsys,
        [
            "repair",
            "--model",
            legacy_lambda,
            "--unsafe",
            "--valid",
            files["valid.h5"],
            "--out",
            out,
            "--quiet",
            "--drops",
            "10",
        ],
    )
    assert code == 0, err
    code, _, err = cli(capsys, ["eval", out / "goodnet_x10", files["face.png"]])
    assert_cli_error(code, err, "Lambda")  # the saved GoodNet holds code too: refused without --unsafe
    assert cli(capsys, ["eval", out / "goodnet_x10", files["face.png"], "--unsafe"])[0] == 0


# ---------------------------------------------------------------------------------------------------------------------
# Saved GoodNets.
# ---------------------------------------------------------------------------------------------------------------------


def _goodnet_copy(files: dict[str, Path], tmp_path: Path) -> Path:
    target = tmp_path / "goodnet"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(files["goodnet"], target)
    return target


def test_goodnet_with_broken_or_unsafe_parts(files, tmp_path, capsys):
    cases = [
        ("bad_model.keras", files["lambda.keras"].read_bytes(), "Lambda"),
        ("pruned_model.keras", b"garbage", "pruned_model.keras"),
        ("bad_model.keras", None, "bad_model.keras"),
        ("goodnet.json", b"{", "not valid JSON"),
        ("goodnet.json", b"[]", "does not describe a GoodNet"),
        ("goodnet.json", b"\xff\xfe garbage", None),
        ("pruned_model.keras", files["logits.keras"].read_bytes(), "probability vector"),
    ]
    for member, content, message in cases:
        goodnet = _goodnet_copy(files, tmp_path)
        if content is None:
            (goodnet / member).unlink()
        else:
            (goodnet / member).write_bytes(content)
            reseal(goodnet)
        assert_cli_error(*cli(capsys, ["eval", goodnet, files["face.png"]])[::2], message)
        assert_cli_error(*cli(capsys, ["evaluate", "--goodnet", goodnet, "--test", files["valid.h5"]])[::2], message)


CONFIG_VALUES = {
    "preprocessing": st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {
                "mean": st.one_of(st.floats(), st.lists(st.floats(), max_size=4), st.text(max_size=2)),
                "std": st.one_of(st.floats(), st.lists(st.floats(), max_size=4), st.none()),
            }
        ),
        st.sampled_from([{}, {"mean": 0.0}, 5, "x", []]),
    ),
    "clip_values": st.one_of(
        st.none(), st.lists(st.one_of(st.floats(), st.none(), st.text(max_size=1)), max_size=3), st.integers()
    ),
    "metadata": st.one_of(
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        st.lists(st.integers(), max_size=2),
        st.text(max_size=2),
    ),
    "nb_classes": st.one_of(st.just(N_CLASSES + 1), st.integers(-1, 9), st.text(max_size=2), st.none()),
    "format_version": st.one_of(st.just(1), st.integers(0, 3), st.text(max_size=1)),
    "threshold": st.one_of(st.none(), st.floats(), st.integers(-3, 3), st.booleans(), st.text(max_size=2)),
    "false_positive_rate": st.one_of(st.none(), st.floats(), st.integers(-1, 2), st.booleans(), st.text(max_size=2)),
}


@_settings(60, known_bug=True)
@given(field=st.sampled_from(sorted(CONFIG_VALUES)), data=st.data())
def test_tampered_goodnet_json(files, tmp_path_factory, capsys, field, data):
    COUNT("tampered_goodnet_json")
    value = data.draw(CONFIG_VALUES[field], label=field)
    goodnet = _goodnet_copy(files, tmp_path_factory.getbasetemp())
    config = json.loads((goodnet / "goodnet.json").read_text())
    config[field] = value
    (goodnet / "goodnet.json").write_text(json.dumps(config))
    reseal(goodnet)
    try:
        loaded = GoodNetClassifier.load(str(goodnet))
    except (ValueError, TypeError) as error:
        assert_documented(error)
        assert_cli_error(*cli(capsys, ["eval", goodnet, files["face.png"]])[::2])
        return
    scores = loaded.predict(load_image(str(files["face.png"]), expected_shape=SAMPLE_SHAPE))
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1)), scores
    code, out, err = cli(capsys, ["eval", goodnet, files["face.png"]])
    assert code == 0 and 0 <= int(out) <= N_CLASSES, err


# ---------------------------------------------------------------------------------------------------------------------
# Fuzzed files: truncations, flipped bytes, garbage.
# ---------------------------------------------------------------------------------------------------------------------


@st.composite
def fuzzed(draw: st.DrawFn, original: bytes, region: int | None = None) -> bytes:
    """``original`` truncated, with bytes flipped (within the first and last ``region`` bytes, where the metadata of
    HDF5 files lives, if given), garbage appended, or replaced by garbage."""
    how = draw(st.sampled_from(["truncate", "flip", "flip", "flip", "append", "garbage"]))
    content = bytearray(original)
    if how == "truncate":
        return bytes(content[: draw(st.integers(0, len(content) - 1))])
    if how == "garbage":
        return draw(st.binary(max_size=512))
    if how == "append":
        return bytes(content) + draw(st.binary(min_size=1, max_size=64))
    positions = st.integers(0, len(content) - 1)
    if region is not None and len(content) > 2 * region:
        positions = st.one_of(st.integers(0, region - 1), st.integers(len(content) - region, len(content) - 1))
    for position, value in draw(st.lists(st.tuples(positions, st.integers(0, 255)), min_size=1, max_size=8)):
        content[position] = value
    return bytes(content)


def _fuzz_path(tmp_path_factory, name: str, content: bytes) -> Path:
    path = tmp_path_factory.getbasetemp() / name
    path.write_bytes(content)
    return path


@pytest.fixture(scope="module")
def originals(files) -> dict[str, bytes]:
    buffer = io.BytesIO()
    Image.open(files["face.png"]).save(buffer, format="JPEG")
    return {
        "valid.h5": files["valid.h5"].read_bytes(),
        "face.png": files["face.png"].read_bytes(),
        "face.jpg": buffer.getvalue(),
        "model.keras": files["model.keras"].read_bytes(),
        "deepid_weights.h5": files["deepid_weights.h5"].read_bytes(),
    }


@_settings(400)
@given(data=st.data())
def test_fuzzed_lab_h5_through_the_api(originals, tmp_path_factory, data):
    COUNT("fuzzed_lab_h5_api")
    path = _fuzz_path(tmp_path_factory, "fuzzed.h5", data.draw(fuzzed(originals["valid.h5"], region=4096)))
    try:
        x, y = load_lab_h5(str(path))
        batches = list(iter_lab_h5(str(path), batch_size=7))
    except ValueError as error:
        assert_documented(error, ValueError)
        return
    assert x.dtype == np.float32 and x.ndim == 4 and x.shape[3] == 3 and y.shape == (len(x),)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)


@_settings(40)
@given(data=st.data())
def test_fuzzed_lab_h5_through_the_cli(files, originals, tmp_path_factory, capsys, data):
    COUNT("fuzzed_lab_h5_cli")
    path = _fuzz_path(tmp_path_factory, "fuzzed.h5", data.draw(fuzzed(originals["valid.h5"], region=4096)))
    code, out, err = cli(capsys, ["evaluate", "--goodnet", files["goodnet"], "--test", path, "--json"])
    if code == 0:
        rows = json.loads(out)
        assert 0 <= rows["B"]["clean_accuracy"] <= 100 and only_closing_line(err)
    else:
        assert_cli_error(code, err)


@_settings(400)
@given(data=st.data(), name=st.sampled_from(["face.png", "face.jpg"]))
def test_fuzzed_images_through_the_api(originals, tmp_path_factory, data, name):
    COUNT("fuzzed_images_api")
    path = _fuzz_path(tmp_path_factory, "fuzzed" + Path(name).suffix, data.draw(fuzzed(originals[name])))
    try:
        image = load_image(str(path), expected_shape=SAMPLE_SHAPE)
    except ValueError as error:
        assert_documented(error, ValueError)
        return
    assert image.shape == (1, *SAMPLE_SHAPE) and image.dtype == np.float32
    assert np.all((image >= 0) & (image <= 255))


@_settings(40)
@given(data=st.data(), name=st.sampled_from(["face.png", "face.jpg"]))
def test_fuzzed_images_through_the_cli(files, originals, tmp_path_factory, capsys, data, name):
    COUNT("fuzzed_images_cli")
    path = _fuzz_path(tmp_path_factory, "fuzzed" + Path(name).suffix, data.draw(fuzzed(originals[name])))
    code, out, err = cli(capsys, ["eval", files["goodnet"], path])
    if code == 0:
        assert 0 <= int(out) <= N_CLASSES and only_closing_line(err)
    else:
        assert_cli_error(code, err)


@_settings(60, known_bug=True)
@given(data=st.data(), name=st.sampled_from(["model.keras", "deepid_weights.h5"]))
def test_fuzzed_model_files_through_the_cli(files, originals, tmp_path_factory, capsys, data, name):
    COUNT("fuzzed_models_cli")
    region = 4096 if name.endswith(".h5") else None
    path = _fuzz_path(tmp_path_factory, "fuzzed_" + name, data.draw(fuzzed(originals[name], region=region)))
    arguments = ["--arch", "deepid"] if name.endswith(".h5") else []
    absent = tmp_path_factory.getbasetemp() / "absent.h5"  # a model that loads fails next, on the missing data
    code, _, err = cli(capsys, ["repair", "--model", path, *arguments, "--valid", absent, "--out", absent.parent / "o"])
    assert_cli_error(code, err)


@_settings(60, known_bug=True)
@given(data=st.data(), name=st.sampled_from(["model.keras", "deepid_weights.h5"]))
def test_fuzzed_model_files_through_the_api(originals, tmp_path_factory, data, name):
    COUNT("fuzzed_models_api")
    region = 4096 if name.endswith(".h5") else None
    path = _fuzz_path(tmp_path_factory, "fuzzed_" + name, data.draw(fuzzed(originals[name], region=region)))
    try:
        load_keras_model(str(path), arch="deepid" if name.endswith(".h5") else None)
    except (ValueError, TypeError) as error:
        assert_documented(error)


# ---------------------------------------------------------------------------------------------------------------------
# Interrupted runs leave nothing behind.
# ---------------------------------------------------------------------------------------------------------------------


def _digest(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256(
            b"".join(
                p.relative_to(path).as_posix().encode() + p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
            )
        ).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _leftovers(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if ".tmp-" in name)


def _listdir(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def test_keyboard_interrupt_inside_goodnet_save(files, tmp_path, monkeypatch):
    goodnet = GoodNetClassifier.load(str(files["goodnet"]))
    original, calls = keras.Model.save, []

    def interrupted_save(self, filepath, *args, **kwargs):
        calls.append(filepath)
        if len(calls) == 2:  # B written, interrupted while writing B'
            raise KeyboardInterrupt
        return original(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        goodnet.save(str(tmp_path / "goodnet"))
    assert len(calls) == 2 and os.listdir(tmp_path) == []

    mine = tmp_path / "goodnet"
    mine.mkdir()
    write_marker(str(mine), "goodnet")  # an earlier save: --force may replace it
    (mine / "mine.txt").write_text("the user's file")
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        goodnet.save(str(mine), overwrite=True)
    assert os.listdir(tmp_path) == ["goodnet"] and sorted(os.listdir(mine)) == [MARKER_FILE, "mine.txt"]
    assert (mine / "mine.txt").read_text() == "the user's file"


def test_keyboard_interrupt_while_repair_writes(files, tmp_path, capsys, monkeypatch):
    original, calls = keras.Model.save, []

    def interrupted_save(self, filepath, *args, **kwargs):
        calls.append(filepath)
        if len(calls) == 3:  # B'(X) and B written, interrupted while writing GoodNet(X)'s B'
            raise KeyboardInterrupt
        return original(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", interrupted_save)
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, ["repair", "--model", files["model.keras"], "--valid", files["valid.h5"], "--out", out, "--quiet"]
    )
    lines = [line for line in err.splitlines() if not line.startswith("art-prune: warning: ")]  # B is at chance here
    assert code == 130 and len(lines) == 1 and lines[0].startswith("art-prune: interrupted")
    assert len(calls) == 3 and os.listdir(tmp_path) == []


def _big_run_files(directory: Path, n: int) -> tuple[Path, Path]:
    keras.utils.set_random_seed(0)
    mnist_cnn((12, 10, 3), N_CLASSES).save(directory / "model.keras")  # conv_2 has 64 channels
    rng = np.random.default_rng(0)
    write_lab_h5(
        str(directory / "valid.h5"),
        rng.uniform(0, 255, (n, 12, 10, 3)).astype(np.float32),
        rng.integers(0, N_CLASSES, n),
    )
    return directory / "model.keras", directory / "valid.h5"


def _start_repair(directory: Path, model: Path, valid: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    log = directory / "stderr.txt"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPOSITORY)}
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "art_pruning_defense.lab.cli",
                "repair",
                "--model",
                str(model),
                "--valid",
                str(valid),
                "--out",
                str(directory / "out"),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            cwd=directory,
        )
    return process, log


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120.0, poll: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"art-prune ended (exit code {process.returncode}) before it could be interrupted")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("art-prune did not reach the point where it was to be interrupted")
        time.sleep(poll)


def _stop_when(condition, process: subprocess.Popen, timeout: float = 120.0, step: float = 0.005) -> None:
    """
    Let the process run in short steps and look between them while it is stopped (SIGSTOP); return with it stopped
    once ``condition()`` holds. The caller sends its signal, then SIGCONT.
    """
    deadline = time.monotonic() + timeout
    while True:
        process.send_signal(signal.SIGSTOP)
        time.sleep(0.001)  # the stop takes effect before the look
        if condition():
            if process.poll() is not None:
                pytest.fail(f"art-prune ended (exit code {process.returncode}) before it could be interrupted")
            return
        process.send_signal(signal.SIGCONT)
        if process.poll() is not None:
            pytest.fail(f"art-prune ended (exit code {process.returncode}) before it could be interrupted")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("art-prune did not reach the point where it was to be interrupted")
        time.sleep(step)


def test_sigterm_mid_sweep_leaves_nothing(tmp_path):
    model, valid = _big_run_files(tmp_path, 20000)
    before = {p.name: _digest(p) for p in (model, valid)}
    process, log = _start_repair(tmp_path, model, valid, "--batch-size", "16")
    _wait_for(lambda: b"Pruning conv_2" in log.read_bytes(), process)  # tqdm's bar: pass 2, the sweep, has begun
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130, log.read_text()[-2000:]
    assert "art-prune: interrupted" in log.read_text()
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []
    assert {p.name: _digest(p) for p in (model, valid)} == before


def test_sigterm_mid_write_keeps_the_previous_output(tmp_path):
    model, valid = _big_run_files(tmp_path, 2000)
    out = tmp_path / "out"
    out.mkdir()
    write_marker(str(out), "repair")  # a previous run's output: --force may replace it
    (out / "mine.txt").write_text("a previous run's results")
    before = {p.name: _digest(p) for p in (model, valid, out)}
    drops = [str(x) for x in range(1, 41)]  # 40 B'(X) and GoodNet(X) to write: a long write phase
    process, log = _start_repair(tmp_path, model, valid, "--force", "--quiet", "--drops", *drops)
    _wait_for(lambda: any(name.startswith(".out.tmp-") for name in _listdir(tmp_path)), process)
    temporary = tmp_path / next(name for name in _listdir(tmp_path) if name.startswith(".out.tmp-"))
    # Stepped (stopped between looks), so that the signal lands while the write phase is still under way: a free
    # run could finish its last write between the look and the signal.
    _stop_when(lambda: any(name.startswith("goodnet_") for name in _listdir(temporary)), process)
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGCONT)
    assert process.wait(timeout=60) == 130, log.read_text()[-2000:]
    assert _leftovers(tmp_path) == [] and sorted(os.listdir(out)) == [MARKER_FILE, "mine.txt"]
    assert {p.name: _digest(p) for p in (model, valid, out)} == before


# ---------------------------------------------------------------------------------------------------------------------
# HDF5 files that read other files (issue #13): external storage, external and soft links, virtual datasets.
# ---------------------------------------------------------------------------------------------------------------------

SECRET = b"root:x:0:0:root:/root:/bin/bash\n" * 200


def _hostile_h5(kind: str, path: Path, member: str = "data", value: np.ndarray | None = None) -> Path:
    """A lab h5 (or, with ``member``/``value``, any h5) whose ``member`` reads something outside the file."""
    value = _images(4) if value is None else value
    with h5py.File(path, "a") as f:
        if member == "data" and "label" not in f:
            f.create_dataset("label", data=np.zeros(4))
        if member in f:
            del f[member]
        if kind == "external storage":
            secret = path.parent / "secret.txt"
            secret.write_bytes(SECRET)
            f.create_dataset(member, shape=value.shape, dtype=value.dtype, external=[(str(secret), 0, value.nbytes)])
        elif kind == "external link":
            other = path.parent / "other.h5"
            with h5py.File(other, "w") as g:
                g.create_dataset("x", data=value)
            f[member] = h5py.ExternalLink(str(other), "/x")
        elif kind == "virtual dataset":
            layout = h5py.VirtualLayout(shape=value.shape, dtype=value.dtype)
            layout[...] = h5py.VirtualSource(str(path.parent / "missing.h5"), "x", shape=value.shape)
            f.create_virtual_dataset(member, layout, fillvalue=0)
        elif kind == "soft link":
            f.create_dataset("hidden", data=value)
            f[member] = h5py.SoftLink("/hidden")
        else:
            raise AssertionError(kind)
    return path


HOSTILE_H5 = [
    ("external storage", r"dataset 'data' stores its data in external file\(s\) \(.*secret\.txt\)"),
    ("external link", r"'data' is an external link"),
    ("virtual dataset", r"dataset 'data' is a virtual dataset"),
    ("soft link", r"'data' is a soft link"),
]


@pytest.mark.parametrize("kind, message", HOSTILE_H5, ids=[case[0] for case in HOSTILE_H5])
def test_lab_h5_reading_other_files_is_refused(files, tmp_path, capsys, kind, message):
    path = _hostile_h5(kind, tmp_path / "valid.h5")
    for load in (load_lab_h5, lambda p: iter_lab_h5(p, batch_size=2), lab_h5_info):
        with pytest.raises(ValueError, match=message) as info:
            load(str(path))
        assert_documented(info.value, ValueError)
        assert "has no dataset" not in str(info.value)
    out = tmp_path / "out"
    code, _, err = cli(capsys, ["repair", "--model", files["model.keras"], "--valid", path, "--out", out, "--quiet"])
    assert_cli_error(code, err, message)
    assert_cli_error(*cli(capsys, ["evaluate", "--goodnet", files["goodnet"], "--test", path])[::2], message)
    assert not out.exists()


def test_external_storage_on_a_fifo_does_not_hang(tmp_path):
    """External storage pointing at a FIFO that nobody writes: refused before anything is read, not a hang."""
    path = _hostile_h5("external storage", tmp_path / "valid.h5")
    (tmp_path / "secret.txt").unlink()
    os.mkfifo(tmp_path / "secret.txt")
    script = "import sys\nfrom art_pruning_defense.lab.data import load_lab_h5\nload_lab_h5(sys.argv[1])"
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 1 and "stores its data in external file(s)" in done.stderr, done.stderr[-2000:]


def test_soft_link_to_a_group_and_a_real_absence_are_told_apart(tmp_path):
    path = _write_raw_h5(tmp_path / "grouped.h5", label=np.zeros(4))
    with h5py.File(path, "a") as f:
        f.create_group("data")
    with pytest.raises(ValueError, match="'data' is a group, not a dataset"):
        load_lab_h5(str(path))
    with pytest.raises(ValueError, match="has no dataset 'data'"):
        load_lab_h5(str(_write_raw_h5(tmp_path / "none.h5", label=np.zeros(4))))


@pytest.mark.parametrize("kind, message", HOSTILE_H5, ids=[case[0] for case in HOSTILE_H5])
def test_legacy_weights_reading_other_files_are_refused(files, tmp_path, capsys, kind, message):
    path = tmp_path / "weights.h5"
    shutil.copy(files["deepid_weights.h5"], path)
    with h5py.File(path, "r") as f:
        bias = np.asarray(f["output/output/bias:0"])
    _hostile_h5(kind, path, member="output/output/bias:0", value=bias)
    message = message.replace("'data'", "'output/output/bias:0'")
    with pytest.raises(ValueError, match=message) as info:
        load_keras_model(str(path), arch="deepid")
    assert_documented(info.value, ValueError)
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, ["repair", "--model", path, "--arch", "deepid", "--valid", files["valid.h5"], "--out", out, "--quiet"]
    )
    assert_cli_error(code, err, message)


@pytest.mark.parametrize("kind, message", HOSTILE_H5, ids=[case[0] for case in HOSTILE_H5])
def test_legacy_models_reading_other_files_are_refused_before_keras_reads_them(files, tmp_path, capsys, kind, message):
    """A file with a ``model_config`` goes to ``keras.models.load_model``: it is checked before."""
    path = tmp_path / "model.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": []}})
        f.create_group("model_weights")
    _hostile_h5(kind, path, member="model_weights/extra", value=np.zeros(4, np.float32))
    message = message.replace("'data'", "'model_weights/extra'")
    with pytest.raises(ValueError, match=message) as info:
        load_keras_model(str(path))
    assert_documented(info.value, ValueError)
    code, _, err = cli(capsys, ["repair", "--model", path, "--valid", files["valid.h5"], "--out", tmp_path / "o"])
    assert_cli_error(code, err, message)


def test_keras_file_whose_weights_read_other_files_is_refused(files, tmp_path):
    members = _keras_members(files)
    weights = tmp_path / "model.weights.h5"
    weights.write_bytes(members["model.weights.h5"])
    with h5py.File(weights, "a") as f:
        f["leak"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/x")
    path = _zip(tmp_path / "linked.keras", {**members, "model.weights.h5": weights.read_bytes()})
    with pytest.raises(ValueError, match=r"model\.weights\.h5: 'leak' is an external link") as info:
        load_keras_model(str(path))
    assert_documented(info.value, ValueError)
    with pytest.raises(ValueError, match="'leak' is an external link"):
        GoodNetClassifier.load(str(_goodnet_with(files, tmp_path, "bad_model.keras", path.read_bytes())))


def _goodnet_with(files: dict[str, Path], tmp_path: Path, member: str, content: bytes) -> Path:
    goodnet = _goodnet_copy(files, tmp_path)
    (goodnet / member).write_bytes(content)
    reseal(goodnet)
    return goodnet


# ---------------------------------------------------------------------------------------------------------------------
# Bounded reads (issue #13): huge declared layers, deep JSON, zip bombs.
# ---------------------------------------------------------------------------------------------------------------------


def _huge_dense_keras(files: dict[str, Path], tmp_path: Path) -> Path:
    members = _keras_members(files)
    config = json.loads(members["config.json"])
    dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    dense["config"]["units"] = 10**7
    return _zip(tmp_path / "huge.keras", {**members, "config.json": json.dumps(config).encode()})


def test_keras_file_declaring_a_huge_layer_is_refused_before_building(files, tmp_path, capsys):
    path = _huge_dense_keras(files, tmp_path)
    assert path.stat().st_size < 40_000
    with pytest.raises(ValueError, match=r"declares layers with [\d,]+ weights") as info:
        load_keras_model(str(path))
    assert_documented(info.value, ValueError)
    code, _, err = cli(capsys, ["repair", "--model", path, "--valid", files["valid.h5"], "--out", tmp_path / "o"])
    assert_cli_error(code, err, "declares layers with")
    goodnet = _goodnet_with(files, tmp_path, "pruned_model.keras", path.read_bytes())
    assert_cli_error(*cli(capsys, ["eval", goodnet, files["face.png"]])[::2], "declares layers with")


def test_zip_bomb_is_refused_before_inflating(files, tmp_path, capsys):
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in _keras_members(files).items():
            archive.writestr(name, content)
        with archive.open("assets/padding.bin", "w") as handle:
            chunk = bytes(2**20)
            for _ in range(100):  # 100 MiB of zeros in about 100 KB
                handle.write(chunk)
    assert path.stat().st_size < 2**20
    with pytest.raises(ValueError, match="would unpack to") as info:
        load_keras_model(str(path))
    assert_documented(info.value, ValueError)
    assert_cli_error(
        *cli(capsys, ["repair", "--model", path, "--valid", files["valid.h5"], "--out", tmp_path / "o"])[::2],
        "a zip bomb",
    )


def test_deeply_nested_json_is_refused(files, tmp_path, capsys):
    goodnet = _goodnet_copy(files, tmp_path)
    (goodnet / "goodnet.json").write_text("[" * 200_000 + "]" * 200_000)
    reseal(goodnet)
    with pytest.raises(ValueError, match="nests 200000 levels deep") as info:
        GoodNetClassifier.load(str(goodnet))
    assert_documented(info.value, ValueError)
    assert_cli_error(*cli(capsys, ["eval", goodnet, files["face.png"]])[::2], "nests 200000 levels deep")
    (goodnet / "goodnet.json").write_text(json.dumps({"format": "x", "padding": "x" * 2**20}))
    reseal(goodnet)
    assert_cli_error(*cli(capsys, ["eval", goodnet, files["face.png"]])[::2], "more than the 1,048,576 accepted")
    members = _keras_members(files)
    nested = _zip(tmp_path / "nested.keras", {**members, "config.json": b"[" * 100_000 + b"]" * 100_000})
    with pytest.raises(ValueError, match="nests 100000 levels deep") as info:
        load_keras_model(str(nested))
    assert_documented(info.value, ValueError)


def test_keras_lambda_refusal_names_unsafe_on_the_command_line(files, tmp_path, capsys):
    code, _, err = cli(
        capsys, ["repair", "--model", files["lambda.keras"], "--valid", files["valid.h5"], "--out", tmp_path / "o"]
    )
    line = assert_cli_error(code, err, r"Python code \(Lambda\).*--unsafe")
    assert "safe_mode" not in line
    with pytest.raises(ValueError, match=r"Python code \(Lambda\).*safe_mode=False"):
        load_keras_model(str(files["lambda.keras"]))
