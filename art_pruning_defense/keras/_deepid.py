"""
The lab's DeepID face classifier (NYU CSAW-HackML / ML-for-Cyber-Security, YouTube Face, 1283 identities) and the
loading of models from files.

- :func:`build_deepid` builds the architecture with the lab's layer names, so that the lab's Keras 2.3.1 weight
  files load by layer name,
- :func:`load_deepid_weights` builds it and loads a weights-only HDF5 file (Keras 2 layout, or Keras 3's
  ``.weights.h5``), checking every layer's weights against the architecture first,
- :func:`load_keras_model` loads a ``.keras`` file, a full legacy Keras 2 ``.h5`` model, or a weights-only ``.h5``
  for a named architecture, refusing code (``Lambda`` layers) unless ``safe_mode=False``.

The inputs are RGB images of 55×47 pixels, channels last, with pixel values in 0..255 (no scaling).
"""

from __future__ import annotations

import logging
import numbers
import os
from typing import Callable

import numpy as np

# TensorFlow is noisy on import; keep it to errors unless the user chose otherwise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import keras  # noqa: E402

from art_pruning_defense._h5 import open_checked_h5, unpacked_bound  # noqa: E402
from art_pruning_defense._limits import (  # noqa: E402
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    check_keras_archive,
    check_model_config,
    loads_bounded,
)
from art_pruning_defense._io import check_input_file  # noqa: E402

logger = logging.getLogger(__name__)

#: Number of identities of the lab's YouTube Face models.
DEEPID_N_CLASSES = 1283
#: Per-sample input shape of the lab's models (height, width, channels).
DEEPID_INPUT_SHAPE: tuple[int, int, int] = (55, 47, 3)
#: Layers of the lab's architecture, in the order of its weight files.
DEEPID_LAYER_NAMES: tuple[str, ...] = (
    "input",
    "conv_1",
    "pool_1",
    "conv_2",
    "pool_2",
    "conv_3",
    "pool_3",
    "conv_4",
    "flatten_1",
    "flatten_2",
    "fc_1",
    "fc_2",
    "add_1",
    "activation_1",
    "output",
)


def build_deepid(
    n_classes: int = DEEPID_N_CLASSES, input_shape: tuple[int, int, int] = DEEPID_INPUT_SHAPE
) -> keras.Model:
    """
    Build the lab's DeepID network (untrained), a Functional model with the lab's layer names::

        input → conv_1 (20, 4×4, relu) → pool_1 → conv_2 (40, 3×3, relu) → pool_2
              → conv_3 (60, 3×3, relu) → pool_3
        pool_3 → flatten_1 → fc_1 (160)
        pool_3 → conv_4 (80, 2×2, relu) → flatten_2 → fc_2 (160)
        add_1 (fc_1 + fc_2) → activation_1 (relu) → output (n_classes, softmax)

    ``pool_3`` feeds both ``conv_4`` and ``flatten_1``: pruning ``conv_3`` removes a channel from both paths.

    :param n_classes: Number of classes (1283 identities for the lab's models).
    :param input_shape: Per-sample input shape (height, width, channels); pixel values 0..255, not scaled.
    :return: The model, uncompiled, named ``deepid``.
    """
    n_classes = _check_n_classes(n_classes)
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 3
        or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or int(s) <= 0 for s in input_shape)
    ):
        raise ValueError(f"input_shape must be three positive integers (height, width, channels), got {input_shape!r}.")
    height, width, _ = (int(s) for s in input_shape)
    # conv 4 → pool 2 → conv 3 → pool 2 → conv 3 → pool 2 → conv 2 must leave at least one pixel.
    size = [height, width]
    for kernel in (4, 3, 3):
        size = [(s - kernel + 1) // 2 for s in size]
    if min(size) - 1 < 1:
        raise ValueError(
            f"input_shape {tuple(input_shape)} is too small for DeepID: its height and width must be at least 24 "
            f"(the lab's images are {DEEPID_INPUT_SHAPE})."
        )

    layers = keras.layers
    inputs = keras.Input(shape=tuple(int(s) for s in input_shape), name="input")
    x = layers.Conv2D(20, (4, 4), activation="relu", name="conv_1")(inputs)
    x = layers.MaxPooling2D((2, 2), name="pool_1")(x)
    x = layers.Conv2D(40, (3, 3), activation="relu", name="conv_2")(x)
    x = layers.MaxPooling2D((2, 2), name="pool_2")(x)
    x = layers.Conv2D(60, (3, 3), activation="relu", name="conv_3")(x)
    pool_3 = layers.MaxPooling2D((2, 2), name="pool_3")(x)
    conv_4 = layers.Conv2D(80, (2, 2), activation="relu", name="conv_4")(pool_3)
    flat_1 = layers.Flatten(name="flatten_1")(pool_3)
    flat_2 = layers.Flatten(name="flatten_2")(conv_4)
    fc_1 = layers.Dense(160, name="fc_1")(flat_1)
    fc_2 = layers.Dense(160, name="fc_2")(flat_2)
    x = layers.Add(name="add_1")([fc_1, fc_2])
    x = layers.Activation("relu", name="activation_1")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="deepid")


def load_deepid_weights(path: str, n_classes: int = DEEPID_N_CLASSES) -> keras.Model:
    """
    Build the lab's DeepID network and load a weights-only file into it, by layer name.

    Keras 2 weight files (``model.save_weights("w.h5")``, as the lab's ``*_bd_weights.h5``) are read with h5py: each
    layer's group lists its datasets in its ``weight_names`` attribute, kernel then bias. Every layer of the
    architecture that has weights must be in the file with the same shapes, and the file must hold no weighted layer
    that the architecture lacks; anything else is refused before a single weight is set. A full legacy model file
    is accepted too (its ``model_weights`` group is read). A Keras 3 ``.weights.h5`` file is loaded with Keras 3's
    own ``load_weights``.

    :param path: The weights file (``.h5``).
    :param n_classes: Number of classes of the network the file holds.
    :return: The model with the file's weights, uncompiled.
    :raises FileNotFoundError: If ``path`` does not exist.
    :raises ValueError: If the file is not an HDF5 weights file for this architecture (missing or extra layers,
                        wrong number of weights, wrong shapes).
    """
    n_classes = _check_n_classes(n_classes)
    model = build_deepid(n_classes)
    with _open_h5(path) as f:
        if _is_keras3_weights(f):
            keras3 = True
        else:
            keras3 = False
            group = f["model_weights"] if "model_weights" in f and "layer_names" not in f.attrs else f
            weights = _read_legacy_weights(group, path)
    if keras3:
        _load_keras3_weights(model, path)
    else:
        _set_legacy_weights(model, weights, path)
    logger.info("Loaded DeepID weights (%d classes) from %s.", n_classes, path)
    return model


def _load_keras_model(path: str, arch: str | None = None, safe_mode: bool = True) -> keras.Model:
    """
    Load a model from a file:

    - ``.keras``: Keras 3's format, via ``keras.models.load_model(compile=False, safe_mode=safe_mode)``;
    - ``.h5``/``.hdf5`` holding a full legacy (Keras 2) model, i.e. with a ``model_config`` attribute: its JSON
      configuration is inspected first and a ``Lambda`` layer (Python code) is refused unless ``safe_mode=False``,
      then it is loaded with ``keras.models.load_model``;
    - ``.h5``/``.hdf5`` holding weights only: the architecture must be named with ``arch`` (``"deepid"``; the number
      of classes is read from the file's ``output`` layer).

    :param path: The model file.
    :param arch: Architecture of a weights-only file: ``"deepid"``, or ``None`` for files that hold a whole model
                 (it is ignored, with a log message, for those).
    :param safe_mode: Refuse to deserialise code (``Lambda`` layers and the like). Only set it to ``False`` for
                      files from a source you trust.
    :return: The model, uncompiled.
    :raises FileNotFoundError: If ``path`` does not exist.
    :raises ValueError: If the file is of an unknown kind, is weights-only without ``arch``, names an unknown
                        ``arch``, or holds a ``Lambda`` layer with ``safe_mode=True``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str), got {type(path).__name__}.")
    path = os.fspath(path)
    if arch is not None and arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}; known architectures: {', '.join(sorted(ARCHITECTURES))}.")
    check_input_file(path, "model file")
    lower = path.lower()
    if lower.endswith(".keras"):
        if arch is not None:
            logger.info("%s holds a whole model; arch=%r is ignored.", path, arch)
        check_keras_archive(path, safe_mode=safe_mode)
        return keras.models.load_model(path, compile=False, safe_mode=safe_mode)
    if not lower.endswith((".h5", ".hdf5")):
        raise ValueError(
            f"Cannot load {path}: expected a .keras model, a legacy .h5 model or a .h5 weights file "
            f"(with --arch), got a file ending in {os.path.splitext(path)[1] or '(no extension)'!r}."
        )
    with _open_h5(path) as f:
        stored = f.id.get_filesize()
        config = f.attrs.get("model_config")
        if config is None:
            weights_only = _is_keras3_weights(f) or "layer_names" in f.attrs
            n_classes = None if arch is None or not weights_only else _n_classes_in_file(f, path)
        elif isinstance(config, bytes):
            config = config.decode("utf-8")
    if config is None:
        if not weights_only:
            raise ValueError(
                f"{path} is an HDF5 file but neither a Keras model (no 'model_config' attribute) nor a Keras "
                f"weights file (no 'layer_names' attribute)."
            )
        if arch is None:
            raise ValueError(
                f"{path} holds weights only, without the architecture; a weights-only file needs --arch "
                f"(arch=...), one of: {', '.join(sorted(ARCHITECTURES))}."
            )
        return ARCHITECTURES[arch](path, n_classes)
    if arch is not None:
        logger.info("%s holds a whole model; arch=%r is ignored.", path, arch)
    if not isinstance(config, str):
        raise ValueError(f"{path} has a 'model_config' attribute that is not JSON text ({type(config).__name__}).")
    if len(config) > MAX_CONFIG_BYTES:
        raise ValueError(
            f"{path} has a 'model_config' attribute of {len(config):,} characters, more than the {MAX_CONFIG_BYTES:,} "
            f"accepted; refused."
        )
    parsed = loads_bounded(config, f"{path}: its 'model_config' attribute", MAX_CONFIG_DEPTH)
    check_model_config(parsed, path, safe_mode, stored)
    return keras.models.load_model(path, compile=False, safe_mode=safe_mode)


# ---------------------------------------------------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------------------------------------------------


def _check_n_classes(n_classes: object) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral) or int(n_classes) < 2:
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}.")
    return int(n_classes)


def _open_h5(path: str) -> h5py.File:
    """
    :return: The HDF5 file, open for reading.
    :raises FileNotFoundError: If ``path`` does not exist.
    :raises IsADirectoryError: If ``path`` is a directory.
    :raises ValueError: If it is not an HDF5 file, or holds links, external storage or virtual datasets.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str), got {type(path).__name__}.")
    path = os.fspath(path)
    check_input_file(path, "weights file")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path} is not an HDF5 file; expected Keras weights saved as .h5.")
    # Refuses links, external storage and virtual datasets, and datasets declaring far more than the file holds.
    return open_checked_h5(path, max_bytes=unpacked_bound(path))


