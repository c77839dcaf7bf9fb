"""
The ART side of a classifier: the Keras model an ART classifier wraps, and whether its preprocessing changes inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from art.estimators.classification.classifier import ClassifierMixin

if TYPE_CHECKING:
    import keras
    from art.utils import CLASSIFIER_TYPE


def model_of(classifier: Any) -> "keras.Model":
    """
    :param classifier: An ART classifier wrapping a Keras model.
    :return: Its Keras model.
    """
    import keras

    if isinstance(classifier, keras.Model):
        raise TypeError(
            "Expected an ART classifier, got a bare keras.Model; wrap it first: "
            "KerasClassifier(model, clip_values=(min, max))."
        )
    if not isinstance(classifier, ClassifierMixin):
        raise TypeError(f"Expected an ART classifier wrapping a Keras model, got {type(classifier).__name__}.")
    model = getattr(classifier, "model", None)
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected an ART classifier wrapping a Keras model, got a {type(classifier).__name__} wrapping "
            f"{type(model).__name__}."
        )
    return model


def is_identity_preprocessing(classifier: "CLASSIFIER_TYPE") -> bool:
    """
    :return: Whether the classifier's preprocessing leaves inputs unchanged (no defences, mean 0 and std 1), so
             that it can be skipped.
    """
    from art.preprocessing.standardisation_mean_std.numpy import StandardisationMeanStd

    operations = getattr(classifier, "preprocessing_operations", [])
    return all(
        isinstance(op, StandardisationMeanStd) and np.all(op.mean == 0) and np.all(op.std == 1) for op in operations
    )
