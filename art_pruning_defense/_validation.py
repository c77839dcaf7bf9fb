"""
Checks on user input, done up front so that bad input fails with a clear message before any work starts.
Framework-free: numpy only.
"""

from __future__ import annotations

import logging
import numbers
from typing import Iterable, Sequence

import numpy as np

#: dtype kinds accepted as numbers: signed and unsigned integers, floats (not bool, complex, timedelta, datetime,
#: strings or objects; ``np.timedelta64`` counts as an integer for ``np.issubdtype``, hence kinds).
NUMERIC_KINDS = "iuf"
#: Inputs beyond the clip values by more than this share of their range are reported (a warning).
CLIP_TOLERANCE = 0.01
#: Largest magnitude an input may have: the network runs in float32, and larger values would become infinite.
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: The smallest positive normal float32: a std below it makes a division overflow.
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def is_numeric_dtype(dtype: np.dtype) -> bool:
    """
    :param dtype: A numpy dtype.
    :return: Whether it holds plain numbers: integers or floats, not bool, complex, timedelta, strings or objects.
    """
    return np.dtype(dtype).kind in NUMERIC_KINDS


def _check_float32_range(x: np.ndarray, name: str, where: str = "") -> None:
    """
    :raises ValueError: If a float array wider than float32 holds finite values that float32 cannot hold.
    """
    wide = x.dtype.kind == "f" and x.dtype.itemsize > 4 and x.size
    if wide and max(-float(np.min(x)), float(np.max(x))) > FLOAT32_MAX:
        raise ValueError(
            f"{name} holds values beyond float32's range (|value| > {FLOAT32_MAX:.3g}){where}; the network computes "
            "in float32, where they would become infinite."
        )


def all_finite(x: np.ndarray) -> bool:
    """
    :param x: A numeric array.
    :return: Whether it holds no NaN and no infinity (for floats: two reductions, NaN and infinities propagate to the
             minimum or the maximum; no element-wise temporary the size of ``x``).
    """
    if x.dtype.kind != "f" or x.size == 0:
        return True
    return bool(np.isfinite(np.min(x)) and np.isfinite(np.max(x)))


def is_lazy_array(x: object) -> bool:
    """
    :param x: Anything.
    :return: Whether ``x`` is an array-like read in slices (an h5py dataset, a memory map, a lazy view): it has
             ``shape``, ``dtype``, ``__len__`` and ``__getitem__`` but is no numpy array.
    """
    return not isinstance(x, np.ndarray) and all(
        hasattr(x, attribute) for attribute in ("shape", "dtype", "__len__", "__getitem__")
    )


def check_finite_batch(batch: np.ndarray, start: int, name: str = "x") -> None:
    """
    :param batch: A batch read from a lazy array.
    :param start: Index of its first sample.
    :param name: Name used in error messages.
    """
    where = f" (in samples {start}..{start + (batch.shape[0] if batch.ndim else 1) - 1})"
    if np.issubdtype(batch.dtype, np.floating) and not all_finite(batch):
        raise ValueError(f"{name} holds NaN or infinite values{where}; all inputs must be finite.")
    _check_float32_range(batch, name, where)


