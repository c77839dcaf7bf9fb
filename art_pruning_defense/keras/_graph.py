"""
The model's graph: which layer to prune and where its channels are read.

- :func:`as_functional`: one Functional view of a Functional or Sequential model, nested models inlined;
- the layers every path to the output passes through (:func:`bottleneck_layers`), the default prune layer, the
  attack-aware strategy's layers;
- :class:`PrunePoint` and :func:`find_prune_point`: a layer and its "cut", the end of its conv block (after any
  BatchNormalization, activation and pooling layers that directly follow it), where channels are ranked and masked;
- :func:`split`: the head/tail split at a cut.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

# TensorFlow is noisy on import; keep it to errors unless the user chose otherwise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402


logger = logging.getLogger(__name__)


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


def consumers_and_calls(model: keras.Model) -> tuple[dict[str, list[str]], dict[str, int]]:
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
    consumers, _ = consumers_and_calls(model)
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
    consumers, calls = consumers_and_calls(model)
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
    consumers, _ = consumers_and_calls(model)
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
    consumers, calls = consumers_and_calls(model)
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


def graph_nodes(model: keras.Model) -> Iterator[tuple[keras.layers.Layer, Any]]:
    """
    :return: ``(layer, node)`` for every call of a layer in this model's graph.
    """
    from keras.src.ops.function import make_node_key

    keys = getattr(model, "_nodes", None)
    for layer in model.layers:
        for index, node in enumerate(getattr(layer, "_inbound_nodes", [])):
            if keys is None or make_node_key(layer, index) in keys:
                yield layer, node


def consuming_calls(model: keras.Model, tensor: Any) -> list[tuple[keras.layers.Layer, Any]]:
    """
    :return: The calls in ``model``'s graph that take ``tensor`` as an input.
    """
    return [(layer, node) for layer, node in graph_nodes(model) if any(t is tensor for t in node.input_tensors)]
