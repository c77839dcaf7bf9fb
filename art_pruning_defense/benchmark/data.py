"""
The benchmark's data: images from scikit-learn's digits (embedded) or an ``.npz`` file, the defender's clean
validation split, and the attack's poisoned training set and triggered test set.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from art_pruning_defense.lab.digits import BadNetData, load_digits_images
from art_pruning_defense.benchmark.config import DIGITS_N_TRAIN, BenchmarkConfig
from art_pruning_defense.lab.data import load_npz

logger = logging.getLogger(__name__)


def _images(x: np.ndarray, name: str, path: str) -> np.ndarray:
    """
    :return: ``x`` as images ``(n, height, width, channels)``, not yet scaled: integer images keep their dtype (a
             view; converted subset by subset, see :func:`_unit_float`), float images become float32.
    """
    if x.dtype.kind not in "iuf":
        raise ValueError(f"{path}: {name} holds {x.dtype}, expected numbers (pixel values).")
    if x.ndim == 3:
        x = x[..., np.newaxis]
    elif not (x.ndim == 4 and x.shape[-1] in (1, 3)):
        raise ValueError(
            f"{path}: {name} has shape {x.shape}; expected greyscale images (n, height, width) or channels-last "
            "images (n, height, width, 1 or 3)."
        )
    if len(x) == 0 or 0 in x.shape[1:3]:
        raise ValueError(f"{path}: {name} has shape {x.shape}; it holds no images.")
    if x.dtype.kind in "iu":
        return x  # finite; at most 255 is checked with the other array
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{path}: {name} holds NaN or infinite values.")
    return x


def _unit_float(x: np.ndarray, scaled: bool) -> np.ndarray:
    """
    :param x: Images from :func:`_images` (a subset of them).
    :param scaled: Whether they are 0..255 values to divide by 255.
    :return: float32 images in [0, 1]: the same values as converting the whole array first, then selecting.
    """
    if not scaled:
        return x.astype(np.float32, copy=False)
    x = x.astype(np.float32)  # a new array: the division never touches the caller's
    x /= 255.0
    return x


def _int_labels(y: np.ndarray, name: str, path: str) -> np.ndarray:
    """
    :return: ``y`` as int64 labels ``(n,)``.
    """
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iuf":
        raise ValueError(f"{path}: {name} has shape {y.shape} and dtype {y.dtype}; expected integer labels (n,).")
    if y.dtype.kind == "f" and (not np.all(np.isfinite(y)) or np.any(y != np.round(y))):
        raise ValueError(f"{path}: {name} holds non-integer values; expected integer class labels.")
    if np.any(y < 0):
        raise ValueError(f"{path}: {name} holds negative labels; expected classes 0, 1, 2, ...")
    return y.astype(np.int64)


def _npz_arrays(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """
    Read and check an ``.npz`` image data set, without converting integer images to floats (a float32 copy of the
    whole of MNIST or CIFAR-10 costs four times its 8-bit size; the benchmark converts the subsets it keeps).

    :return: ``(x_train, y_train, x_test, y_test, scaled)``: images from :func:`_images`, int64 labels, and whether
             the pixel values are 0..255 (to divide by 255).
    """
    arrays = load_npz(path)
    path = os.fspath(path)
    x_train = _images(arrays["x_train"], "x_train", path)
    x_test = _images(arrays["x_test"], "x_test", path)
    y_train = _int_labels(arrays["y_train"], "y_train", path)
    y_test = _int_labels(arrays["y_test"], "y_test", path)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{path}: x_train holds images of shape {x_train.shape[1:]} but x_test {x_test.shape[1:]}; they must match."
        )
    low = min(float(x_train.min()), float(x_test.min()))
    high = max(float(x_train.max()), float(x_test.max()))
    integer = arrays["x_train"].dtype.kind in "iu" and arrays["x_test"].dtype.kind in "iu"
    if low < 0.0 or high > 255.0:
        raise ValueError(
            f"{path}: pixel values range over [{low:g}, {high:g}]; expected [0, 1] (floats) or [0, 255] (8-bit)."
        )
    if not integer:  # a mix of integer and float images: both as float32, as the float path expects
        x_train, x_test = x_train.astype(np.float32, copy=False), x_test.astype(np.float32, copy=False)
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"{path}: y_train holds a single class; a classifier needs at least two.")
    logger.info(
        "Loaded %d training and %d test images of shape %s from %s.", len(x_train), len(x_test), x_train.shape[1:], path
    )
    return x_train, y_train, x_test, y_test, integer or high > 1.0


def load_npz_images(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """
    Read an ``.npz`` image data set (the layout of Keras's ``mnist.npz``) for the benchmark.

    Greyscale images ``(n, height, width)`` get a channel axis. Pixel values are scaled to [0, 1]: integer images,
    or float images with values above 1, are taken as 0..255 and divided by 255; float images already in [0, 1] are
    kept. Labels may be ``(n,)`` or ``(n, 1)`` integers.

    :param path: The ``.npz`` file, with the arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``.
    :return: ``(x_train, y_train, x_test, y_test)``: float32 images ``(n, height, width, channels)`` in [0, 1],
             int64 labels ``(n,)``.
    :raises FileNotFoundError: If ``path`` does not exist.
    :raises ValueError: If a key is missing, or the arrays have the wrong shapes or values.
    """
    x_train, y_train, x_test, y_test, scaled = _npz_arrays(path)
    return _unit_float(x_train, scaled), y_train, _unit_float(x_test, scaled), y_test


def clean_split(config: BenchmarkConfig) -> tuple[np.ndarray, ...]:
    """
    :param config: The configuration (its defaults resolved or not).
    :return: ``(x_train, y_train, x_valid, y_valid, x_test, y_test)``, all clean, images float32 in [0, 1]: the
             defender's validation split is ``n_valid`` images drawn from the training images with the seed; on
             digits, the 1,797 images are first split into 1,400 for training and 397 for testing, with the seed.
             8-bit images are converted to floats only after the split (the same values, a quarter of the memory
             meanwhile).
    """
    config = config.resolved()
    if config.is_digits:
        x, y = load_digits_images()
        order = np.random.default_rng(config.seed).permutation(len(x))
        train, test = order[:DIGITS_N_TRAIN], order[DIGITS_N_TRAIN:]
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
        scaled = False
    else:
        x_train, y_train, x_test, y_test, scaled = _npz_arrays(config.data)
    if not 0 < config.n_valid < len(x_train):
        raise ValueError(f"n_valid must be in (0, {len(x_train)}), got {config.n_valid}.")
    if config.target > max(int(y_train.max()), int(y_test.max())):
        raise ValueError(f"target must be one of the data's classes, got {config.target}.")
    order = np.random.default_rng(config.seed).permutation(len(x_train))
    valid, train = order[: config.n_valid], order[config.n_valid :]
    return (
        _unit_float(x_train[train], scaled),
        y_train[train].astype(np.int64),
        _unit_float(x_train[valid], scaled),
        y_train[valid].astype(np.int64),
        _unit_float(x_test, scaled),
        y_test.astype(np.int64),
    )


def load_benchmark_data(config: BenchmarkConfig) -> BadNetData:
    """
    :param config: The configuration (its defaults resolved or not).
    :return: The training set poisoned by the cell's attack, the defender's clean validation split (and its
             triggered copy, without the target class) and the clean and triggered test sets.
    """
    config = config.resolved()
    x_train, y_train, x_valid, y_valid, x_test, y_test = clean_split(config)
    attack = config.make_attack()
    # In place: the split's float32 copy is this function's own, and keeping it beside a poisoned copy would hold the
    # training set twice (CIFAR-10: 0.5 GiB).
    poisoned = attack.poison(x_train, y_train, copy=False)
    n_train = len(x_train)
    del x_train
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    logger.info(
        "%s: poisoned %d of %d training images (target %d%s).",
        attack.name,
        int(np.count_nonzero(poisoned.is_poison)),
        n_train,
        config.target,
        ", clean-label" if attack.clean_label else "",
    )
    return BadNetData(
        x_train=poisoned.x,
        y_train=poisoned.y,
        is_poison_train=poisoned.is_poison,
        x_valid=x_valid,
        y_valid=y_valid,
        x_valid_poisoned=attack.triggered_test_set(x_valid, y_valid),
        x_test=x_test,
        y_test=y_test,
        x_test_poisoned=attack.triggered_test_set(x_test, y_test),
        target=config.target,
        n_classes=n_classes,
    )