def check_inputs(
    x: object, expected_shape: Sequence[int | None], name: str = "x", allow_lazy: bool = False
) -> np.ndarray:
    """
    :param x: Inputs, one sample per row.
    :param expected_shape: Per-sample shape the model accepts (``None`` for a free dimension).
    :param name: Name used in error messages.
    :param allow_lazy: Accept an array-like read in slices (see :func:`is_lazy_array`); its values are then checked
           batch by batch as they are read (:func:`check_finite_batch`), not here.
    :return: ``x`` (not copied).
    :raises TypeError: If ``x`` is not a numeric array.
    :raises ValueError: If ``x`` is empty, has the wrong shape, or holds NaN or infinite values.
    """
    lazy = allow_lazy and is_lazy_array(x)
    if not isinstance(x, np.ndarray) and not lazy:
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}.")
    try:
        dtype = np.dtype(x.dtype)
    except TypeError:
        # An array-like of another framework (a tf.Tensor, a torch tensor): its dtype is not numpy's.
        raise TypeError(
            f"{name} must be a numpy array (or an array read in slices, such as an h5py dataset), got "
            f"{type(x).__name__} with dtype {x.dtype!r}; convert it with np.asarray first."
        ) from None
    if not is_numeric_dtype(dtype):
        raise TypeError(f"{name} must hold integers or floats, got dtype {dtype}.")
    if len(x.shape) == 0:
        raise ValueError(f"{name} is a single value (shape ()); expected an array with one sample per row.")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); at least one sample is needed.")
    sample_shape = tuple(x.shape[1:])
    expected = tuple(expected_shape)
    if len(sample_shape) != len(expected) or any(e is not None and e != s for s, e in zip(sample_shape, expected)):
        shown = tuple("?" if e is None else e for e in expected)
        raise ValueError(f"{name} has shape {sample_shape} per sample, but the model expects {shown}.")
    if not lazy:
        if np.issubdtype(x.dtype, np.floating) and not all_finite(x):
            raise ValueError(f"{name} holds NaN or infinite values; all inputs must be finite.")
        _check_float32_range(x, name)
    return x


def check_labels(y: object, n_samples: int, n_classes: int, name: str = "y") -> np.ndarray:
    """
    :param y: Integer labels of shape ``(n,)`` (integer-valued floats are accepted) or one-hot ``(n, n_classes)``.
    :param n_samples: Number of samples the labels must match.
    :param n_classes: N, the number of classes of the model.
    :param name: Name used in error messages.
    :return: Integer labels, shape ``(n,)``.
    """
    if not isinstance(y, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(y).__name__}.")
    if not is_numeric_dtype(y.dtype):
        raise TypeError(f"{name} must hold integer labels or one-hot rows, got dtype {y.dtype}.")
    if y.ndim == 2 and y.shape[1] != 1:
        if y.shape[1] != n_classes:
            raise ValueError(f"{name} is one-hot with {y.shape[1]} columns, but the model has {n_classes} classes.")
        # Each row must be one-hot: argmax of a row of NaN, of zeros or of several ones would be a silent guess.
        one_hot = np.all((y == 0) | (y == 1), axis=1) & (np.count_nonzero(y == 1, axis=1) == 1)
        if not np.all(one_hot):
            row = int(np.argmin(one_hot))
            raise ValueError(
                f"{name} has {n_classes} columns but row {row} is not one-hot (exactly one 1, the rest 0): "
                f"{np.array2string(y[row], threshold=12, max_line_width=10**6)}; give one-hot rows or integer "
                "labels of shape (n,)."
            )
        labels = np.argmax(y, axis=1)
    elif y.ndim in (1, 2):
        labels = y.reshape(-1)
    else:
        raise ValueError(f"{name} must be integer labels (n,) or one-hot (n, {n_classes}), got shape {y.shape}.")
    if len(labels) != n_samples:
        raise ValueError(f"x has {n_samples} samples but {name} has {len(labels)} labels; they must match.")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError(f"{name} holds non-integer label values; expected integers in [0, {n_classes}).")
    # Checked before the cast to int64, which would wrap large values (uint64, or floats beyond 2**63) around.
    bad = (labels < 0) | (labels >= n_classes)
    if np.any(bad):
        raise ValueError(
            f"{name} holds labels outside [0, {n_classes}): e.g. {labels[np.argmax(bad)].item()!r}; "
            f"the model has {n_classes} classes."
        )
    return labels.astype(np.int64)


def integer_labels(y: object, n_samples: int) -> np.ndarray:
    """
    :param y: Labels: integers ``(n,)``, or one-hot (or score) rows ``(n, N)``, read by their argmax.
    :param n_samples: Number of inputs the labels must match.
    :return: Integer labels, int32, shape ``(n_samples,)``.
    :raises ValueError: If there are not ``n_samples`` labels.
    """
    y = np.asarray(y)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if y.shape[0] != n_samples:
        raise ValueError(f"Expected {n_samples} labels, one per input, got {y.shape[0]}.")
    return y.astype(np.int32)


