"""
Keras adapter: everything the defence needs to know about a Keras 3 model.

- layer discovery: which layer to prune and where its channels' activations are read (the "cut"),
- the head/tail split at the cut, used to cache activations once and evaluate only the tail per pruning step,
- masked copies (B'): a clone of the model with a non-trainable channel mask right after the cut,
- compiled batched prediction,
- safe loading and atomic saving.

A pruned channel is masked at the end of the conv block: after any BatchNormalization, activation and pooling
layers that directly follow the conv. B' therefore computes exactly what B computes with those channels
multiplied by zero at that point, whatever the bias, normalisation or non-linearity.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import zipfile
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

# TensorFlow is noisy on import; keep it to errors unless the user chose otherwise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from art_pruning_defense._aligned import is_shareable  # noqa: E402
from art_pruning_defense._io import atomic_file  # noqa: E402
from art_pruning_defense._limits import check_keras_archive  # noqa: E402
from art_pruning_defense._io import check_input_file  # noqa: E402

logger = logging.getLogger(__name__)


class _DropRetracingWarning(logging.Filter):
    """
    Each model gets its own compiled forward function by design; TensorFlow counts those traces together (by code
    object) and warns about "retracing", which here is expected and harmless.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


tf.get_logger().addFilter(_DropRetracingWarning())

#: Layers whose output channel c depends only on input channel c, with the channel count unchanged.
CHANNELWISE_LAYERS: tuple[type, ...] = (
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.ActivityRegularization,
)
#: Pooling layers that keep channels apart.
POOLING_LAYERS: tuple[type, ...] = (
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalAveragePooling2D,
)
#: Suffix of the mask layer's name in a pruned copy.
MASK_SUFFIX = "_prune_mask"


@dataclass(frozen=True)
class PrunePoint:
    """
    Where a model is pruned.

    :param layer_name: The layer whose channels are pruned (normally a Conv2D).
    :param cut_name: The layer whose output is ranked and masked: ``layer_name`` or the last of the channel-wise
                     and pooling layers that directly follow it.
    :param n_channels: Number of channels.
    """

    layer_name: str
    cut_name: str
    n_channels: int

    @property
    def mask_name(self) -> str:
        """
        :return: Name of the mask layer in a pruned copy.
        """
        return self.cut_name + MASK_SUFFIX


def as_functional(model: keras.Model) -> keras.Model:
    """
    :param model: A built Functional or Sequential Keras model.
    :return: A Functional model over the same layers (same weights, not a copy), with one input and one output.
             Nested Functional or Sequential models (a ``keras.applications`` backbone under a new head, say) are
             inlined, so that every layer of the result is a plain layer.
    """
    view = _single_functional(model)
    if not any(isinstance(layer, keras.Model) for layer in view.layers):
        return view
    inputs = keras.Input(
        batch_shape=view.inputs[0].shape, dtype=view.inputs[0].dtype, name=view.inputs[0]._keras_history[0].name
    )
    try:
        outputs = _inline(view, inputs)
        return keras.Model(inputs, outputs, name=model.name)
    except ValueError as error:
        raise ValueError(
            f"The nested models of {model.name!r} cannot be inlined into one graph ({error}). Give every layer, "
            "inside and outside the nested models, a distinct name."
        ) from None


