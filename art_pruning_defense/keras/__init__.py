"""
The Keras adapter: what the defence needs to know about, and do with, a Keras 3 model. One idea a module:

- ``_graph``: the model's graph, prune points and the head/tail split;
- ``_masking``: masked copies (B') and plain copies, never touching the user's model;
- ``_predict``: batched prediction and its memory;
- ``_tail``: the sweep's Keras half (the tail evaluated with channels masked);
- ``_training``: training and fine-tuning;
- ``_files``: saving and checked loading of model files;
- ``_architectures``, ``_deepid``: the benchmark's standard architectures and the lab's DeepID.

The framework-free core (the sweep's bookkeeping, metrics, checks) is numpy only; this package, the GoodNet
classifier and the benchmark's training are where TensorFlow and Keras are used.
"""

from art_pruning_defense.keras._architectures import (
    ARCHITECTURES,
    architecture_names,
    augment,
    build_architecture,
    fit_classifier,
    mnist_cnn,
    outputs_probabilities,
    resnet20,
    small_cnn,
    vgg11_bn,
)
from art_pruning_defense.keras._adversarial import anp_mask_values
from art_pruning_defense.keras._channels import ChannelLayer, channel_layers, conv_bn_weights
from art_pruning_defense.keras._deepid import build_deepid, load_deepid_weights
from art_pruning_defense.keras._feature_shift import classifier_head, feature_shift_tune
from art_pruning_defense.keras._files import load_keras_model, load_model, save_model
from art_pruning_defense.keras._graph import (
    PrunePoint,
    as_functional,
    bottleneck_layers,
    default_prune_layer,
    find_prune_point,
    input_shape,
    last_conv_layers,
    last_prunable_layers,
    n_outputs,
    nested_layer_names,
    resolve_layer_name,
    split,
)
from art_pruning_defense.keras._masking import (
    MaskedPredictor,
    clone_layer,
    copy_model,
    mask_of,
    masked_copy,
    multi_masked_copy,
    weights_equal,
)
from art_pruning_defense.keras._predict import BatchPredictor, rows_per_call, shared_tensor, widest_row_bytes
from art_pruning_defense.keras._tail import (
    CachedTail,
    CompiledHead,
    CompiledTail,
    FrontState,
    RecomputedTail,
    SweepStepper,
)
from art_pruning_defense.keras._training import (
    BATCHNORM_MODES,
    BatchSource,
    augment_padding,
    check_probability_output,
    fine_tune,
    fine_tune_stream,
    seed_everything,
    train,
)

__all__ = [
    "ChannelLayer",
    "MaskedPredictor",
    "anp_mask_values",
    "channel_layers",
    "classifier_head",
    "clone_layer",
    "conv_bn_weights",
    "feature_shift_tune",
    "BATCHNORM_MODES",
    "augment_padding",
    "ARCHITECTURES",
    "architecture_names",
    "augment",
    "build_architecture",
    "fit_classifier",
    "resnet20",
    "vgg11_bn",
    "BatchPredictor",
    "CachedTail",
    "CompiledHead",
    "CompiledTail",
    "FrontState",
    "SweepStepper",
    "PrunePoint",
    "RecomputedTail",
    "as_functional",
    "bottleneck_layers",
    "default_prune_layer",
    "nested_layer_names",
    "resolve_layer_name",
    "rows_per_call",
    "check_probability_output",
    "build_deepid",
    "copy_model",
    "BatchSource",
    "fine_tune",
    "fine_tune_stream",
    "find_prune_point",
    "input_shape",
    "last_conv_layers",
    "last_prunable_layers",
    "load_deepid_weights",
    "load_keras_model",
    "load_model",
    "mask_of",
    "masked_copy",
    "mnist_cnn",
    "multi_masked_copy",
    "n_outputs",
    "outputs_probabilities",
    "save_model",
    "seed_everything",
    "shared_tensor",
    "small_cnn",
    "split",
    "train",
    "weights_equal",
    "widest_row_bytes",
]