def check_target(target: object, n_samples: int, n_classes: int, name: str = "poisoned_target") -> np.ndarray:
    """
    :param target: Attack target: one integer for all poisoned samples, or one per sample.
    :param n_samples: Number of poisoned samples.
    :param n_classes: N, the number of classes of the model.
    :param name: Name used in error messages.
    :return: Targets, shape ``(n_samples,)``.
    """
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        if not 0 <= int(target) < n_classes:
            raise ValueError(f"{name} must be a class in [0, {n_classes}), got {target}.")
        return np.full(n_samples, int(target), dtype=np.int64)
    if isinstance(target, np.ndarray):
        return check_labels(target, n_samples, n_classes, name=name)
    raise TypeError(f"{name} must be an int or a numpy array of labels, got {type(target).__name__}.")


def check_drop(value: object, name: str = "accuracy_drop") -> float:
    """
    :param value: An accuracy drop X in percentage points.
    :param name: Name used in error messages.
    :return: X as a float in (0, 100].
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of percentage points in (0, 100], got {type(value).__name__}.")
    value = float(value)
    if not 0.0 < value <= 100.0:
        raise ValueError(f"{name} must be in (0, 100] percentage points, got {value:g}.")
    return value


def check_drops(values: object) -> tuple[float, ...]:
    """
    :param values: One or more accuracy drops X in percentage points.
    :return: The distinct values, sorted ascending.
    """
    if isinstance(values, numbers.Real) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, Iterable) or isinstance(values, (str, bytes)):
        raise TypeError(f"accuracy_drops must be a sequence of numbers, got {type(values).__name__}.")
    drops = tuple(sorted({check_drop(v, "each accuracy drop") for v in values}))
    if not drops:
        raise ValueError("accuracy_drops is empty; give at least one X in (0, 100].")
    return drops


def check_positive_int(value: object, name: str) -> int:
    """
    :param value: The value to check.
    :param name: Name used in error messages.
    :return: The value as an int > 0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


#: Largest seed NumPy's generators take (seeds are in [0, 2**32 - 1]).
MAX_SEED = 2**32 - 1