def _single_functional(model: keras.Model) -> keras.Model:
    """
    :return: A Functional view of a Functional or Sequential model with one input and one output.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model, got {type(model).__name__}.")
    if isinstance(model, keras.Sequential):
        try:
            inputs = model.inputs
        except (AttributeError, ValueError):
            inputs = None
        if not inputs:
            raise ValueError("The Sequential model is not built; build it (or call it once) before pruning it.")
    elif not hasattr(model, "_nodes_by_depth"):
        raise TypeError(
            f"Only Functional and Sequential Keras models can be pruned, got a subclassed {type(model).__name__}."
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"Expected a model with one input and one output, got {len(model.inputs)} inputs and "
            f"{len(model.outputs)} outputs."
        )
    # A Functional view over the same layers (no copy), with a plain tensor as input and output structure.
    return keras.Model(model.inputs[0], model.outputs[0], name=model.name)


def _inline(model: keras.Model, inputs: Any) -> Any:
    """
    Call ``model``'s layers on ``inputs``, replacing each nested model by the calls of its own layers.

    :return: The outputs.
    """

    def call(operation: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(operation, keras.Model):
            kwargs.pop("training", None)
            kwargs.pop("mask", None)
            if kwargs or len(args) != 1:
                raise ValueError(f"nested model {operation.name!r} is called with more than one input")
            return _inline(_single_functional(operation), args[0])
        return operation(*args, **kwargs)

    return model._run_through_graph(inputs, operation_fn=lambda operation: operation, call_fn=call)


def nested_layer_names(model: keras.Model) -> dict[str, str]:
    """
    :param model: A Functional or Sequential model, possibly holding nested models.
    :return: ``{"outer/inner/layer": "layer"}`` for every layer inside a nested model (the names under which the
             layers appear in :func:`as_functional`'s result).
    """
    names: dict[str, str] = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            for inner in layer.layers:
                if isinstance(inner, keras.layers.InputLayer):
                    continue
                names[f"{layer.name}/{inner.name}"] = inner.name
                if isinstance(inner, keras.Model):
                    names.update({f"{layer.name}/{path}": leaf for path, leaf in nested_layer_names(inner).items()})
    return names


def resolve_layer_name(model: keras.Model, layer_name: str) -> str:
    """
    :param model: The user's model (possibly with nested models).
    :param layer_name: A layer's name, or ``"nested/layer"`` for a layer inside a nested model.
    :return: The layer's name in :func:`as_functional`'s result.
    """
    if "/" not in layer_name:
        return layer_name
    nested = nested_layer_names(model)
    if layer_name in nested:
        return nested[layer_name]
    prefix = layer_name.rsplit("/", 1)[0]
    inside = sorted(
        path for path in nested if path.startswith(prefix + "/") and path.count("/") == layer_name.count("/")
    )
    models = sorted({path.rsplit("/", 1)[0] for path in nested})
    if inside:
        raise ValueError(f"Unknown layer_name {layer_name!r}; the nested model {prefix!r} holds: {', '.join(inside)}.")
    raise ValueError(
        f"Unknown layer_name {layer_name!r}: the model has no nested model {prefix!r}; its nested models are: "
        + (", ".join(models) or "none")
        + "."
    )


def input_shape(model: keras.Model) -> tuple[int | None, ...]:
    """
    :param model: A Functional model.
    :return: Per-sample input shape (``None`` for free dimensions).
    """
    return tuple(model.inputs[0].shape[1:])


def n_outputs(model: keras.Model) -> int:
    """
    :param model: A Functional classifier.
    :return: Number of classes N (size of the output vector).
    """
    shape = model.outputs[0].shape
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(f"Expected the model to output one score vector per sample, got output shape {shape}.")
    return int(shape[-1])


def _graph(model: keras.Model) -> tuple[dict[str, list[str]], dict[str, int]]:
    """
    :return: ``(consumers, calls)``: the layers that take each layer's output, and how often each layer is called.
    """
    consumers: dict[str, list[str]] = {layer.name: [] for layer in model.layers}
    calls: dict[str, int] = {}

    def parents(obj: Any) -> Iterator[str]:
        if isinstance(obj, dict):
            if obj.get("class_name") == "__keras_tensor__":
                yield obj["config"]["keras_history"][0]
            else:
                for value in obj.values():
                    yield from parents(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                yield from parents(value)

    for layer_config in model.get_config()["layers"]:
        name = layer_config["name"]
        nodes = layer_config.get("inbound_nodes", [])
        calls[name] = len(nodes)
        for parent in set(parents(nodes)):
            consumers.setdefault(parent, []).append(name)
    return consumers, calls


def last_conv_layers(model: keras.Model, count: int) -> list[str]:
    """
    :param model: A Functional model.
    :param count: How many.
    :return: The names of the last ``count`` Conv2D layers (fewer if the model has fewer), in the model's order.
    """
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    if not convs:
        raise ValueError("The model has no Conv2D layer to prune; name the layers to prune.")
    return convs[-count:]


def _topological_order(model: keras.Model, consumers: Mapping[str, list[str]]) -> list[str]:
    """
    :return: The model's layer names in an order where every layer comes after the layers it reads.
    """
    position = {layer.name: index for index, layer in enumerate(model.layers)}
    indegree = {name: 0 for name in position}
    for parent, children in consumers.items():
        for child in children:
            indegree[child] = indegree.get(child, 0) + 1
    ready = sorted((name for name, degree in indegree.items() if degree == 0), key=position.get)
    order: list[str] = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        for child in consumers.get(name, []):
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
                ready.sort(key=position.get)
    return order


def bottleneck_layers(model: keras.Model) -> list[str]:
    """
    The layers that every path from the input to the output passes through, in the model's order (the input layer
    excluded). In a topological order, a layer is on every path exactly when no connection jumps over it.

    :param model: A Functional model (see :func:`as_functional`).
    :return: Their names.
    """
    consumers, _ = _graph(model)
    order = _topological_order(model, consumers)
    position = {name: index for index, name in enumerate(order)}
    jumped = np.zeros(len(order) + 1, dtype=np.int64)
    for parent, children in consumers.items():
        for child in children:
            if position[child] > position[parent] + 1:
                jumped[position[parent] + 1] += 1
                jumped[position[child]] -= 1
    covered = np.cumsum(jumped)[: len(order)]
    input_name = model.inputs[0]._keras_history[0].name
    return [name for index, name in enumerate(order) if covered[index] == 0 and name != input_name]


def _is_feature_map(layer: keras.layers.Layer) -> bool:
    shape = tuple(layer.output.shape)
    return len(shape) == 4 and shape[-1] is not None


def _check_channels_last(model: keras.Model) -> None:
    for layer in model.layers:
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            raise ValueError(
                f"The model computes channels-first feature maps (layer {layer.name!r} has "
                "data_format='channels_first'); only channels-last models (batch, height, width, channels) can be "
                "pruned."
            )


def _block_candidates(model: keras.Model) -> tuple[list[str], list[str]]:
    """
    :return: ``(maps, candidates)``: the layers with a channels-last 4-D output, and those of them that every path
             to the output passes through (called once, not the output), in the model's order.
    """
    _check_channels_last(model)
    names = [layer.name for layer in model.layers]
    maps = [layer.name for layer in model.layers if _is_feature_map(layer)]
    if not maps:
        raise ValueError(
            "The model has no layer with a 4-D channels-last output (batch, height, width, channels) to prune; its "
            "layers are: " + ", ".join(names)
        )
    consumers, calls = _graph(model)
    output_name = model.outputs[0]._keras_history[0].name
    candidates = [
        name
        for name in bottleneck_layers(model)
        if name in maps and calls.get(name, 0) == 1 and name != output_name and consumers.get(name)
    ]
    if not candidates:
        raise ValueError(
            "No feature map of the model can be pruned on its own: another path to the output bypasses every 4-D "
            f"layer (candidates: {', '.join(maps)}). Name a layer that every path passes through with layer_name."
        )
    return maps, candidates


def _block_name(model: keras.Model, name: str, candidates: list[str]) -> str:
    """
    :return: The name under which the feature map ``name`` is pruned: the Conv2D of its conv block (conv → BN →
             activation → pooling, walking back through channel-wise and pooling layers), else ``name`` itself.
    """
    consumers, _ = _graph(model)
    parents: dict[str, list[str]] = {}
    for parent, children in consumers.items():
        for child in children:
            parents.setdefault(child, []).append(parent)
    current = name
    while isinstance(model.get_layer(current), CHANNELWISE_LAYERS + POOLING_LAYERS):
        above = parents.get(current, [])
        if len(above) != 1 or len(consumers.get(above[0], [])) != 1 or above[0] not in candidates:
            break
        current = above[0]
    return current if isinstance(model.get_layer(current), keras.layers.Conv2D) else name


def default_prune_layer(model: keras.Model) -> str:
    """
    The layer that ``layer_name=None`` prunes: the last channels-last feature map that every path to the output
    passes through (for a ResNet, the last stage's output after its ``Add`` and activation; for a plain CNN, its last
    conv block), named by its Conv2D where the feature map is a conv block's output (conv → BN → activation →
    pooling), as the lab names ``conv_3`` for the map that ``pool_3`` gives.

    :param model: A Functional model (see :func:`as_functional`).
    :return: The layer's name.
    """
    _, candidates = _block_candidates(model)
    chosen = _block_name(model, candidates[-1], candidates)
    logger.info(
        "layer_name=None: pruning %s, the last channels-last feature map that every path to the output passes through.",
        chosen,
    )
    return chosen


def last_prunable_layers(model: keras.Model, count: int) -> list[str]:
    """
    The default layers of the attack-aware strategy: the last ``count`` blocks whose feature map every path to the
    output passes through, one name per block (as :func:`default_prune_layer` names them), in the model's order. A
    layer on a side branch (DeepID's ``conv_4``) or inside a residual block is never among them.

    :param model: A Functional model (see :func:`as_functional`).
    :param count: How many (fewer if the model has fewer blocks).
    :return: Their names.
    """
    _, candidates = _block_candidates(model)
    names: list[str] = []
    cuts: set[str] = set()
    for candidate in reversed(candidates):
        name = _block_name(model, candidate, candidates)
        cut = find_prune_point(model, name).cut_name
        if cut not in cuts and name not in names:
            cuts.add(cut)
            names.append(name)
        if len(names) == count:
            break
    return names[::-1]


def find_prune_point(model: keras.Model, layer_name: str | None = None) -> PrunePoint:
    """
    Find the layer to prune and the point where its channels are ranked and masked.

    :param model: A Functional model (see :func:`as_functional`).
    :param layer_name: Name of the layer to prune: any layer with a channels-last 4-D output (a Conv2D, ``Add``,
           ``Activation``, ``BatchNormalization``, ``Concatenate``, ...); ``None`` for :func:`default_prune_layer`.
    :return: The prune point.
    """
    names = [layer.name for layer in model.layers]
    if layer_name is None:
        layer_name = default_prune_layer(model)
    elif not isinstance(layer_name, str):
        raise TypeError(f"layer_name must be a string or None, got {type(layer_name).__name__}.")
    elif layer_name not in names:
        maps = [layer.name for layer in model.layers if _is_feature_map(layer)]
        raise ValueError(
            f"Unknown layer_name {layer_name!r}; the model's layers with a 4-D output are: " + ", ".join(maps)
        )

    layer = model.get_layer(layer_name)
    consumers, calls = _graph(model)
    if calls.get(layer_name, 0) != 1:
        raise ValueError(f"Layer {layer_name!r} is called {calls.get(layer_name, 0)} times; it must be called once.")
    shape = tuple(layer.output.shape)
    if len(shape) != 4 or shape[-1] is None:
        raise ValueError(
            f"Layer {layer_name!r} ({type(layer).__name__}) has output shape {shape}; expected a channels-last "
            "feature map (batch, height, width, channels)."
        )
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ValueError(f"Layer {layer_name!r} is channels_first; only channels_last layers can be pruned.")

    n_channels = int(shape[-1])
    output_name = model.outputs[0]._keras_history[0].name
    cut, pooled = layer_name, False
    while True:
        nexts = consumers.get(cut, [])
        if len(nexts) != 1 or cut == output_name:
            break
        nxt = model.get_layer(nexts[0])
        if calls.get(nxt.name, 0) != 1 or not isinstance(nxt, CHANNELWISE_LAYERS + POOLING_LAYERS):
            break
        if isinstance(nxt, POOLING_LAYERS):
            if pooled:
                break
            pooled = True
        if isinstance(nxt, keras.layers.BatchNormalization) and nxt.axis not in (-1, len(shape) - 1, [-1], [3]):
            break
        cut = nxt.name
    if cut == output_name:
        raise ValueError(f"Layer {layer_name!r} feeds the model's output directly; nothing follows it to prune.")
    logger.info("Pruning %s, ranking and masking its %d channels at %s.", layer_name, n_channels, cut)
    return PrunePoint(layer_name=layer_name, cut_name=cut, n_channels=n_channels)


def output_of(model: keras.Model, layer_name: str) -> Any:
    """
    :param model: A Functional model.
    :param layer_name: One of its layers.
    :return: The layer's output tensor in this model's graph (a layer shared with another model, as the layers of
             an inlined nested model are, has one output per graph; ``layer.output`` is the first one's).
    """
    from keras.src.ops.function import make_node_key

    layer = model.get_layer(layer_name)
    keys = getattr(model, "_nodes", None)
    for index, node in enumerate(getattr(layer, "_inbound_nodes", [])):
        if keys is None or make_node_key(layer, index) in keys:
            return node.output_tensors[0]
    return layer.output


def split(model: keras.Model, cut_name: str) -> tuple[keras.Model, keras.Model]:
    """
    :param model: A Functional model.
    :param cut_name: Layer at which to split.
    :return: ``(head, tail)``: inputs → cut output, and cut output → model output (sharing the model's weights).
    """
    cut = output_of(model, cut_name)
    head = keras.Model(model.inputs, cut, name=f"{model.name}_head")
    try:
        tail = keras.Model(cut, model.outputs[0], name=f"{model.name}_tail")
    except ValueError as error:
        raise ValueError(
            f"The model cannot be split at {cut_name!r}: some path to the output bypasses it (a skip connection "
            f"across the layer?). Choose a layer that every path passes through. ({error})"
        ) from None
    return head, tail


def _clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    if isinstance(layer, keras.layers.Lambda):
        # The model is already in memory, so its code was accepted when it was loaded (with safe_mode=False):
        # copying it is no new exposure, but Keras refuses to rebuild a Lambda from its config outside that scope.
        from keras.src.saving.serialization_lib import SafeModeScope

        with SafeModeScope(False):
            return layer.__class__.from_config(layer.get_config())
    return layer.__class__.from_config(layer.get_config())


def masked_copy(model: keras.Model, point: PrunePoint, mask: np.ndarray) -> keras.Model:
    """
    :param model: A Functional model (not modified).
    :param point: Where to mask.
    :param mask: One value per channel, 1 to keep and 0 to prune.
    :return: A new model with the same weights (copied) and a mask layer right after ``point.cut_name``.
    """
    return multi_masked_copy(model, {point: mask})


def multi_masked_copy(model: keras.Model, masks: Mapping[PrunePoint, np.ndarray]) -> keras.Model:
    """
    :param model: A Functional model (not modified).
    :param masks: One channel mask (1 keep, 0 prune) per prune point.
    :return: A new model with the same weights (copied) and a mask layer right after each point's cut.
    """
    by_cut: dict[str, tuple[str, np.ndarray]] = {}
    for point, mask in masks.items():
        mask = np.asarray(mask, dtype="float32").reshape(-1)
        if mask.shape != (point.n_channels,):
            raise ValueError(
                f"Expected a mask of {point.n_channels} values for {point.layer_name}, got {mask.shape[0]}."
            )
        by_cut[point.cut_name] = (point.mask_name, mask)

    def call_function(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        out = layer(*args, **kwargs)
        if layer.name in by_cut:
            name, mask = by_cut[layer.name]
            out = keras.layers.Rescaling(scale=mask, offset=0.0, name=name)(out)
        return out

    source_input = model.inputs[0]
    new_input = keras.Input(
        batch_shape=source_input.shape, dtype=source_input.dtype, name=source_input._keras_history[0].name
    )
    copy = keras.models.clone_model(
        model, input_tensors=new_input, clone_function=_clone_layer, call_function=call_function
    )
    _copy_weights(model, copy)
    return copy


def copy_model(model: keras.Model) -> keras.Model:
    """
    :param model: A Functional model.
    :return: An independent copy with equal weights.
    """
    copy = keras.models.clone_model(model, clone_function=_clone_layer)
    _copy_weights(model, copy)
    return copy


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    by_name = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        if layer.name in by_name and layer.weights:
            layer.set_weights(by_name[layer.name].get_weights())


def mask_of(model: keras.Model, point: PrunePoint) -> np.ndarray:
    """
    :param model: A pruned copy made by :func:`masked_copy`.
    :param point: Its prune point.
    :return: Its channel mask.
    """
    return np.asarray(model.get_layer(point.mask_name).scale, dtype="float32").reshape(-1)


def weights_equal(first: keras.Model, second: keras.Model) -> bool:
    """
    :return: Whether both models hold the same weight arrays, in the same order.
    """
    a, b = first.get_weights(), second.get_weights()
    return len(a) == len(b) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))


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
#: The environment variable that makes oneDNN builds of TensorFlow allocate from the C library (read at start-up).
SYSTEM_ALLOCATOR_VARIABLE = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"


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
        for layer, node in _graph_nodes(model):
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


def _graph_nodes(model: keras.Model) -> Iterator[tuple[keras.layers.Layer, Any]]:
    """
    :return: ``(layer, node)`` for every call of a layer in this model's graph.
    """
    from keras.src.ops.function import make_node_key

    keys = getattr(model, "_nodes", None)
    for layer in model.layers:
        for index, node in enumerate(getattr(layer, "_inbound_nodes", [])):
            if keys is None or make_node_key(layer, index) in keys:
                yield layer, node


def _consumers(model: keras.Model, tensor: Any) -> list[tuple[keras.layers.Layer, Any]]:
    """
    :return: The calls in ``model``'s graph that take ``tensor`` as an input.
    """
    return [(layer, node) for layer, node in _graph_nodes(model) if any(t is tensor for t in node.input_tensors)]


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
    for layer, node in _consumers(tail, cut):
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
            readers = _consumers(tail, node.output_tensors[0])
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
