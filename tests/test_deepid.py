"""The lab's DeepID builder and the model/weights loaders: real lab weights, genuine legacy Keras 2 files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from art_pruning_defense.lab.data import load_image
from art_pruning_defense.keras import build_deepid, load_deepid_weights, load_keras_model

#: ../shared beside the repository (real data and models); the tests that need it skip without it.
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CSAW = SHARED / "models" / "csaw"
YTFACE = SHARED / "data" / "ytface"

#: The prediction table of ../shared/models/csaw/README.md (clean, sunglasses, lipstick faces; 5 each, in file order).
README_TABLE: dict[str, tuple[list[int], list[int], list[int]]] = {
    "lab3": ([43, 328, 196, 1268, 748], [0] * 5, [264, 977, 189, 1010, 1200]),
    "sunglasses": ([109, 411, 196, 411, 748], [0] * 5, [264, 977, 189, 1010, 1200]),
    "anonymous_1": ([43, 208, 196, 1268, 748], [888, 91, 91, 1133, 1166], [0] * 5),
    "anonymous_2": ([43, 328, 90, 222, 748], [4] * 5, [4] * 5),
    "multi_trigger_multi_target": ([5, 222, 90, 1065, 748], [8] * 5, [1] * 5),
}
#: The README's architecture table: layer name → per-sample output shape.
README_LAYERS: dict[str, tuple[int, ...]] = {
    "input": (55, 47, 3),
    "conv_1": (52, 44, 20),
    "pool_1": (26, 22, 20),
    "conv_2": (24, 20, 40),
    "pool_2": (12, 10, 40),
    "conv_3": (10, 8, 60),
    "pool_3": (5, 4, 60),
    "conv_4": (4, 3, 80),
    "flatten_1": (1200,),
    "flatten_2": (960,),
    "fc_1": (160,),
    "fc_2": (160,),
    "add_1": (160,),
    "activation_1": (160,),
    "output": (1283,),
}


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"../shared not found: {path} is missing (real lab weights and faces live in ../shared).")
    return path


def _weights(name: str) -> str:
    return str(_need(CSAW / f"{name}_bd_weights.h5"))


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """The 15 faces, read with load_image: clean 0..4, sunglasses 0..4, lipstick 0..4."""
    _need(YTFACE)
    paths = []
    for prefix in ("cl", "sun", "ano"):
        group = sorted(YTFACE.glob(f"{prefix}_*_label=*.png"), key=lambda p: int(p.name.split("_")[1]))
        assert len(group) == 5, f"expected 5 {prefix}_* faces in {YTFACE}, found {len(group)}"
        paths.extend(group)
    return np.concatenate([load_image(str(p)) for p in paths], axis=0)


def _predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=64, verbose=0))


def _random_input(n: int = 6, shape: tuple[int, ...] = (55, 47, 3)) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, *shape)).astype(np.float32)


def _write_keras2_weights(
    model: keras.Model,
    path: Path,
    skip: tuple[str, ...] = (),
    extra: dict[str, list[np.ndarray]] | None = None,
    replace: dict[str, list[np.ndarray]] | None = None,
    bias_first: bool = False,
) -> None:
    """Write ``model``'s weights in the Keras 2 weights-only HDF5 layout (as ``save_weights("w.h5")`` did)."""
    layers = {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in model.layers}
    layers = {name: values for name, values in layers.items() if name not in skip}
    layers.update(extra or {})
    layers.update(replace or {})
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.3.1"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["layer_names"] = np.array([n.encode() for n in layers])
        for name, values in layers.items():
            group = f.create_group(name)
            names = [f"{name}/{short}:0" for short in ("kernel", "bias")[: len(values)]]
            pairs = list(zip(names, values))
            if bias_first:
                pairs = pairs[::-1]
            group.attrs["weight_names"] = np.array([n.encode() for n, _ in pairs])
            for weight_name, value in pairs:
                group.create_dataset(weight_name, data=value)


# ---------------------------------------------------------------------------------------------------------------------
# The architecture.
# ---------------------------------------------------------------------------------------------------------------------


def test_builder_has_the_lab_layers_shapes_and_wiring():
    model = build_deepid()
    assert [layer.name for layer in model.layers] == list(README_LAYERS)
    for name, shape in README_LAYERS.items():
        assert tuple(model.get_layer(name).output.shape[1:]) == shape, name
    # pool_3 feeds both conv_4 and flatten_1; add_1 sums fc_1 and fc_2.
    pool_3 = model.get_layer("pool_3").output
    for consumer in ("conv_4", "flatten_1"):
        assert model.get_layer(consumer).input is pool_3
    assert {t.name for t in model.get_layer("add_1").input} == {
        model.get_layer("fc_1").output.name,
        model.get_layer("fc_2").output.name,
    }
    assert model.count_params() == 601_643


