"""
Bounds on what is read from files before it is parsed or built: JSON size and nesting, the sizes a zip archive
declares, the weights a model configuration declares, and layers holding code. The standard library, numpy and h5py
only; nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from typing import Any, Iterator

import numpy as np

logger = logging.getLogger(__name__)

#: Largest ``goodnet.json`` read (bytes) and its deepest nesting.
MAX_METADATA_BYTES = 2**20
MAX_METADATA_DEPTH = 32
#: Largest model configuration read (``config.json`` in a ``.keras`` file, ``model_config`` in a legacy ``.h5``).
MAX_CONFIG_BYTES = 8 * 2**20
#: Deepest nesting of a model configuration (Keras's own configurations nest about 15 levels).
MAX_CONFIG_DEPTH = 64
#: How many times its size a ``.keras`` archive may unpack to, and what any archive may unpack to anyway.
MAX_UNPACK_RATIO = 100
MIN_UNPACK_BYTES = 64 * 2**20
#: Most bytes the weights a model configuration declares may take (float32).
MAX_WEIGHT_BYTES = 2**31
#: Layer classes whose configuration holds Python code; refused unless ``safe_mode=False``.
CODE_LAYERS: frozenset[str] = frozenset({"Lambda"})

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class CodeInModelError(ValueError):
    """
    A model file holds layers with Python code and was refused (``safe_mode=True``).

    :param path: The model file.
    :param layers: The class names of the layers holding code.
    """

    def __init__(self, path: str, layers: list[str]) -> None:
        self.path, self.layers = path, layers
        what = f"{path} holds layer(s) with Python code ({', '.join(layers)}), which could run anything when loaded"
        super().__init__(f"{what}; refused with safe_mode=True. Pass safe_mode=False only for a file you trust.")
        #: The message for the command line, which names its own option.
        self.cli_message = f"{what}; refused. Pass --unsafe only for a file you trust."


def json_depth(text: bytes) -> int:
    """
    :param text: JSON text.
    :return: Its deepest nesting of arrays and objects (strings are skipped), found without recursion.
    """
    stripped = np.frombuffer(_STRING.sub(b'""', text), dtype=np.uint8)
    steps = np.zeros(stripped.shape, dtype=np.int64)
    steps[(stripped == ord("[")) | (stripped == ord("{"))] = 1
    steps[(stripped == ord("]")) | (stripped == ord("}"))] = -1
    return int(np.cumsum(steps).max(initial=0))


def loads_bounded(text: bytes | str, what: str, max_depth: int) -> Any:
    """
    Parse JSON whose nesting is at most ``max_depth``.

    :param text: The JSON text.
    :param what: What it is, for the messages (a file name).
    :param max_depth: Deepest nesting accepted.
    :return: The parsed value.
    :raises ValueError: If it is not valid JSON or nests deeper than ``max_depth``.
    """
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    depth = json_depth(raw)
    if depth > max_depth:
        raise ValueError(f"{what} nests {depth} levels deep, more than the {max_depth} accepted; refused.")
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError(f"{what} nests too deeply to be parsed; refused.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} is not valid JSON: {error}") from None


def read_json_file(path: str, max_bytes: int = MAX_METADATA_BYTES, max_depth: int = MAX_METADATA_DEPTH) -> Any:
    """
    :param path: A JSON file.
    :param max_bytes: Largest file accepted.
    :param max_depth: Deepest nesting accepted.
    :return: The parsed value.
    :raises ValueError: If the file is larger than ``max_bytes``, nests deeper than ``max_depth`` or is not JSON.
    """
    size = os.path.getsize(path)
    if size > max_bytes:
        raise ValueError(f"{path} is {size:,} bytes, more than the {max_bytes:,} accepted; refused.")
    with open(path, "rb") as handle:
        return loads_bounded(handle.read(max_bytes + 1), path, max_depth)


# ---------------------------------------------------------------------------------------------------------------------
# Model configurations.
# ---------------------------------------------------------------------------------------------------------------------


def _layers(config: Any) -> Iterator[dict]:
    """
    :return: Every dict with a ``class_name`` in a (nested) configuration, without recursion.
    """
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("class_name"), str):
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def code_layers(config: Any) -> list[str]:
    """
    :return: The class names of layers holding Python code anywhere in a (nested) model configuration.
    """
    return sorted({layer["class_name"] for layer in _layers(config) if layer["class_name"] in CODE_LAYERS})


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _input_channels(layer: dict, channels_first: bool) -> int:
    """
    :return: The last (or, channels first, the second) dimension of a layer's recorded input shape; 1 if unknown.
    """
    build = layer.get("build_config")
    shape = build.get("input_shape") if isinstance(build, dict) else None
    if isinstance(shape, list) and len(shape) >= 2:
        return _int(shape[1] if channels_first else shape[-1]) or 1
    return 1


def declared_parameters(config: Any) -> int:
    """
    :param config: A model configuration.
    :return: The number of kernel and embedding values its Dense, Conv and Embedding layers declare (a lower bound
             where a layer's input size is not recorded).
    """
    total = 0
    for layer in _layers(config):
        name, options = layer["class_name"], layer.get("config")
        if not isinstance(options, dict):
            continue
        if name in ("Dense",):
            units = _int(options.get("units"))
            if units:
                total += units * _input_channels(layer, False)
        elif re.fullmatch(r"Conv[123]D(Transpose)?|Convolution[123]D", name):
            filters, kernel = _int(options.get("filters")), options.get("kernel_size")
            sizes = [_int(k) for k in (kernel if isinstance(kernel, list) else [kernel])]
            if filters and sizes and all(sizes):
                groups = _int(options.get("groups")) or 1
                channels = _input_channels(layer, options.get("data_format") == "channels_first")
                total += filters * int(np.prod(sizes, dtype=object)) * max(channels // groups, 1)
        elif name == "Embedding":
            rows, columns = _int(options.get("input_dim")), _int(options.get("output_dim"))
            if rows and columns:
                total += rows * columns
    return total


def check_model_config(config: Any, path: str, safe_mode: bool, stored_bytes: int | None) -> None:
    """
    Refuse a model configuration that holds code (with ``safe_mode``) or declares more weights than can be built or
    than the file stores.

    :param config: The parsed configuration.
    :param path: The model file, for the messages.
    :param safe_mode: Refuse layers holding Python code.
    :param stored_bytes: Bytes the file stores for the weights, or ``None`` if unknown.
    :raises CodeInModelError: If it holds code and ``safe_mode`` is true.
    :raises ValueError: If it declares more than :data:`MAX_WEIGHT_BYTES` of float32 weights, or more weights than
                        ``stored_bytes`` can hold (at least half a byte per value).
    """
    code = code_layers(config)
    if code and safe_mode:
        raise CodeInModelError(path, code)
    count = declared_parameters(config)
    if 4 * count > MAX_WEIGHT_BYTES:
        raise ValueError(
            f"{path} declares layers with {count:,} weights ({4 * count / 2**30:.1f} GiB as float32), more than the "
            f"{MAX_WEIGHT_BYTES / 2**30:.0f} GiB accepted; refused before building it."
        )
    if stored_bytes is not None and count / 2 > stored_bytes + 2**20:
        raise ValueError(
            f"{path} declares layers with {count:,} weights but stores only {stored_bytes:,} bytes of weights; "
            f"refused before building it."
        )


def check_keras_archive(path: str, safe_mode: bool = True) -> None:
    """
    Check a ``.keras`` file (a zip archive) before Keras reads it: the sizes its members declare, its configuration
    (size, nesting, code, declared weights) and its weights file (see :func:`art_pruning_defense._h5.check_h5_file`).

    :param path: The ``.keras`` file.
    :param safe_mode: Refuse layers holding Python code.
    :raises CodeInModelError: If it holds code and ``safe_mode`` is true.
    :raises ValueError: If it is not a zip archive, would unpack to more than ``max(100 × its size, 64 MiB)``, its
                        ``config.json`` is larger than :data:`MAX_CONFIG_BYTES` or nests deeper than
                        :data:`MAX_CONFIG_DEPTH`, it declares too many weights, or its weights file reads other files.
    """
    from art_pruning_defense._h5 import H5_ERRORS, check_h5_file

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise ValueError(f"{path} is not a valid .keras model file (not a readable zip archive: {error}).") from None
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        total = sum(info.file_size for info in members.values())
        bound = max(MAX_UNPACK_RATIO * os.path.getsize(path), MIN_UNPACK_BYTES)
        if total > bound:
            raise ValueError(
                f"{path} would unpack to {total:,} bytes, more than the {bound:,} accepted for a file of its size "
                f"(a zip bomb?); refused."
            )
        info = members.get("config.json")
        if info is None:
            return  # Keras reports what is missing
        if info.file_size > MAX_CONFIG_BYTES:
            raise ValueError(
                f"{path}: its config.json is {info.file_size:,} bytes, more than the {MAX_CONFIG_BYTES:,} accepted."
            )
        try:
            text = archive.read(info)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as error:
            raise ValueError(f"{path} is not a valid .keras model file (config.json: {error}).") from None
        config = loads_bounded(text, f"{path}: config.json", MAX_CONFIG_DEPTH)
        weights = members.get("model.weights.h5")
        check_model_config(config, path, safe_mode, None if weights is None else weights.file_size)
        if weights is not None:
            import h5py

            try:
                with archive.open(weights) as handle, h5py.File(handle, "r") as f:
                    check_h5_file(f, f"{path}: model.weights.h5", max_bytes=bound)
            except ValueError:
                raise
            except (zipfile.BadZipFile, EOFError, NotImplementedError, *H5_ERRORS) as error:
                raise ValueError(
                    f"{path} is not a valid .keras model file (model.weights.h5: {type(error).__name__}: {error})."
                ) from None
