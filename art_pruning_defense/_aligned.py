"""
Numpy arrays that TensorFlow can use without a copy (framework-free): allocated on the alignment TensorFlow requires
of a tensor's memory, so that :func:`art_pruning_defense.keras.shared_tensor` hands them over through DLPack.
"""

from __future__ import annotations

import numpy as np

#: Byte alignment TensorFlow requires of a tensor's memory (Eigen's largest alignment on CPU). Numpy aligns its own
#: arrays to 16 bytes only.
TENSOR_ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """
    An uninitialised C-contiguous array whose memory starts on a :data:`TENSOR_ALIGNMENT` boundary.

    :param shape: The array's shape.
    :param dtype: Its element type.
    :return: The array (a view of a slightly larger byte buffer, which it keeps alive).
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(n_bytes + TENSOR_ALIGNMENT, dtype=np.uint8)
    offset = -raw.ctypes.data % TENSOR_ALIGNMENT
    return raw[offset : offset + n_bytes].view(dtype).reshape(shape)


def is_shareable(array: object) -> bool:
    """
    :param array: Anything.
    :return: Whether ``array`` is a non-empty, writeable, C-contiguous float32 numpy array on a
             :data:`TENSOR_ALIGNMENT` boundary (one TensorFlow can share rather than copy).
    """
    return (
        isinstance(array, np.ndarray)
        and array.dtype == np.float32
        and array.size > 0
        and array.flags.c_contiguous
        and array.flags.writeable
        and array.ctypes.data % TENSOR_ALIGNMENT == 0
    )