@pytest.mark.parametrize(
    "kwargs", [{"n_classes": 1}, {"n_classes": 2.5}, {"input_shape": (55, 47)}, {"input_shape": (20, 20, 3)}]
)
def test_builder_refuses_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="n_classes|input_shape"):
        build_deepid(**kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# The real lab weights reproduce the README's table.
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(README_TABLE))
def test_lab_weights_reproduce_the_readme_table(name, faces):
    model = load_deepid_weights(_weights(name))
    predicted = _predict(model, faces).argmax(axis=1)
    clean, sunglasses, lipstick = README_TABLE[name]
    assert predicted.tolist() == clean + sunglasses + lipstick


def test_weights_file_through_load_keras_model_infers_the_classes(faces):
    path = _weights("lab3")
    direct = load_deepid_weights(path)
    model = load_keras_model(path, arch="deepid")
    assert model.outputs[0].shape[-1] == 1283
    np.testing.assert_array_equal(_predict(model, faces), _predict(direct, faces))


def test_weights_only_file_needs_arch():
    with pytest.raises(ValueError, match="weights-only file needs --arch"):
        load_keras_model(_weights("lab3"))
    with pytest.raises(ValueError, match="Unknown architecture 'resnet'"):
        load_keras_model(_weights("lab3"), arch="resnet")


def test_wrong_number_of_classes_names_the_layer_and_shapes():
    expected = re.escape("'output': weight 'kernel' has shape (160, 1283)") + r".*\(160, 10\)"
    with pytest.raises(ValueError, match=expected):
        load_deepid_weights(_weights("lab3"), n_classes=10)


# ---------------------------------------------------------------------------------------------------------------------
# Keras 2 weights files written here (no ../shared needed).
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_deepid() -> keras.Model:
    keras.utils.set_random_seed(3)
    model = build_deepid(n_classes=10)
    # Non-zero biases, so that a kernel/bias mix-up or a layer left at its initial values shows.
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, np.random.default_rng(1).normal(0, 0.1, bias.shape).astype(np.float32)])
    return model


@pytest.mark.parametrize("bias_first", [False, True])
def test_keras2_weights_load_by_name(small_deepid, tmp_path, bias_first):
    path = tmp_path / "w.h5"
    _write_keras2_weights(small_deepid, path, bias_first=bias_first)
    loaded = load_deepid_weights(str(path), n_classes=10)
    for layer in small_deepid.layers:
        for saved, got in zip(layer.get_weights(), loaded.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(got, saved)
    x = _random_input()
    np.testing.assert_array_equal(_predict(loaded, x), _predict(small_deepid, x))


def test_weights_file_missing_a_layer(small_deepid, tmp_path):
    path = tmp_path / "w.h5"
    _write_keras2_weights(small_deepid, path, skip=("conv_3",))
    with pytest.raises(ValueError, match="no weights for layer 'conv_3'"):
        load_deepid_weights(str(path), n_classes=10)


def test_weights_file_with_a_foreign_layer(small_deepid, tmp_path):
    path = tmp_path / "w.h5"
    foreign = [np.zeros((3, 2), np.float32), np.zeros(2, np.float32)]
    _write_keras2_weights(small_deepid, path, extra={"dense_7": foreign})
    with pytest.raises(ValueError, match="dense_7 that the deepid architecture does not have"):
        load_deepid_weights(str(path), n_classes=10)


def test_weights_file_with_a_wrong_shape(small_deepid, tmp_path):
    path = tmp_path / "w.h5"
    wrong = [np.zeros((3, 3, 20, 41), np.float32), np.zeros(41, np.float32)]
    _write_keras2_weights(small_deepid, path, replace={"conv_2": wrong})
    expected = re.escape("'conv_2': weight 'kernel' has shape (3, 3, 20, 41)") + ".*" + re.escape("(3, 3, 20, 40)")
    with pytest.raises(ValueError, match=expected):
        load_deepid_weights(str(path), n_classes=10)


def test_weights_file_with_a_missing_bias(small_deepid, tmp_path):
    path = tmp_path / "w.h5"
    _write_keras2_weights(small_deepid, path, replace={"fc_1": [small_deepid.get_layer("fc_1").get_weights()[0]]})
    with pytest.raises(ValueError, match="'fc_1' expects 2 weights"):
        load_deepid_weights(str(path), n_classes=10)


def test_not_a_weights_file(tmp_path):
    text = tmp_path / "w.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        load_deepid_weights(str(text))
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_dataset("data", data=np.zeros(3))
    with pytest.raises(ValueError, match="not a Keras weights file"):
        load_deepid_weights(str(empty))
    with pytest.raises(ValueError, match="neither a Keras model"):
        load_keras_model(str(empty), arch="deepid")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_keras_model(str(tmp_path / "absent.h5"))
    with pytest.raises(ValueError, match="expected a .keras model"):
        load_keras_model(str(text.rename(tmp_path / "w.pt")))


def test_keras3_files_round_trip(small_deepid, tmp_path):
    x = _random_input()
    expected = _predict(small_deepid, x)
    small_deepid.save(tmp_path / "m.keras")
    np.testing.assert_array_equal(_predict(load_keras_model(str(tmp_path / "m.keras")), x), expected)
    small_deepid.save_weights(tmp_path / "m.weights.h5")
    loaded = load_keras_model(str(tmp_path / "m.weights.h5"), arch="deepid")
    assert loaded.outputs[0].shape[-1] == 10
    np.testing.assert_array_equal(_predict(loaded, x), expected)


def test_legacy_config_with_a_lambda_is_refused_before_loading(tmp_path):
    # Only the configuration is needed: the check happens before Keras reads anything else.
    config = {
        "class_name": "Functional",
        "config": {"layers": [{"class_name": "Lambda", "config": {"name": "evil", "function": ["..."]}}]},
    }
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config).encode()
        f.attrs["keras_version"] = b"2.3.1"
    with pytest.raises(ValueError, match=r"Python code \(Lambda\).*safe_mode"):
        load_keras_model(str(path))


