"""Shared fixtures: tiny Keras models built here, seeded, with the Keras session cleared between tests."""

from __future__ import annotations

import gc
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from art.estimators.classification import KerasClassifier  # noqa: E402

#: ../shared beside the repository (real data and models; tests that need it skip without it).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="module", autouse=True)
def _frozen_heap():
    """
    Before each test module: collect, then move every surviving object (TensorFlow, Keras, ART, Ray and the other
    imports, session fixtures: some 400,000 objects) out of the garbage collector's sight. The ``gc.collect()`` of
    ``clear_session`` after every test then no longer walks them: it took 0.2–0.6 s a test, minutes over the suite.
    Objects made by the module's fixtures and tests are collected as before.
    """
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


def conv_block_model(
    n_channels: int = 6,
    n_classes: int = 4,
    activation: str = "relu",
    batch_norm: bool = False,
    use_bias: bool = True,
    pool: bool = True,
    input_shape: tuple[int, int, int] = (10, 10, 3),
) -> keras.Model:
    """conv_1 → conv_2 [→ BN] → activation [→ pool] → flatten → dense: conv_2 is the layer to prune."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(5, 3, activation="relu", name="conv_1")(inputs)
    x = keras.layers.Conv2D(n_channels, 3, use_bias=use_bias, name="conv_2", bias_initializer="ones")(x)
    if batch_norm:
        bn = keras.layers.BatchNormalization(name="bn")
        x = bn(x)
    x = keras.layers.Activation(activation, name="act")(x)
    if pool:
        x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="output")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    if batch_norm:
        # Non-trivial moving statistics, so that BN maps zero to something else than zero.
        gamma, beta, mean, var = model.get_layer("bn").get_weights()
        rng = np.random.default_rng(1)
        model.get_layer("bn").set_weights(
            [gamma + rng.random(gamma.shape), beta + 0.5, mean + rng.random(mean.shape), var + rng.random(var.shape)]
        )
    return model


@pytest.fixture
def tiny_model() -> keras.Model:
    return conv_block_model()


@pytest.fixture
def tiny_classifier(tiny_model) -> KerasClassifier:
    return KerasClassifier(tiny_model, clip_values=(0.0, 1.0))


@pytest.fixture
def tiny_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((60, 10, 10, 3), dtype=np.float32), rng.integers(0, 4, 60)


@pytest.fixture(scope="session")
def digits_badnet():
    """The embedded default BadNet: (BadNetData, KerasClassifier), trained once per test session."""
    from art_pruning_defense.lab.digits import digits_badnet_data
    from art_pruning_defense.lab.demo import train_digits_badnet

    keras.utils.set_random_seed(0)
    data = digits_badnet_data(seed=0)
    return data, train_digits_badnet(data, epochs=30, seed=0)


def reseal(goodnet_dir) -> None:
    """
    A saved GoodNet's manifest written again after a test changed one of its files: the checks behind the manifest
    (of the metadata, of the model files) are what such a test is about.
    """
    from art_pruning_defense import goodnet_format
    from art_pruning_defense._integrity import write_manifest

    write_manifest(str(goodnet_dir), goodnet_format.FILES, extra={"kind": goodnet_format.FORMAT})


@pytest.fixture(scope="session", autouse=True)
def _private_model_cache(tmp_path_factory):
    """The benchmark's default model cache (under ``$XDG_CACHE_HOME``) in a temporary directory, never the user's."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous
