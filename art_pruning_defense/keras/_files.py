"""
Model files: atomic saving in Keras 3's format, and loading that checks a file before Keras reads it (sizes,
nesting, code, weights) and turns what a damaged or hostile file makes Keras raise into one clear error.

:func:`load_model` reads ``.keras`` files (the package's own); :func:`load_keras_model` also reads full legacy
Keras 2 ``.h5`` models and weights-only ``.h5`` files of a named architecture (the lab's DeepID).
"""

from __future__ import annotations

import contextlib
import logging
import os
import zipfile
from typing import Iterator


# TensorFlow is noisy on import; keep it to errors unless the user chose otherwise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from art_pruning_defense._io import atomic_file, check_input_file  # noqa: E402
from art_pruning_defense._limits import (  # noqa: E402
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    check_keras_archive,
    check_model_config,
    loads_bounded,
)
from art_pruning_defense.keras._deepid import (  # noqa: E402
    WEIGHTS_LOADERS,
    is_keras3_weights,
    n_classes_in_file,
    open_weights_h5,
)


logger = logging.getLogger(__name__)


def save_model(model: keras.Model, path: str) -> None:
    """
    Save in Keras 3's own format, atomically (written under a temporary name, then renamed).

    :param model: The model.
    :param path: Destination, ending in ``.keras``.
    """
    with atomic_file(path) as tmp:
        model.save(tmp)


@contextlib.contextmanager
def model_file_errors(path: str) -> Iterator[None]:
    """
    Turn what a damaged or hostile model file makes Keras, zipfile or h5py raise into one ``ValueError`` naming the
    file (``ValueError``, ``TypeError`` of our own, ``FileNotFoundError`` and ``IsADirectoryError`` pass through
    unchanged; running out of memory while building becomes a ``ValueError`` too).

    :param path: The model file being read.
    """
    try:
        yield
    except (FileNotFoundError, IsADirectoryError):
        raise
    except (MemoryError, tf.errors.ResourceExhaustedError) as error:
        raise ValueError(
            f"{path} declares a model too large to build in memory ({type(error).__name__}); refused."
        ) from None
    except (
        zipfile.BadZipFile,
        KeyError,
        NotImplementedError,
        OSError,
        RuntimeError,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
    ) as error:
        if isinstance(error, (ValueError, TypeError)) and _raised_here(error):
            raise  # our own, already clear, message
        raise ValueError(f"{path} is not a valid model file ({type(error).__name__}: {error})") from None


def _raised_here(error: BaseException) -> bool:
    """
    :return: Whether ``error`` was raised by this package's own code (its innermost frame is in the package).
    """
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return traceback is not None and os.path.abspath(traceback.tb_frame.f_code.co_filename).startswith(package)


def load_model(path: str, safe_mode: bool = True) -> keras.Model:
    """
    :param path: A ``.keras`` file.
    :param safe_mode: Refuse to deserialise code (Lambda layers and the like).
    :return: The model, uncompiled.
    :raises FileNotFoundError: If ``path`` does not exist.
    :raises IsADirectoryError: If ``path`` is a directory.
    :raises ValueError: If the file is not a valid ``.keras`` model, holds code (with ``safe_mode``), or declares
                        more than it may unpack to.
    """
    check_input_file(path, "model file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a valid .keras model file (not a zip archive).")
    check_keras_archive(path, safe_mode=safe_mode)  # sizes, nesting, code and weights, before Keras reads it
    with model_file_errors(path):
        model = keras.models.load_model(path, compile=False, safe_mode=safe_mode)
    if not isinstance(model, keras.Model):
        raise ValueError(f"{path} does not hold a Keras model.")
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
    if arch is not None and arch not in WEIGHTS_LOADERS:
        raise ValueError(f"Unknown architecture {arch!r}; known architectures: {', '.join(sorted(WEIGHTS_LOADERS))}.")
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
    with open_weights_h5(path) as f:
        stored = f.id.get_filesize()
        config = f.attrs.get("model_config")
        if config is None:
            weights_only = is_keras3_weights(f) or "layer_names" in f.attrs
            n_classes = None if arch is None or not weights_only else n_classes_in_file(f, path)
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
                f"(arch=...), one of: {', '.join(sorted(WEIGHTS_LOADERS))}."
            )
        return WEIGHTS_LOADERS[arch](path, n_classes)
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


def load_keras_model(path: str, arch: str | None = None, safe_mode: bool = True) -> keras.Model:
    """
    Load a model from a file (see :func:`_load_keras_model` for the kinds of files), turning what a damaged or
    hostile file makes Keras, zipfile or h5py raise into a ``ValueError`` naming the file.

    :param path: The model file.
    :param arch: Architecture of a weights-only file (``"deepid"``).
    :param safe_mode: Refuse to deserialise code (``Lambda`` layers and the like).
    :return: The model, uncompiled.
    """
    if isinstance(path, (str, os.PathLike)) and os.fspath(path).endswith(".keras") and os.path.isfile(path):
        import zipfile

        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is not a valid .keras model file (not a zip archive).")
    with model_file_errors(str(path)):
        return _load_keras_model(path, arch=arch, safe_mode=safe_mode)