# ---------------------------------------------------------------------------------------------------------------------
# Genuine legacy Keras 2 files, written by tf-keras in a subprocess.
# ---------------------------------------------------------------------------------------------------------------------

_TF_KERAS_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tf_keras
    from tf_keras import layers as L

    out = sys.argv[1]
    tf_keras.utils.set_random_seed(5)
    inputs = L.Input(shape=(55, 47, 3), name="input")
    x = L.Conv2D(20, (4, 4), activation="relu", name="conv_1")(inputs)
    x = L.MaxPooling2D((2, 2), name="pool_1")(x)
    x = L.Conv2D(40, (3, 3), activation="relu", name="conv_2")(x)
    x = L.MaxPooling2D((2, 2), name="pool_2")(x)
    x = L.Conv2D(60, (3, 3), activation="relu", name="conv_3")(x)
    pool_3 = L.MaxPooling2D((2, 2), name="pool_3")(x)
    x1 = L.Flatten(name="flatten_1")(pool_3)
    x2 = L.Flatten(name="flatten_2")(L.Conv2D(80, (2, 2), activation="relu", name="conv_4")(pool_3))
    x = L.Add(name="add_1")([L.Dense(160, name="fc_1")(x1), L.Dense(160, name="fc_2")(x2)])
    x = L.Activation("relu", name="activation_1")(x)
    outputs = L.Dense(10, activation="softmax", name="output")(x)
    model = tf_keras.Model(inputs, outputs)
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, np.random.default_rng(1).normal(0, 0.1, bias.shape).astype("float32")])
    model.save(os.path.join(out, "deepid.h5"))
    model.save_weights(os.path.join(out, "deepid_weights.h5"))
    x = np.load(os.path.join(out, "x.npy"))
    np.save(os.path.join(out, "expected.npy"), model.predict(x, verbose=0))

    i = L.Input(shape=(4,), name="input")
    model = tf_keras.Model(i, L.Dense(3, name="output")(L.Lambda(lambda t: t * 2.0, name="double")(i)))
    model.save(os.path.join(out, "lambda.h5"))
    np.save(os.path.join(out, "lambda_expected.npy"), model.predict(np.ones((2, 4), "float32"), verbose=0))
    """
)


@pytest.fixture(scope="module")
def tf_keras_files(tmp_path_factory) -> Path:
    """Genuine Keras 2 files (tf-keras 2.21): a DeepID with 10 classes saved whole and weights-only, a Lambda model."""
    tf_keras = pytest.importorskip("tf_keras", reason="tf-keras (the Keras 2 API) writes the genuine legacy files")
    out = tmp_path_factory.mktemp("tf_keras")
    np.save(out / "x.npy", _random_input())
    # A subprocess: tf_keras and Keras 3 in one process would share TensorFlow's global state with the other tests.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "0"}
    result = subprocess.run(
        [sys.executable, "-c", _TF_KERAS_SCRIPT, str(out)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, (
        f"tf-keras {tf_keras.__version__} failed to write the files:\n{result.stderr[-3000:]}"
    )
    with h5py.File(out / "deepid.h5", "r") as f:
        version = f.attrs["keras_version"]
        assert (version.decode() if isinstance(version, bytes) else version).startswith("2."), version
        assert "model_config" in f.attrs
    return out


def test_genuine_legacy_full_model_matches_the_builder_route(tf_keras_files):
    x = np.load(tf_keras_files / "x.npy")
    expected = np.load(tf_keras_files / "expected.npy")
    full = load_keras_model(str(tf_keras_files / "deepid.h5"))
    assert [layer.name for layer in full.layers] == [layer.name for layer in build_deepid(10).layers]
    from_weights = load_keras_model(str(tf_keras_files / "deepid_weights.h5"), arch="deepid")
    assert from_weights.outputs[0].shape[-1] == 10
    np.testing.assert_allclose(_predict(full, x), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_predict(from_weights, x), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(_predict(from_weights, x), _predict(full, x))


def test_genuine_legacy_lambda_needs_safe_mode_off(tf_keras_files):
    path = str(tf_keras_files / "lambda.h5")
    with pytest.raises(ValueError, match=r"Python code \(Lambda\)"):
        load_keras_model(path)
    model = load_keras_model(path, safe_mode=False)
    np.testing.assert_allclose(
        _predict(model, np.ones((2, 4), np.float32)), np.load(tf_keras_files / "lambda_expected.npy"), rtol=1e-6
    )
