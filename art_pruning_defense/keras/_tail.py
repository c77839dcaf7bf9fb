"""
The sweep's Keras half: the network's head and tail at a cut, compiled once, and the tail evaluated with channels
masked, on cached activations (:class:`CachedTail`) or on inputs run through the head again
(:class:`RecomputedTail`). Where the layers that read the cut are linear in its channels, :class:`FrontState` keeps
each sample's sums of those layers and a step subtracts one channel's share (:class:`SweepStepper`). The numpy half,
the sweep's bookkeeping, is :mod:`art_pruning_defense._sweep`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

# TensorFlow is noisy on import; keep it to errors unless the user chose otherwise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from art_pruning_defense.keras._graph import consuming_calls  # noqa: E402
from art_pruning_defense.keras._predict import rows_per_call, widest_row_bytes  # noqa: E402

logger = logging.getLogger(__name__)


def _is_plain_float32(layer: keras.layers.Layer) -> bool:
    return (
        layer.compute_dtype == "float32"
        and getattr(layer, "quantization_mode", None) is None
        and not getattr(layer, "lora_enabled", False)
    )


@dataclass(frozen=True)
class _Front:
    """
    A layer that reads the cut and is linear in its channels before its bias and activation: a Conv2D, a Dense on
    the feature map's last axis, or a Dense behind a Flatten.

    :param layer: The Conv2D or Dense.
    :param flatten: Whether a Flatten stands between the cut and the Dense.
    :param output: The layer's output tensor in the tail's graph.
    """

    layer: keras.layers.Layer
    flatten: bool
    output: Any


def channel_linear_front(tail: keras.Model) -> tuple[list[_Front], keras.Model] | None:
    """
    Split a tail (cut output → network output) after the layers that read the cut, when each of them is linear in
    the cut's channels: a Conv2D (``groups=1``), a Dense over the last axis, or a Flatten read only by one Dense.
    Such a layer computes the same sum whether a pruned channel is multiplied by zero or left out, so with ``k`` of
    ``C`` channels kept it needs only ``k / C`` of its multiply-adds.

    :param tail: The tail, as made by :func:`split`.
    :return: ``(fronts, rest)``: the layers that read the cut, and the model from their outputs to the tail's
             output; ``None`` where the tail does not have that form (the caller then masks the cut instead).
    """
    cut = tail.inputs[0]
    if len(cut.shape) != 4 or any(d is None for d in cut.shape[1:]):
        return None
    fronts: list[_Front] = []
    for layer, node in consuming_calls(tail, cut):
        if len(node.input_tensors) != 1 or len(node.output_tensors) != 1 or not _is_plain_float32(layer):
            return None
        if isinstance(layer, keras.layers.Conv2D) and not isinstance(
            layer, (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D, keras.layers.Conv2DTranspose)
        ):
            if layer.groups != 1 or layer.data_format != "channels_last":
                return None
            fronts.append(_Front(layer, False, node.output_tensors[0]))
        elif isinstance(layer, keras.layers.Dense):
            fronts.append(_Front(layer, False, node.output_tensors[0]))
        elif isinstance(layer, keras.layers.Flatten) and getattr(layer, "data_format", "channels_last") == (
            "channels_last"
        ):
            readers = consuming_calls(tail, node.output_tensors[0])
            if len(readers) != 1:
                return None
            dense, dense_node = readers[0]
            if (
                not isinstance(dense, keras.layers.Dense)
                or len(dense_node.input_tensors) != 1
                or len(dense_node.output_tensors) != 1
                or not _is_plain_float32(dense)
            ):
                return None
            fronts.append(_Front(dense, True, dense_node.output_tensors[0]))
        else:
            return None
    if not fronts:
        return None
    try:
        rest = keras.Model([f.output for f in fronts], tail.outputs[0], name=f"{tail.name}_rest")
    except ValueError:  # some path from the cut to the output bypasses the fronts
        return None
    return fronts, rest


class CompiledTail:
    """
    The compiled evaluation of a tail, shared by the caches of the clean and the poisoned data (traced once):

    - ``forward(cache, rows, mask) → labels``: the masked cut through the whole tail;
    - ``forward_reordered(cache, rows, mask, channels) → labels``: the same on a cache whose channels are stored in
      another order (``channels`` puts them back in the model's order first);
    - ``compact(cache, rows, positions, kept) → labels``: only the kept channels (``positions`` in the cache, ``kept``
      in the model's numbering) through the layers that read the cut, then the rest of the tail;
    - ``suffix(cache, rows, kept) → labels``: as ``compact`` where the kept channels are the last ``len(kept)`` ones of
      the cache (a slice instead of a gather).

    ``compact`` and ``suffix`` are ``None`` where the layers that read the cut are not linear in its channels (see
    :func:`channel_linear_front`); so is ``stateful``, the functions of a sweep that keeps those layers' sums per
    sample (:class:`FrontState`). ``row_bytes`` is the tail's widest tensor per row (:func:`widest_row_bytes`).

    :param tail: The tail model (cut output → network output), as made by :func:`split`.
    """

    def __init__(self, tail: keras.Model) -> None:
        self.tail = tail
        self.row_bytes = widest_row_bytes(tail)
        sample_shape = tuple(int(d) for d in tail.inputs[0].shape[1:])
        split_front = channel_linear_front(tail)
        functions = _tail_functions(tail, sample_shape, split_front)
        self.forward, self.forward_reordered, self.compact, self.suffix = functions
        self.stateful = None if split_front is None else FrontState(*split_front, sample_shape)


def _tail_functions(
    tail: keras.Model, sample_shape: tuple[int, ...], split_front: tuple[list[_Front], keras.Model] | None
) -> tuple[Any, Any, Any, Any]:
    """
    :param tail: The tail model.
    :param sample_shape: Shape of one sample's activations at the cut, channels last.
    :param split_front: The tail's linear fronts and the rest (:func:`channel_linear_front`), or ``None``.
    :return: ``(forward, forward_reordered, compact, suffix)`` as described in :class:`CompiledTail`.
    """
    n_channels = sample_shape[-1]
    cache_spec = tf.TensorSpec([None, *sample_shape], tf.float32)
    rows_spec = tf.TensorSpec([None], tf.int64)
    mask_spec = tf.TensorSpec([n_channels], tf.float32)
    index_spec = tf.TensorSpec([None], tf.int32)

    def labels(out: tf.Tensor) -> tf.Tensor:
        return tf.argmax(out, axis=-1, output_type=tf.int64)

    def forward(cache: tf.Tensor, rows: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        return labels(tail(tf.gather(cache, rows) * mask, training=False))

    def forward_reordered(cache: tf.Tensor, rows: tf.Tensor, mask: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
        return labels(tail(tf.gather(tf.gather(cache, rows), channels, axis=-1) * mask, training=False))

    forward_function = tf.function(forward, input_signature=[cache_spec, rows_spec, mask_spec])
    reordered_function = tf.function(
        forward_reordered, input_signature=[cache_spec, rows_spec, mask_spec, tf.TensorSpec([n_channels], tf.int32)]
    )
    if split_front is None:
        return forward_function, reordered_function, None, None
    fronts, rest = split_front

    def through_fronts(x: tf.Tensor, kept: tf.Tensor) -> tf.Tensor:
        """The kept channels ``x`` (in the order of ``kept``) through the fronts and the rest of the tail."""
        return _rest_labels(fronts, rest, _front_sums(fronts, x, kept, sample_shape))

    def compact(cache: tf.Tensor, rows: tf.Tensor, positions: tf.Tensor, kept: tf.Tensor) -> tf.Tensor:
        return through_fronts(tf.gather(tf.gather(cache, rows), positions, axis=-1), kept)

    def suffix(cache: tf.Tensor, rows: tf.Tensor, kept: tf.Tensor) -> tf.Tensor:
        return through_fronts(tf.gather(cache, rows)[..., n_channels - tf.size(kept) :], kept)

    compact_function = tf.function(compact, input_signature=[cache_spec, rows_spec, index_spec, index_spec])
    suffix_function = tf.function(suffix, input_signature=[cache_spec, rows_spec, index_spec])
    return forward_function, reordered_function, compact_function, suffix_function


def _front_sums(fronts: list[_Front], x: tf.Tensor, kept: tf.Tensor, sample_shape: tuple[int, ...]) -> list[tf.Tensor]:
    """
    :param x: Activations at the cut of some of its channels (in the order of ``kept``).
    :param kept: The model's number of each channel of ``x``.
    :return: Each front's sums over those channels, before its bias and activation.
    """
    spatial, n_channels = list(sample_shape[:-1]), sample_shape[-1]
    sums = []
    for front in fronts:
        layer = front.layer
        if front.flatten:
            kernel = tf.reshape(layer.kernel, [*spatial, n_channels, -1])
            kernel = tf.reshape(tf.gather(kernel, kept, axis=len(spatial)), [-1, layer.units])
            sums.append(tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), kernel))
        elif isinstance(layer, keras.layers.Dense):
            sums.append(keras.ops.matmul(x, tf.gather(layer.kernel, kept, axis=0)))
        else:
            sums.append(layer.convolution_op(x, tf.gather(layer.kernel, kept, axis=2)))
    return sums


def _rest_labels(fronts: list[_Front], rest: keras.Model, sums: list[tf.Tensor]) -> tf.Tensor:
    """
    :param sums: Each front's sums before its bias and activation (:func:`_front_sums`).
    :return: The labels: the fronts' bias and activation, then the rest of the tail, then the argmax.
    """
    outputs = []
    for front, out in zip(fronts, sums):
        layer = front.layer
        if getattr(layer, "bias", None) is not None:
            out = out + layer.bias
        if layer.activation is not None:
            out = layer.activation(out)
        outputs.append(out)
    return tf.argmax(rest(outputs, training=False), axis=-1, output_type=tf.int64)


#: The cost of keeping one value of a sample's front sums (:class:`FrontState`) through a step: gathered, updated
#: and written back, in multiply-adds of the fronts' own work (about 96 in the lab's DeepID and 176 in a 256-channel
#: synthetic network, measured on a 2-core x86 CPU; see docs/performance-log.md). A sweep step keeps the sums where
#: pruning one channel from them costs less than summing the channels still kept.
STATE_MACS_PER_VALUE = 128


#: Largest response matrix (input pixels × a convolutional front's outputs, in values; the input pixels' own maps
#: count too) through which one channel's share of a convolution is computed as a matrix product; larger fronts
#: convolve the channel's map instead.
RESPONSE_VALUES = 2**20


class FrontState:
    """
    A sweep's per-sample sums of the layers that read the cut (the fronts of :func:`channel_linear_front`, before
    their bias and activation), for sweeps that prune one channel at a time, the least active first. Those layers
    are linear in the cut's channels, so pruning channel ``c`` subtracts ``c``'s share from a sample's sums: one
    channel's worth of the fronts' multiply-adds, whatever the number of channels kept, against one channel's worth
    per channel kept to sum them anew. The sweep keeps the sums while many channels are kept (while
    ``kept >= min_kept``) and sums the few kept channels anew after that, so the shares subtracted are those of the
    least active channels, small beside the sums that stay.

    One state per compiled tail, held by one sweep at a time (:meth:`claim`): the clean and poisoned caches of a
    fit are swept one after the other.

    :param fronts: The layers that read the cut.
    :param rest: The model from the fronts' outputs to the tail's output.
    :param sample_shape: Shape of one sample's activations at the cut, channels last.
    """

    def __init__(self, fronts: list[_Front], rest: keras.Model, sample_shape: tuple[int, ...]) -> None:
        self.fronts, self.rest = fronts, rest
        spatial, n_channels = sample_shape[:-1], sample_shape[-1]
        pixels = int(np.prod(spatial, dtype=np.int64))
        self._shapes = [tuple(int(d) for d in front.output.shape[1:]) for front in fronts]
        self._sizes = [int(np.prod(shape, dtype=np.int64)) for shape in self._shapes]
        #: Values of the sums per sample.
        self.values = sum(self._sizes)
        #: The fronts' multiply-adds per sample and channel of the cut.
        self.channel_macs = sum(
            pixels * front.layer.units
            if isinstance(front.layer, keras.layers.Dense)
            else size * int(np.prod(front.layer.kernel_size))
            for front, size in zip(fronts, self._sizes)
        )
        #: The fewest channels kept after a step for which subtracting one channel's share costs less than summing
        #: the kept ones.
        self.min_kept = 1 + math.ceil(STATE_MACS_PER_VALUE * self.values / max(1, self.channel_macs))
        self.owner: object | None = None
        self._sums = tf.Variable(tf.zeros([0, self.values]), shape=tf.TensorShape([None, self.values]), trainable=False)
        sums = self._sums
        by_response = [
            not front.flatten
            and not isinstance(front.layer, keras.layers.Dense)
            and pixels * max(pixels, size) <= RESPONSE_VALUES
            for front, size in zip(fronts, self._sizes)
        ]
        # One map per input pixel, each that pixel alone at 1: their convolutions are the pixels' responses.
        eye = tf.reshape(tf.eye(pixels), [pixels, *spatial, 1]) if any(by_response) else None

        def share(maps: tf.Tensor, channel: tf.Tensor) -> tf.Tensor:
            """Channel ``channel``'s share of every front's sums, from its maps ``(rows, *spatial)``."""
            flat = tf.reshape(maps, [-1, pixels])
            parts = []
            for front, size, response in zip(fronts, self._sizes, by_response):
                layer = front.layer
                if front.flatten:
                    kernel = tf.reshape(layer.kernel, [pixels, n_channels, layer.units])
                    parts.append(tf.matmul(flat, tf.gather(kernel, channel, axis=1)))
                elif isinstance(layer, keras.layers.Dense):
                    parts.append(
                        tf.reshape(flat[:, :, None] * tf.gather(layer.kernel, channel)[None, None], [-1, size])
                    )
                else:
                    kernel = tf.gather(layer.kernel, [channel], axis=2)
                    if response:  # each input pixel's response, then one product
                        parts.append(tf.matmul(flat, tf.reshape(layer.convolution_op(eye, kernel), [pixels, size])))
                    else:
                        parts.append(tf.reshape(layer.convolution_op(maps[..., None], kernel), [-1, size]))
            return parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)

        def unflatten(flat: tf.Tensor) -> list[tf.Tensor]:
            return [
                tf.reshape(part, [-1, *shape]) for part, shape in zip(tf.split(flat, self._sizes, axis=1), self._shapes)
            ]

        # The sums are updated in functions of their own: in one graph with the rest of the tail, TensorFlow's
        # graph optimiser (its remapper) fails on the tail's activations and says so on stderr.
        def begin(cache: tf.Tensor, rows: tf.Tensor, kept: tf.Tensor) -> tf.Tensor:
            parts = _front_sums(fronts, tf.gather(cache, rows), kept, sample_shape)
            flat = tf.concat([tf.reshape(part, [-1, size]) for part, size in zip(parts, self._sizes)], axis=1)
            sums.scatter_nd_update(rows[:, None], flat)
            return flat

        def prune(maps: tf.Tensor, rows: tf.Tensor, channel: tf.Tensor) -> tf.Tensor:
            flat = tf.gather(sums, rows) - share(maps, channel)
            sums.scatter_nd_update(rows[:, None], flat)
            return flat

        def labels(flat: tf.Tensor) -> tf.Tensor:
            return _rest_labels(fronts, rest, unflatten(flat))

        rows_spec = tf.TensorSpec([None], tf.int64)
        self._begin = tf.function(
            begin,
            input_signature=[
                tf.TensorSpec([None, *sample_shape], tf.float32),
                rows_spec,
                tf.TensorSpec([n_channels], tf.int32),
            ],
        )
        self._prune = tf.function(
            prune, input_signature=[tf.TensorSpec([None, *spatial], tf.float32), rows_spec, tf.TensorSpec([], tf.int32)]
        )
        self._labels = tf.function(labels, input_signature=[tf.TensorSpec([None, self.values], tf.float32)])

    def row_bytes(self, n_channels: int) -> int:
        """
        :param n_channels: Channels of the cut.
        :return: The bytes per sample that a sweep of them holds in sums (0 where it keeps none).
        """
        return 4 * self.values if n_channels - 1 >= self.min_kept else 0

    def claim(self, owner: object, n: int) -> None:
        """
        :param owner: The sweep that holds the sums from now on (any earlier holder's are gone).
        :param n: Its number of samples.
        """
        self.owner = owner
        self._sums.assign(tf.zeros([n, self.values]))

    def release(self, owner: object) -> None:
        """
        :param owner: A sweep done with the sums: their memory goes, if it still holds them.
        """
        if self.owner is owner:
            self.owner = None
            self._sums.assign(tf.zeros([0, self.values]))

    def begin(self, cache: tf.Tensor, rows: tf.Tensor, kept: tf.Tensor) -> tf.Tensor:
        """
        :param cache: Activations at the cut (channels in the order of ``kept``).
        :param rows: A call's samples.
        :param kept: The model's number of each channel of ``cache``.
        :return: Their labels, nothing pruned; their sums are kept.
        """
        return self._labels(self._begin(cache, rows, kept))

    def prune(self, maps: tf.Tensor, rows: tf.Tensor, channel: int) -> tf.Tensor:
        """
        :param maps: The maps of channel ``channel`` of the samples ``rows``.
        :param rows: A call's samples, all of them on which the channel is active (their sums lose its share).
        :param channel: The channel pruned, in the model's numbering.
        :return: Their labels.
        """
        return self._labels(self._prune(maps, rows, tf.constant(channel, tf.int32)))


class CachedTail:
    """
    The part of a network after the pruned layer, evaluated on activations cached on the TensorFlow side: a call
    sends only the row indices and the channel mask, and the gather, the masking, the tail and the argmax run in
    one compiled function.

    Where the layers that read the cut are linear in its channels (see :func:`channel_linear_front`), pruned
    channels are left out of those layers' sums instead of being multiplied by zero: the same sums without their
    zero terms, at a cost proportional to the number of channels kept. Cached with its channels in pruning order
    (``channel_order``), a sweep's kept channels are the last ones of the cache: a slice rather than a gather.

    :param tail: The tail model (cut output → network output), or its :class:`CompiledTail` (to share the traced
           functions between several caches).
    :param activations: Cached activations at the cut, shape ``(n, ..., n_channels)``: an array (copied) or a float32
           tensor (used as it is; :func:`shared_tensor` makes one that shares an array's memory).
    :param batch_size: Rows per call (fewer where a call's widest tensor would exceed :data:`CALL_BYTES`).
    :param channel_order: The model's channel stored at each channel position of ``activations`` (a permutation of
           ``0 .. n_channels - 1``; default: the model's own order). Masks passed to a call always number channels
           as the model does.
    """

    def __init__(
        self,
        tail: keras.Model | CompiledTail,
        activations: np.ndarray | tf.Tensor,
        batch_size: int,
        channel_order: np.ndarray | None = None,
    ) -> None:
        self._compiled = tail if isinstance(tail, CompiledTail) else CompiledTail(tail)
        self.batch_size = rows_per_call(self._compiled.row_bytes, batch_size)
        if tf.is_tensor(activations) and activations.dtype != tf.float32:
            raise TypeError(f"activations must be a float32 tensor or an array, got a {activations.dtype.name} tensor.")
        self._activations = tf.convert_to_tensor(activations, dtype=tf.float32)
        self._holds_activations = True
        self._n = int(activations.shape[0])
        self._n_channels = int(activations.shape[-1])
        if channel_order is None:
            self._order = None
        else:
            self._order = np.asarray(channel_order, dtype=np.int64)
            if sorted(self._order.tolist()) != list(range(self._n_channels)):
                raise ValueError(
                    f"channel_order must be a permutation of the {self._n_channels} channels, got {channel_order!r}"
                )
            self._restore = tf.convert_to_tensor(np.argsort(self._order).astype(np.int32))

    def _function(self, mask: np.ndarray) -> tuple[Any, tuple[tf.Tensor, ...]]:
        """
        :return: The compiled function for this mask and its arguments after the cache and the rows.
        """
        compiled = self._compiled
        stored = mask if self._order is None else mask[self._order]  # the mask in the cache's channel order
        positions = np.flatnonzero(stored)
        if compiled.compact is not None and 0 < positions.size < self._n_channels and np.all(stored[positions] == 1):
            kept = positions if self._order is None else self._order[positions]
            kept = tf.convert_to_tensor(kept.astype(np.int32))
            if positions[0] == self._n_channels - positions.size:  # kept: the last channels of the cache
                return compiled.suffix, (kept,)
            return compiled.compact, (tf.convert_to_tensor(positions.astype(np.int32)), kept)
        if self._order is None:
            return compiled.forward, (tf.convert_to_tensor(mask),)
        return compiled.forward_reordered, (tf.convert_to_tensor(mask), self._restore)

    def _cut(self, rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """
        :param rows: Indices of a call's samples.
        :return: The activations the call reads and the rows of its samples in them.
        """
        return self._activations, rows

    def __call__(self, rows: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
        """
        :param rows: Indices of the samples to evaluate (``None``: all).
        :param mask: One value per channel (1 keep, 0 prune), in the model's channel order.
        :return: Their labels.
        """
        rows = np.arange(self._n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        function, arguments = self._function(np.asarray(mask, dtype=np.float32))
        parts = [
            function(*self._cut(tf.convert_to_tensor(rows[start : start + self.batch_size])), *arguments).numpy()
            for start in range(0, len(rows), self.batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def stepper(
        self, order: np.ndarray | None = None, active: np.ndarray | None = None, spare_bytes: int | None = None
    ) -> SweepStepper:
        """
        :param order: The sweep's pruning order (with ``active``, to weigh whether keeping the front sums pays).
        :param active: ``(n, n_channels)``: whether each sample's map of each channel is active.
        :param spare_bytes: Memory the front sums may take (default: no bound).
        :return: An evaluator of one sweep over this cache, step by step (``_sweep.Stepper``).
        """
        return SweepStepper(self, order, active, spare_bytes)


class SweepStepper:
    """
    A sweep over a :class:`CachedTail`, step by step (the core's ``Stepper``): where the tail's fronts are linear
    in the cut's channels, it keeps each sample's front sums (:class:`FrontState`) while many channels are kept and
    subtracts the pruned channel's share at each step, so that a step costs one channel's worth of the fronts'
    work rather than one per channel kept; afterwards, and wherever the calls do not follow a sweep (a mask that
    brings a channel back or leaves the channel unpruned, or another stepper of the same compiled tail begun since),
    it evaluates the tail on the masked cache. Same labels either way, up to floating-point rounding.

    The sums are kept only where they fit in ``spare_bytes`` and, given the sweep's order and the samples' active
    channels, where the multiply-adds they save (:data:`STATE_MACS_PER_VALUE` and the fronts' shapes, see
    :class:`FrontState`) exceed the cost of writing them for every sample first.

    :param tail: The cached tail.
    :param order: The sweep's pruning order, or ``None``.
    :param active: ``(n, n_channels)``: whether each sample's map of each channel is active, or ``None``.
    :param spare_bytes: Memory the sums may take, or ``None`` (no bound).
    """

    def __init__(
        self,
        tail: CachedTail,
        order: np.ndarray | None = None,
        active: np.ndarray | None = None,
        spare_bytes: int | None = None,
    ) -> None:
        self._tail = tail
        state = tail._compiled.stateful
        self._state = state if state is not None and tail._holds_activations else None
        if self._state is not None:
            needed = tail._n * state.row_bytes(tail._n_channels)
            if needed == 0 or (spare_bytes is not None and needed > spare_bytes):
                self._state = None
            elif order is not None and active is not None and _saved_macs(state, order, active) <= 0:
                self._state = None
        self._mask: np.ndarray | None = None

    def begin(self) -> np.ndarray:
        """
        :return: The label of every sample, nothing pruned.
        """
        tail = self._tail
        mask = np.ones(tail._n_channels, dtype=np.float32)
        if self._state is None:
            return tail(None, mask)
        self._state.claim(self, tail._n)
        self._mask = mask
        kept = tf.convert_to_tensor(
            (np.arange(tail._n_channels) if tail._order is None else tail._order).astype(np.int32)
        )
        return np.concatenate(
            [
                self._state.begin(
                    tail._activations, tf.range(start, min(start + tail.batch_size, tail._n), dtype=tf.int64), kept
                ).numpy()
                for start in range(0, tail._n, tail.batch_size)
            ]
        )

    def prune(self, rows: np.ndarray, channel: int, mask: np.ndarray) -> np.ndarray:
        """
        :param rows: Every sample on which ``channel`` is active (but those left with none).
        :param channel: The channel this step prunes, in the model's numbering.
        :param mask: The mask after this step.
        :return: The labels of ``rows`` after this step.
        """
        tail, state = self._tail, self._state
        if state is not None:
            # A sweep's next mask: the channel pruned now, maybe after channels that were active on none of the
            # samples still evaluated (steps without rows, which change no sums); never a channel back.
            mask = np.asarray(mask, dtype=np.float32)
            follows = self._mask[channel] == 1 and mask[channel] == 0 and np.all((mask == 0) | (self._mask == mask))
            if state.owner is not self or not follows or np.count_nonzero(mask) < state.min_kept:
                state.release(self)
                self._state = state = None
            else:
                self._mask = mask.copy()
        if state is None:
            return tail(rows, mask)
        rows = np.asarray(rows, dtype=np.int64)
        position = channel if tail._order is None else int(np.flatnonzero(tail._order == channel)[0])
        # One channel of the rows: from that channel's maps where the rows are many, else from the rows' maps.
        maps = tail._activations[..., position] if len(rows) * tail._n_channels >= tail._n else None
        parts = []
        for start in range(0, len(rows), tail.batch_size):
            batch = tf.convert_to_tensor(rows[start : start + tail.batch_size])
            batch_maps = (
                tf.gather(maps, batch) if maps is not None else tf.gather(tail._activations, batch)[..., position]
            )
            parts.append(state.prune(batch_maps, batch, channel).numpy())
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _saved_macs(state: FrontState, order: np.ndarray, active: np.ndarray) -> float:
    """
    :return: The multiply-adds (and their equivalent in updates of the sums) that keeping ``state``'s sums through a
             sweep of ``order`` saves, less the cost of writing them for every sample at the start.
    """
    n, n_channels = active.shape
    rows = np.count_nonzero(active[:, np.asarray(order)], axis=0).astype(np.float64)  # re-evaluated at each step
    kept = n_channels - 1 - np.arange(len(order), dtype=np.float64)  # channels kept after each step
    update = STATE_MACS_PER_VALUE * state.values
    by_state = kept >= state.min_kept
    saved = rows[by_state] * ((kept[by_state] - 1) * state.channel_macs - update)
    return float(saved.sum() - n * update)


class CompiledHead:
    """
    The compiled evaluation of a head (input → cut) on rows of an input tensor, shared by the clean and the poisoned
    :class:`RecomputedTail` of one cut (traced once): ``head(inputs, rows) → activations at the cut``.

    :param head: The head model, as made by :func:`split`.
    """

    def __init__(self, head: keras.Model) -> None:
        self.head = head
        self.n_channels = int(head.outputs[0].shape[-1])
        self.row_bytes = widest_row_bytes(head)
        inputs_spec = tf.TensorSpec([None, *head.inputs[0].shape[1:]], tf.float32)

        def forward(inputs: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
            return head(tf.gather(inputs, rows), training=False)

        self._forward = tf.function(forward, input_signature=[inputs_spec, tf.TensorSpec([None], tf.int64)])

    def __call__(self, inputs: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
        """
        :param inputs: The network's (preprocessed) inputs.
        :param rows: Indices of the samples.
        :return: The head's output on those samples.
        """
        return self._forward(inputs, rows)


class RecomputedTail(CachedTail):
    """
    A :class:`CachedTail` that keeps the network's inputs instead of the activations at the cut, and runs the head
    on a call's rows before the tail: memory of the inputs rather than of the cut's activations (which, at an early
    convolution, are many times larger), for the head's forward pass on each call. The tail's part is the same
    compiled function as a cached tail's, so the labels are those of a cached tail on the head's activations.

    :param head: The head model (input → cut), as made by :func:`split`, or its :class:`CompiledHead` (to share it).
    :param tail: The tail model (cut output → network output), or its :class:`CompiledTail`.
    :param inputs: The inputs, preprocessed as the head expects them, shape ``(n, ...)``.
    :param batch_size: Rows per call (fewer where a call's widest tensor, in the head or the tail, would exceed
           :data:`CALL_BYTES`).
    """

    def __init__(
        self,
        head: keras.Model | CompiledHead,
        tail: keras.Model | CompiledTail,
        inputs: np.ndarray,
        batch_size: int,
    ) -> None:
        self._head = head if isinstance(head, CompiledHead) else CompiledHead(head)
        self._compiled = tail if isinstance(tail, CompiledTail) else CompiledTail(tail)
        self.batch_size = rows_per_call(max(self._head.row_bytes, self._compiled.row_bytes), batch_size)
        self._inputs = tf.convert_to_tensor(inputs, dtype=tf.float32)
        self._holds_activations = False  # a sweep evaluates each step on the masked cut
        self._n = int(inputs.shape[0])
        self._n_channels = self._head.n_channels
        self._order = None

    def _cut(self, rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self._head(self._inputs, rows), tf.range(tf.size(rows, out_type=tf.int64), dtype=tf.int64)
