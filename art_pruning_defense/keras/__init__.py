"""
The Keras adapter: the only part of the package that imports TensorFlow or Keras.
"""
from art_pruning_defense.keras._builders import fine_tune, mnist_cnn, outputs_probabilities, seed_everything, small_cnn, train
from art_pruning_defense.keras._deepid import build_deepid, load_deepid_weights, load_keras_model
from art_pruning_defense.keras._model import (
    BatchPredictor,
    CachedTail,
    PrunePoint,
    as_functional,
    copy_model,
    find_prune_point,
    input_shape,
    last_conv_layers,
    load_model,
    mask_of,
    masked_copy,
    multi_masked_copy,
    n_outputs,
    save_model,
    split,
    weights_equal,
)

__all__ = [
    "BatchPredictor",
    "CachedTail",
    "PrunePoint",
    "as_functional",
    "build_deepid",
    "copy_model",
    "fine_tune",
    "find_prune_point",
    "input_shape",
    "last_conv_layers",
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
    "small_cnn",
    "split",
    "train",
    "weights_equal",
]
