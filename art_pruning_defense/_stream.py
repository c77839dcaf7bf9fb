"""
Data given batch by batch: numpy arrays (sliced), or a stream of batches (a ``tf.data.Dataset``, a list of batches,
a generator, any iterable). Framework-free: a batch is turned into numpy with ``np.asarray``, which reads the tensors
of TensorFlow (and other frameworks) without importing them.

Each batch is checked as it is read, with the checks of :mod:`art_pruning_defense._validation` (so one-hot and
integer labels are accepted as for arrays), and errors name the batch. Memory is bounded by one batch: nothing here
keeps the data.

A stream is *re-iterable* when each ``iter(source)`` starts a fresh pass (a ``tf.data.Dataset``, a list, any object
whose ``__iter__`` returns a new iterator) and *one-shot* when it is itself an iterator (a generator): the latter can
be read once only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from art_pruning_defense._validation import check_finite_batch, check_inputs, check_labels, is_lazy_array

#: How labels inside a stream's batches are treated: ``"required"``: each batch is an ``(x, y)`` pair;
#: ``"ignored"``: each batch is ``x`` or an ``(x, y)`` pair whose ``y`` is dropped.
LABEL_MODES = ("required", "ignored")


@dataclass
class Batch:
    """
    One batch.

    :param index: Its position in the pass (from 0).
    :param start: Index of its first sample in the whole data.
    :param x: Inputs, a numpy array (checked).
    :param y: Integer labels of shape ``(len(x),)``, or ``None`` where labels are not read.
    """

    index: int
    start: int
    x: np.ndarray
    y: np.ndarray | None


def _is_array_like(value: object) -> bool:
    return isinstance(value, np.ndarray) or (hasattr(value, "shape") and hasattr(value, "dtype"))


def _is_batch(item: object) -> bool:
    if _is_array_like(item):
        return len(getattr(item, "shape", ())) >= 1
    return isinstance(item, (tuple, list)) and len(item) == 2 and all(_is_array_like(v) for v in item)


def is_stream(x: object) -> bool:
    """
    :param x: Data given by the user.
    :return: Whether ``x`` is a stream of batches: an iterator (a generator), an iterable other than a list, tuple,
             string or mapping (a ``tf.data.Dataset``, a custom re-iterable object), or a list or tuple of batches
             (each an array, or an ``(x, y)`` pair of arrays). A numpy array or an array read in slices (an h5py
             dataset) is no stream; nor is an empty list or a nested list of numbers (refused as no numpy array).
    """
    if x is None or isinstance(x, (np.ndarray, str, bytes, dict)) or is_lazy_array(x):
        return False
    if isinstance(x, Iterator):
        return True
    if isinstance(x, (list, tuple)):
        return len(x) > 0 and all(_is_batch(item) for item in x)
    return isinstance(x, Iterable)


def is_one_shot(x: object) -> bool:
    """
    :param x: A stream.
    :return: Whether it can be read only once (it is its own iterator, as a generator is).
    """
    return isinstance(x, Iterator)


class ArrayBatches:
    """
    Arrays (numpy, or read in slices), already checked, served in slices of ``batch_size``.

    :param x: Inputs.
    :param y: Integer labels (or references) per sample, or ``None``.
    :param batch_size: Samples per batch.
    :param name: Name of the data in error messages.
    """

    one_shot = False
    is_stream = False

    def __init__(self, x: object, y: np.ndarray | None, batch_size: int, name: str = "x") -> None:
        self.x = x
        self.y = y
        self.batch_size = batch_size
        self.name = name
        self.n_samples: int | None = len(x)  # type: ignore[arg-type]
        self._lazy = is_lazy_array(x)

    def batches(self) -> Iterator[Batch]:
        """
        :return: The batches of one pass.
        """
        n = len(self.x)  # type: ignore[arg-type]
        for index, start in enumerate(range(0, n, self.batch_size)):
            stop = min(start + self.batch_size, n)
            batch = np.asarray(self.x[start:stop])  # type: ignore[index]
            if self._lazy:
                check_finite_batch(batch, start, self.name)
            yield Batch(index, start, batch, None if self.y is None else self.y[start:stop])


class StreamBatches:
    """
    A stream of batches, checked batch by batch as it is read.

    :param source: The stream (see :func:`is_stream`).
    :param sample_shape: Per-sample shape the model accepts (``None`` for a free dimension).
    :param name: Name of the data in error messages (``"x"``).
    :param labels: ``"required"`` (each batch is an ``(x, y)`` pair) or ``"ignored"`` (``x``, or ``(x, y)`` whose
           ``y`` is dropped).
    :param n_classes: N, to check labels in [0, N) (with ``labels="required"``).
    :param label_name: Name of the labels in error messages.
    :param fixed_label: With ``labels="ignored"``, the reference label given to every sample (an attack target);
           ``None``: batches carry no labels.
    """

    is_stream = True

    def __init__(
        self,
        source: object,
        sample_shape: Sequence[int | None],
        name: str = "x",
        labels: str = "ignored",
        n_classes: int | None = None,
        label_name: str = "y",
        fixed_label: int | None = None,
    ) -> None:
        if labels not in LABEL_MODES:
            raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}.")
        if labels == "required" and n_classes is None:
            raise ValueError("n_classes is needed to check labels.")
        self.source = source
        self.sample_shape = tuple(sample_shape)
        self.name = name
        self.labels = labels
        self.n_classes = n_classes
        self.label_name = label_name
        self.fixed_label = fixed_label
        self.one_shot = is_one_shot(source)
        #: Number of samples, known after the first complete pass.
        self.n_samples: int | None = None
        self._passes = 0

    def _where(self, index: int, start: int | None = None) -> str:
        return f"{self.name}, batch {index}" + ("" if start is None else f" (from sample {start})")

    def _split(self, item: object, index: int) -> tuple[object, object]:
        if isinstance(item, (tuple, list)):
            if len(item) != 2:
                raise TypeError(
                    f"{self._where(index)}: a batch must be x or an (x, y) pair, got a {type(item).__name__} of "
                    f"{len(item)} items."
                )
            return item[0], item[1]
        if isinstance(item, dict):
            raise TypeError(
                f"{self._where(index)}: a batch must be x or an (x, y) pair, got a dict with keys "
                f"{sorted(map(str, item))}; map the dataset to (x, y) tuples first."
            )
        return item, None

    def _array(self, value: object, index: int, what: str) -> np.ndarray:
        if not _is_array_like(value):
            raise TypeError(
                f"{self._where(index)}: {what} must be an array (numpy, or a tensor), got {type(value).__name__}."
            )
        try:
            return np.asarray(value)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{self._where(index)}: {what} cannot be read as a numpy array ({error}).") from None

    def batches(self) -> Iterator[Batch]:
        """
        :return: The checked batches of one pass. The whole pass must give at least one sample, and as many as the
                 first pass did.
        :raises ValueError: If a one-shot stream is read a second time, the stream is empty, or a batch is bad
                (its index named); ``TypeError`` for a batch of the wrong type or dtype.
        """
        if self.one_shot and self._passes > 0:
            raise ValueError(
                f"{self.name} is a one-shot iterator (a generator) that was already read once, and another pass "
                "is needed; pass a re-iterable instead: a tf.data.Dataset, a list of batches, or an object whose "
                "__iter__ returns a fresh iterator."
            )
        self._passes += 1
        first_shape: tuple | None = None
        start = 0
        index = -1
        for index, item in enumerate(iter(self.source)):  # type: ignore[call-overload]
            raw_x, raw_y = self._split(item, index)
            if self.labels == "required" and raw_y is None:
                raise TypeError(
                    f"{self._where(index)}: a batch must be an (x, y) pair (the labels travel with the inputs), got "
                    f"{type(item).__name__}."
                )
            x = self._array(raw_x, index, "x")
            if x.ndim == 0:
                raise ValueError(f"{self._where(index)}: x is a single value; expected a batch of samples.")
            if first_shape is None:
                first_shape = tuple(x.shape[1:])
            elif tuple(x.shape[1:]) != first_shape:
                raise ValueError(
                    f"{self._where(index, start)}: samples of shape {tuple(x.shape[1:])}, but batch 0 had "
                    f"{first_shape}; every batch must hold samples of the same shape."
                )
            y = None if raw_y is None or self.labels == "ignored" else self._array(raw_y, index, "y")
            if y is not None and y.ndim == 0:
                raise ValueError(f"{self._where(index)}: y is a single value; expected one label per sample.")
            if len(x) == 0 and (y is None or len(y) == 0):
                continue  # an empty batch adds nothing
            try:
                check_inputs(x, self.sample_shape, "x")
                if y is not None:
                    y = check_labels(y, len(x), int(self.n_classes), self.label_name)  # type: ignore[arg-type]
            except (TypeError, ValueError) as error:
                raise type(error)(f"{self._where(index, start)}: {error}") from None
            if self.fixed_label is not None:
                y = np.full(len(x), int(self.fixed_label), dtype=np.int64)
            yield Batch(index, start, x, y)
            start += len(x)
        if start == 0:
            raise ValueError(
                f"{self.name} is empty: the stream gave "
                + ("no batches" if index < 0 else f"{index + 1} batch(es) but no samples")
                + "; at least one sample is needed."
            )
        if self.n_samples is None:
            self.n_samples = start
        elif start != self.n_samples:
            raise ValueError(
                f"{self.name} gave {start} samples in this pass but {self.n_samples} in the first: the stream must "
                "give the same samples on every pass (no random augmentation or sampling in it)."
            )


def regroup(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], size: int
) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
    """
    :param pairs: ``(inputs, labels)`` batches of any sizes.
    :param size: Samples per group.
    :return: The same samples, in the same order, in groups of ``size`` (the last may be smaller), each as the
             lists of the pieces of the input batches that make it up (views, not copies). The lists handed on are
             the caller's: this generator keeps no reference to them.
    """
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    held = 0
    for x, y in pairs:
        while len(x):
            take = min(size - held, len(x))
            xs.append(x[:take])
            ys.append(y[:take])
            held += take
            x, y = x[take:], y[take:]
            if held == size:
                held = 0
                yield xs, ys
                xs, ys = [], []
    if held:
        yield xs, ys


def rebatch(pairs: Iterable[tuple[np.ndarray, np.ndarray]], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """
    :param pairs: ``(inputs, labels)`` batches of any sizes.
    :param batch_size: Samples per output batch.
    :return: The same samples, in the same order, in batches of ``batch_size`` (the last may be smaller). While the
             caller holds an output batch, this generator holds none of its samples (only those of the input batch
             it is cutting), so a batch the caller drops is freed.
    """
    for xs, ys in regroup(pairs, batch_size):
        yield _joined(xs), _joined(ys)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """
    :return: The parts concatenated; ``parts`` is emptied.
    """
    joined = np.concatenate(parts)
    parts.clear()
    return joined