def _is_keras3_weights(f: h5py.File) -> bool:
    """
    :return: Whether ``f`` is in Keras 3's ``.weights.h5`` layout (a ``layers`` group, no ``layer_names``).
    """
    return "layer_names" not in f.attrs and "model_config" not in f.attrs and isinstance(f.get("layers"), h5py.Group)


def _attribute_list(group: h5py.Group, name: str) -> list[str]:
    """
    Read a list-of-names attribute as Keras 2 wrote it: whole, or split over ``name0``, ``name1``, ... when large.
    """
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _short_name(weight_name: str) -> str:
    """
    :return: ``"kernel"`` for ``"conv_1/kernel:0"`` (Keras 2) or ``"conv_1/kernel"`` (Keras 3).
    """
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def _read_legacy_weights(group: h5py.Group, path: str) -> dict[str, list[tuple[str, np.ndarray]]]:
    """
    :return: For each layer of a Keras 2 weights group that has weights, its ``(short name, array)`` pairs in the
             file's order.
    """
    if "layer_names" not in group.attrs and "layer_names0" not in group.attrs:
        raise ValueError(
            f"{path} is not a Keras weights file: it has no 'layer_names' attribute (Keras 2 layout) and no "
            f"'layers' group (Keras 3 layout)."
        )
    weights: dict[str, list[tuple[str, np.ndarray]]] = {}
    for layer_name in _attribute_list(group, "layer_names"):
        if layer_name not in group:
            raise ValueError(f"{path} lists layer {layer_name!r} in 'layer_names' but has no group for it.")
        layer_group = group[layer_name]
        values = []
        for weight_name in _attribute_list(layer_group, "weight_names"):
            if weight_name not in layer_group:
                raise ValueError(
                    f"{path}: layer {layer_name!r} lists weight {weight_name!r} but has no dataset for it."
                )
            values.append((_short_name(weight_name), np.asarray(layer_group[weight_name])))
        if values:
            weights[layer_name] = values
    return weights


