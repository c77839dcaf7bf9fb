"""
Batched prediction and its memory: compiled forward passes, numpy arrays shared with TensorFlow, and calls kept
below the C library's mmap ceiling where TensorFlow allocates from it.
"""

from __future__ import annotations

import logging
import os

import numpy as np

# TensorFlow is noisy on import; keep it to errors unless the user chose otherwise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from art_pruning_defense._aligned import is_shareable  # noqa: E402
from art_pruning_defense._defaults import SYSTEM_ALLOCATOR_VARIABLE  # noqa: E402
from art_pruning_defense.keras._graph import graph_nodes  # noqa: E402

logger = logging.getLogger(__name__)


# TensorFlow is noisy on import; keep it to errors unless the user chose otherwise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _DropRetracingWarning(logging.Filter):
    """
    Each model gets its own compiled forward function by design; TensorFlow counts those traces together (by code
    object) and warns about "retracing", which here is expected and harmless.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


tf.get_logger().addFilter(_DropRetracingWarning())


def shared_tensor(array: np.ndarray) -> tf.Tensor:
    """
    A float32 tensor of ``array``: sharing its memory (through DLPack) where it is a writeable, C-contiguous float32
    array aligned for TensorFlow (:func:`~art_pruning_defense._aligned.is_shareable`, as
    :func:`~art_pruning_defense._aligned.aligned_empty` makes them), else a copy (``tf.convert_to_tensor``). The same
    values either way. The tensor keeps the array's memory alive; the array must not change while the tensor is used.

    :param array: The values.
    :return: The tensor.
    """
    if is_shareable(array):
        try:
            return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
        except (AttributeError, BufferError, TypeError, ValueError, tf.errors.OpError):  # pragma: no cover
            pass  # no DLPack in this numpy or TensorFlow: copy
    return tf.convert_to_tensor(array, dtype=tf.float32)


#: Bound on the widest tensor of one compiled call (a call's rows at the model's widest layer), in bytes, where
#: TensorFlow allocates its tensors with the C library's ``malloc`` (see :func:`tensors_from_c_library`). glibc's
#: malloc gives a block above its dynamic mmap threshold (which rises to at most 32 MiB on 64-bit systems) a fresh
#: mapping from the kernel and unmaps it when it is freed, so such a tensor costs one page fault per 4 KiB page on
#: every call; below the threshold, freed memory is reused. (On MNIST's benchmark CNN, a prediction pass over 55,000
#: images in calls of 256, whose second convolution outputs 37.7 MB per call, took 2.0 million page faults and
#: 7.6 s; in calls of 128, 443 faults and 5.4 s, the same outputs bit for bit.) Calls are split into fewer rows where
#: needed; what they compute per row does not change. oneDNN's pool, TensorFlow's default on x86, reuses its memory
#: itself: there, calls keep the rows asked for.
CALL_BYTES = 8 * 2**20


def tensors_from_c_library() -> bool:
    """
    :return: Whether TensorFlow allocates this process's CPU tensors with the C library's ``malloc``: where oneDNN is
             off (TensorFlow's default allocator) or ``TF_ONEDNN_USE_SYSTEM_ALLOCATOR`` is true (as ``art-prune
             benchmark`` sets it); ``False`` where oneDNN's pool serves them.
    """
    if os.environ.get(SYSTEM_ALLOCATOR_VARIABLE, "").strip().lower() in ("1", "true"):
        return True
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # pragma: no cover - another TensorFlow layout: assume the C library
        return True
    return not bool(getattr(_pywrap_util_port, "IsMklEnabled", lambda: False)())


def widest_row_bytes(model: keras.Model) -> int:
    """
    :param model: A Functional or Sequential model (nested models are looked into).
    :return: The bytes of one sample at the model's widest tensor (its inputs and every layer's outputs); 0 where a
             shape is not known in advance (a free spatial size).
    """
    widest = 0
    try:
        tensors = list(model.inputs)
        for layer, node in graph_nodes(model):
            if isinstance(layer, keras.Model):
                inner = widest_row_bytes(layer)
                if inner == 0:
                    return 0
                widest = max(widest, inner)
            tensors.extend(node.output_tensors)
        for tensor in tensors:
            dims = tuple(tensor.shape[1:])
            if any(d is None for d in dims):
                return 0
            widest = max(widest, int(np.prod(dims, dtype=np.int64)) * np.dtype(tensor.dtype).itemsize)
    except (AttributeError, TypeError, ValueError):  # a model without a static graph (subclassed): no bound
        return 0
    return widest


def rows_per_call(row_bytes: int, rows: int) -> int:
    """
    :param row_bytes: Bytes of one row at the widest tensor of a call (see :func:`widest_row_bytes`; 0: unknown).
    :param rows: The rows per call asked for.
    :return: ``rows``, or fewer where ``rows`` rows would make a tensor wider than :data:`CALL_BYTES` and TensorFlow
             allocates from the C library (:func:`tensors_from_c_library`); at least 1.
    """
    if row_bytes <= 0 or not tensors_from_c_library():
        return rows
    return max(1, min(rows, CALL_BYTES // row_bytes))


class BatchPredictor:
    """
    Compiled, batched evaluation of a model on numpy arrays (traced once, whatever the batch size). A batch whose
    activations at the model's widest layer would exceed :data:`CALL_BYTES` is run in several calls where that
    matters (see :func:`rows_per_call`; the same outputs).

    :param model: The model.
    :param labels_only: Return the argmax label per sample instead of the whole output.
    """

    def __init__(self, model: keras.Model, labels_only: bool = False) -> None:
        self.model = model
        self.labels_only = labels_only
        self.row_bytes = widest_row_bytes(model)
        self._dtype = model.inputs[0].dtype
        spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], dtype=self._dtype)

        def forward(x: tf.Tensor) -> tf.Tensor:
            out = model(x, training=False)
            return tf.argmax(out, axis=-1, output_type=tf.int64) if labels_only else out

        self._forward = tf.function(forward, input_signature=[spec])

    def __call__(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """
        :param x: Inputs.
        :param batch_size: Samples per call (fewer where :data:`CALL_BYTES` asks for it).
        :return: Outputs (or labels), concatenated over batches.
        """
        step = rows_per_call(self.row_bytes, batch_size)
        parts = [
            self._forward(tf.convert_to_tensor(x[start : start + step], dtype=self._dtype)).numpy()
            for start in range(0, len(x), step)
        ]
        return np.concatenate(parts, axis=0)