def _shown(value: object, limit: int = 40) -> str:
    """
    :return: ``str(value)``, cut to ``limit`` characters (a message quotes little of the input).
    """
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def check_int(value: object, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """
    :param value: The value to check.
    :param name: Its name in the messages (a command line passes ``"--option: name"``).
    :param minimum: Smallest value accepted (``None``: no bound).
    :param maximum: Largest value accepted (``None``: no bound).
    :return: The value as an int.
    :raises TypeError: If it is not an integer (a bool is not).
    :raises ValueError: If it is below ``minimum`` or above ``maximum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} ({_shown(value)!r}).")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is not None:
            span = f"an integer in [{'-inf' if minimum is None else minimum}, {maximum}]"
        else:
            span = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {span}, got {_shown(value)}.")
    return int(value)


def check_number(
    value: object,
    name: str,
    low: float | None = None,
    high: float | None = None,
    closed: bool = False,
    hint: str = "",
) -> float:
    """
    :param value: The value to check.
    :param name: Its name in the messages (a command line passes ``"--option: name"``).
    :param low: Lower bound (exclusive unless ``closed``; ``None``: no bound).
    :param high: Upper bound (exclusive unless ``closed``; ``None``: no bound).
    :param closed: Whether the bounds are included.
    :param hint: Said after the range in the message, e.g. ``" (a share, 0.01 for 1 %)"``.
    :return: The value as a float.
    :raises TypeError: If it is not a real number (a bool is not).
    :raises ValueError: If it is NaN, infinite or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({_shown(value)!r}).")
    value = float(value)
    below = low is not None and (value < low if closed else value <= low)
    above = high is not None and (value > high if closed else value >= high)
    if not np.isfinite(value) or below or above:
        if high is None and low is not None:
            span = f"{'>=' if closed else '>'} {low:g}"
        else:
            left, right = ("[", "]") if closed else ("(", ")")
            span = f"in {left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
        raise ValueError(f"{name} must be {span}{hint}, got {value:g}.")
    return value


def warn_outside_clip_values(x: np.ndarray, clip_values: object, logger: logging.Logger, name: str = "Inputs") -> bool:
    """
    Log a warning if ``x`` reaches further beyond the classifier's clip values than :data:`CLIP_TOLERANCE` of their
    range: pixels in [0, 255] given to a model expecting [0, 1] (or the reverse) give meaningless results silently.

    :param x: Inputs, in the classifier's input space (before preprocessing).
    :param clip_values: ``(min, max)``, scalars or arrays broadcastable to a sample; ``None`` for no check.
    :param logger: Where the warning goes.
    :param name: What the inputs are, in the message (plural).
    :return: Whether a warning was logged.
    """
    if clip_values is None or x.size == 0:
        return False
    low = np.asarray(clip_values[0], dtype=np.float64)
    high = np.asarray(clip_values[1], dtype=np.float64)
    tolerance = CLIP_TOLERANCE * (high - low)
    try:
        if low.ndim == 0 and high.ndim == 0:
            # Scalar bounds: two reductions, without the float64 temporaries of an element-wise comparison.
            outside = bool(np.min(x) < low - tolerance or np.max(x) > high + tolerance)
        else:
            outside = bool(np.any(x < low - tolerance) or np.any(x > high + tolerance))
    except ValueError:  # clip values of a shape that does not broadcast to the samples: compare with their extremes
        outside = bool(np.any(x < np.min(low - tolerance)) or np.any(x > np.max(high + tolerance)))
    if outside:
        logger.warning(
            "%s hold values in [%g, %g], more than %g%% beyond the classifier's clip values [%g, %g]: check the "
            "input scale (e.g. pixels in [0, 255] given to a model expecting [0, 1]).",
            name,
            float(np.min(x)),
            float(np.max(x)),
            100 * CLIP_TOLERANCE,
            float(np.min(low)),
            float(np.max(high)),
        )
    return outside


def check_float32(value: object, what: str, std: bool = False) -> np.ndarray:
    """
    Check numbers in the dtype in which they are used: float32.

    :param value: A number or an array of numbers.
    :param what: What they are, for the messages (e.g. ``"preprocessing std"``).
    :param std: They divide the inputs: each must be at least :data:`FLOAT32_TINY` in magnitude.
    :return: The values as a float32 array.
    :raises ValueError: If they are not numbers, are empty, NaN, beyond float32's range or (``std``) zero in float32.
    """
    try:
        wide = np.asarray(value, dtype=np.float64)
    except OverflowError:
        raise ValueError(f"{what} is out of float32 range (|value| <= {FLOAT32_MAX:.4g}), where it is used.") from None
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers, got {value!r}.") from None
    if wide.size == 0:
        raise ValueError(f"{what} must not be empty.")
    if np.any(np.isnan(wide)):
        raise ValueError(f"{what} holds NaN: {value!r}.")
    with np.errstate(over="ignore"):
        narrow = wide.astype(np.float32)
    if not np.all(np.isfinite(narrow)):
        raise ValueError(
            f"{what} is out of float32 range (|value| <= {FLOAT32_MAX:.4g}), where it is used: got "
            f"{np.array2string(wide, threshold=6)}."
        )
    if std and np.any(np.abs(narrow) < FLOAT32_TINY):
        raise ValueError(
            f"{what} must be non-zero in float32 (|std| >= {FLOAT32_TINY:.4g}; dividing by less overflows): got "
            f"{np.array2string(wide, threshold=6)}."
        )
    return narrow