def _set_legacy_weights(model: keras.Model, weights: dict[str, list[tuple[str, np.ndarray]]], path: str) -> None:
    """
    Check the file's weights against every weighted layer of ``model``, then set them (nothing is set on error).
    """
    weighted = [layer for layer in model.layers if layer.weights]
    extra = sorted(set(weights) - {layer.name for layer in weighted})
    if extra:
        raise ValueError(
            f"{path} holds weights for layer(s) {', '.join(extra)} that the {model.name} architecture does not have "
            f"(its weighted layers: {', '.join(layer.name for layer in weighted)}); it is not a weights file for "
            f"this architecture."
        )
    plan: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []
    for layer in weighted:
        if layer.name not in weights:
            raise ValueError(
                f"{path} has no weights for layer {layer.name!r} of the {model.name} architecture (the file's weighted "
                f"layers: {', '.join(sorted(weights)) or 'none'}); it is not a weights file for this architecture."
            )
        saved = weights[layer.name]
        expected = [(_short_name(w.path if hasattr(w, "path") else w.name), tuple(w.shape)) for w in layer.weights]
        if len(saved) != len(expected):
            raise ValueError(
                f"Layer {layer.name!r} expects {len(expected)} weights ({', '.join(n for n, _ in expected)}) but "
                f"{path} holds {len(saved)} ({', '.join(n for n, _ in saved)})."
            )
        by_name = dict(saved)
        # Match by name (kernel, bias, ...) where the names agree, else in the file's order (Keras 2: kernel, bias).
        if len(by_name) == len(saved) and set(by_name) == {n for n, _ in expected}:
            values = [by_name[n] for n, _ in expected]
        else:
            values = [v for _, v in saved]
        for (name, shape), value in zip(expected, values):
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"Layer {layer.name!r}: weight {name!r} has shape {tuple(value.shape)} in {path}, but the "
                    f"{model.name} architecture expects {shape}"
                    + (
                        f" (for n_classes={model.outputs[0].shape[-1]}; the file's output layer suggests "
                        f"n_classes={value.shape[-1]})"
                        if layer.name == "output"
                        else ""
                    )
                    + "."
                )
        plan.append((layer, values))
    for layer, values in plan:
        layer.set_weights(values)


def _load_keras3_weights(model: keras.Model, path: str) -> None:
    """
    Load a Keras 3 ``.weights.h5`` file with Keras 3's own loader, turning its errors into a clear ValueError.
    """
    if not path.lower().endswith(".weights.h5"):
        raise ValueError(f"{path} is in Keras 3's weights layout; Keras 3 needs its name to end in '.weights.h5'.")
    try:
        model.load_weights(path)
    except (ValueError, KeyError) as error:
        raise ValueError(f"{path} is not a weights file for the {model.name} architecture: {error}") from error


def _n_classes_in_file(f: h5py.File, path: str) -> int:
    """
    :return: Number of classes of a DeepID weights file: the length of its ``output`` layer's bias.
    """
    if _is_keras3_weights(f):
        # Keras 3 layout: layers/<class-based name>/vars/0 (kernel), 1 (bias), not by layer name; the output kernel
        # is the only two-dimensional kernel that takes the 160 units of activation_1.
        kernels = [
            group["vars"]["0"].shape
            for group in f["layers"].values()
            if isinstance(group, h5py.Group) and isinstance(group.get("vars"), h5py.Group) and "0" in group["vars"]
        ]
        outputs = [shape for shape in kernels if len(shape) == 2 and shape[0] == 160]
        if len(outputs) != 1:
            raise ValueError(
                f"{path} holds no single Dense kernel of shape (160, n_classes) (found {len(outputs)}); it is not a "
                f"DeepID weights file."
            )
        return int(outputs[0][1])
    group = f["model_weights"] if "model_weights" in f and "layer_names" not in f.attrs else f
    if "output" not in _attribute_list(group, "layer_names") or "output" not in group:
        raise ValueError(f"{path} has no weights for layer 'output'; it is not a DeepID weights file.")
    names = _attribute_list(group["output"], "weight_names")
    if not names:
        raise ValueError(f"{path} has no weights for layer 'output'; it is not a DeepID weights file.")
    return int(group["output"][names[-1]].shape[-1])


#: Loaders of weights-only files by architecture name: ``loader(path, n_classes)``.
ARCHITECTURES: dict[str, Callable[[str, int], keras.Model]] = {"deepid": load_deepid_weights}


def load_keras_model(path: str, arch: str | None = None, safe_mode: bool = True) -> keras.Model:
    """
    Load a model from a file (see :func:`_load_keras_model` for the kinds of files), turning what a damaged or
    hostile file makes Keras, zipfile or h5py raise into a ``ValueError`` naming the file.

    :param path: The model file.
    :param arch: Architecture of a weights-only file (``"deepid"``).
    :param safe_mode: Refuse to deserialise code (``Lambda`` layers and the like).
    :return: The model, uncompiled.
    """
    from art_pruning_defense.keras._model import model_file_errors

    if isinstance(path, (str, os.PathLike)) and os.fspath(path).endswith(".keras") and os.path.isfile(path):
        import zipfile

        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is not a valid .keras model file (not a zip archive).")
    with model_file_errors(str(path)):
        return _load_keras_model(path, arch=arch, safe_mode=safe_mode)
