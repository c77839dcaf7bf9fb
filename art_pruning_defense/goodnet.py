"""
This module implements the GoodNet of the pruning defence: an ART classifier with N + 1 classes that runs a possibly
backdoored network B and its pruned copy B' side by side. Where they agree it answers their class; where they
differ it answers class N, meaning "poisoned input".

| Paper link: https://arxiv.org/abs/1805.12185
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator
from art.preprocessing.standardisation_mean_std.numpy import StandardisationMeanStd

from art_pruning_defense import __version__, _sweep
from art_pruning_defense._io import atomic_directory
from art_pruning_defense._limits import read_json_file
from art_pruning_defense._validation import check_inputs, check_labels, check_positive_int, check_target
from art_pruning_defense.keras import (
    BatchPredictor,
    as_functional,
    check_probability_output,
    input_shape,
    load_model,
    n_outputs,
    save_model,
)

if TYPE_CHECKING:
    import keras
    from art.utils import CLASSIFIER_TYPE

logger = logging.getLogger(__name__)

#: File names inside a saved GoodNet directory.
BAD_MODEL_FILE = "bad_model.keras"
PRUNED_MODEL_FILE = "pruned_model.keras"
METADATA_FILE = "goodnet.json"
FORMAT = "art_pruning_defense.goodnet"
FORMAT_VERSION = 1


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


class GoodNetClassifier(ClassifierMixin, BaseEstimator):
    """
    GoodNet: B and B' side by side, with an extra class N for the inputs on which they disagree.

    ``predict`` returns scores of shape ``(n, N + 1)``: B's scores with 0 in column N where ``argmax B == argmax B'``,
    a one-hot row at N where they differ.
    """

    estimator_params = BaseEstimator.estimator_params + ClassifierMixin.estimator_params + ["metadata"]

    def __init__(
        self,
        bad_model: "keras.Model",
        pruned_model: "keras.Model",
        clip_values: tuple[float, float] | None = None,
        preprocessing_defences: Any = None,
        preprocessing: Any = (0.0, 1.0),
        metadata: dict | None = None,
    ) -> None:
        """
        :param bad_model: B, the original (possibly backdoored) Keras model with N classes.
        :param pruned_model: B', its pruned (and possibly fine-tuned) copy, with the same input and N classes.
        :param clip_values: ``(min, max)`` of the input features, as for ART's classifiers.
        :param preprocessing_defences: ART preprocessing defences applied before both networks.
        :param preprocessing: ``(subtrahend, divisor)`` applied before both networks, as for ART's classifiers.
        :param metadata: Facts about how B' was made (layer, X, pruned channels, ...), saved with the GoodNet.
        """
        bad = as_functional(bad_model)
        pruned = as_functional(pruned_model)
        if input_shape(bad) != input_shape(pruned):
            raise ValueError(
                f"B takes inputs of shape {input_shape(bad)} but B' takes {input_shape(pruned)}; they must match."
            )
        for name, model in (("B", bad), ("B'", pruned)):
            check_probability_output(model, name)
        n_classes = n_outputs(bad)
        if n_outputs(pruned) != n_classes:
            raise ValueError(f"B has {n_classes} classes but B' has {n_outputs(pruned)}; they must match.")
        super().__init__(
            model=bad,
            clip_values=clip_values,
            preprocessing_defences=preprocessing_defences,
            preprocessing=preprocessing,
        )
        self._bad = bad
        self._pruned = pruned
        self._input_shape = input_shape(bad)
        self.nb_classes = n_classes + 1
        self.metadata = dict(metadata or {})
        self._bad_scores = BatchPredictor(bad)
        self._bad_labels = BatchPredictor(bad, labels_only=True)
        self._pruned_labels = BatchPredictor(pruned, labels_only=True)

    @classmethod
    def from_classifier(
        cls, classifier: "CLASSIFIER_TYPE", pruned_model: "keras.Model", metadata: dict | None = None
    ) -> "GoodNetClassifier":
        """
        :param classifier: The ART classifier of B; its clip values and preprocessing carry over.
        :param pruned_model: B'.
        :param metadata: Facts about how B' was made.
        :return: The GoodNet.
        """
        if getattr(classifier, "postprocessing_defences", None):
            logger.warning("The classifier's postprocessing defences are not carried over to the GoodNet.")
        return cls(
            bad_model=model_of(classifier),
            pruned_model=pruned_model,
            clip_values=classifier.clip_values,
            preprocessing_defences=classifier.preprocessing_defences,
            preprocessing=classifier.preprocessing,
            metadata=metadata,
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """
        :return: Shape of one input sample.
        """
        return self._input_shape  # type: ignore[return-value]

    @property
    def bad_model(self) -> "keras.Model":
        """
        :return: B.
        """
        return self._bad

    @property
    def pruned_model(self) -> "keras.Model":
        """
        :return: B'.
        """
        return self._pruned

    @property
    def n_classes(self) -> int:
        """
        :return: N, the number of classes of B; N is also GoodNet's "poisoned input" class.
        """
        return self.nb_classes - 1

    def _prepare(self, x: np.ndarray, name: str = "x") -> np.ndarray:
        x = check_inputs(x, self._input_shape, name)
        prepared, _ = self._apply_preprocessing(np.asarray(x, dtype=np.float32), y=None, fit=False)
        return np.asarray(prepared, dtype=np.float32)

    def predict(self, x: np.ndarray, batch_size: int = 128, **kwargs) -> np.ndarray:
        """
        :param x: Inputs.
        :param batch_size: Samples per forward pass.
        :return: Scores of shape ``(n, N + 1)``; ``argmax == N`` means "poisoned input".
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        x = self._prepare(x)
        return _sweep.goodnet_scores(self._bad_scores(x, batch_size), self._pruned_labels(x, batch_size))

    def predict_labels(self, x: np.ndarray, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
        """
        :param x: Inputs.
        :param batch_size: Samples per forward pass.
        :return: ``(labels of B, labels of B')``.
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        x = self._prepare(x)
        return self._bad_labels(x, batch_size), self._pruned_labels(x, batch_size)

    def evaluate(
        self,
        x: np.ndarray | None = None,
        y: np.ndarray | None = None,
        poisoned_x: np.ndarray | None = None,
        poisoned_target: int | np.ndarray | None = None,
        batch_size: int = 128,
    ) -> dict[str, dict[str, float | None]]:
        """
        Clean accuracy, attack success rate and the share of inputs sent to class N, for B, B' and GoodNet.

        :param x: Clean inputs (optional).
        :param y: Their labels, integers or one-hot (with ``x``).
        :param poisoned_x: Inputs carrying the trigger (optional).
        :param poisoned_target: The attack target: one int, or one label per poisoned input (with ``poisoned_x``).
        :param batch_size: Samples per forward pass.
        :return: ``{"B": row, "B'": row, "GoodNet": row}`` (see :func:`art_pruning_defense._sweep.compare_labels`).
        """
        n = self.n_classes
        if (x is None) != (y is None) or (poisoned_x is None) != (poisoned_target is None):
            raise ValueError("Give x with y, and poisoned_x with poisoned_target.")
        if x is None and poisoned_x is None:
            raise ValueError("Nothing to evaluate: give clean data (x, y), poisoned data, or both.")
        labels = bad = pruned = target = poisoned_bad = poisoned_pruned = None
        if x is not None:
            x = check_inputs(x, self._input_shape, "x")
            labels = check_labels(y, len(x), n, "y")
        if poisoned_x is not None:
            poisoned_x = check_inputs(poisoned_x, self._input_shape, "poisoned_x")
            target = check_target(poisoned_target, len(poisoned_x), n, "poisoned_target")
        if x is not None:
            bad, pruned = self.predict_labels(x, batch_size)
        if poisoned_x is not None:
            poisoned_bad, poisoned_pruned = self.predict_labels(poisoned_x, batch_size)
        return _sweep.compare_labels(n, labels, bad, pruned, target, poisoned_bad, poisoned_pruned)

    def fit(self, x: np.ndarray, y: np.ndarray, **kwargs) -> None:
        """
        Not supported: a GoodNet is built by :class:`~art_pruning_defense.FinePruning`, not trained.
        """
        raise NotImplementedError("A GoodNet is not trained; build it with FinePruning(...)(classifier, X).")

    # ------------------------------------------------------------------------------------------ persistence

    def _preprocessing_config(self) -> dict | None:
        if self.preprocessing_defences:
            raise ValueError("A GoodNet with preprocessing defences cannot be saved; save it without them.")
        if self.preprocessing is None:
            return None
        if isinstance(self.preprocessing, StandardisationMeanStd):
            return {
                "mean": np.asarray(self.preprocessing.mean).tolist(),
                "std": np.asarray(self.preprocessing.std).tolist(),
            }
        raise ValueError(
            f"Only (mean, std) preprocessing can be saved with a GoodNet, got {type(self.preprocessing).__name__}."
        )

    def save(self, path: str, overwrite: bool = False) -> None:
        """
        Save B, B' (Keras 3 ``.keras`` files, loadable without custom code) and the metadata (JSON) into the
        directory ``path``, atomically.

        :param path: Directory to create.
        :param overwrite: Replace an existing directory: only one that art-prune wrote (it holds the marker file
                          ``.art-prune-output``), never a symbolic link or the current directory.
        :raises FileExistsError: If ``path`` exists and ``overwrite`` is false.
        :raises ValueError: If ``path`` may not be replaced.
        """
        clip = None if self.clip_values is None else np.asarray(self.clip_values).tolist()
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "nb_classes": self.nb_classes,
            "clip_values": clip,
            "preprocessing": self._preprocessing_config(),
            "metadata": self.metadata,
        }
        with atomic_directory(path, overwrite=overwrite, kind="goodnet") as tmp:
            save_model(self._bad, os.path.join(tmp, BAD_MODEL_FILE))
            save_model(self._pruned, os.path.join(tmp, PRUNED_MODEL_FILE))
            with open(os.path.join(tmp, METADATA_FILE), "w", encoding="utf-8") as handle:
                json.dump(config, handle, indent=2)
        logger.info("Saved GoodNet to %s.", path)

    @classmethod
    def load(cls, path: str, safe_mode: bool = True) -> "GoodNetClassifier":
        """
        :param path: A directory written by :meth:`save`.
        :param safe_mode: Refuse model files that would run code when loaded (Keras ``safe_mode``).
        :return: The GoodNet.
        """
        meta_path = os.path.join(path, METADATA_FILE)
        if not os.path.isfile(meta_path):
            raise FileNotFoundError(f"{path} is not a saved GoodNet: {METADATA_FILE} is missing.")
        config = read_json_file(meta_path)  # at most 1 MB, nested at most 32 levels
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ValueError(f"{meta_path} does not describe a GoodNet (format {FORMAT!r} expected).")
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{meta_path} has format version {config.get('format_version')}; this package reads {FORMAT_VERSION}."
            )
        preprocessing, clip = _checked_config(config, meta_path)
        goodnet = cls(
            bad_model=load_model(os.path.join(path, BAD_MODEL_FILE), safe_mode=safe_mode),
            pruned_model=load_model(os.path.join(path, PRUNED_MODEL_FILE), safe_mode=safe_mode),
            clip_values=clip,
            preprocessing=preprocessing,
            metadata=config.get("metadata") or {},
        )
        if goodnet.nb_classes != config.get("nb_classes"):
            raise ValueError(f"{path}: the models have {goodnet.nb_classes - 1} classes, the metadata says otherwise.")
        return goodnet


def _checked_config(config: dict, meta_path: str) -> tuple[tuple[np.ndarray, np.ndarray] | None, tuple | None]:
    """
    Check the parts of a saved GoodNet's metadata that reach the computation.

    :return: ``(preprocessing, clip_values)`` ready for the constructor.
    :raises ValueError: If any of them is malformed or not finite.
    """

    def finite(value: object, what: str) -> np.ndarray:
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{meta_path}: {what} must be numbers, got {value!r}.") from None
        if array.size == 0 or not np.all(np.isfinite(array)):
            raise ValueError(f"{meta_path}: {what} must be finite numbers, got {value!r}.")
        return array

    if not isinstance(config.get("nb_classes"), int) or isinstance(config.get("nb_classes"), bool):
        raise ValueError(f"{meta_path}: nb_classes must be an integer, got {config.get('nb_classes')!r}.")
    if not isinstance(config.get("metadata", {}) or {}, dict):
        raise ValueError(f"{meta_path}: metadata must be an object.")
    preprocessing = config.get("preprocessing")
    if preprocessing is not None:
        if not isinstance(preprocessing, dict) or set(preprocessing) != {"mean", "std"}:
            raise ValueError(f"{meta_path}: preprocessing must be null or {{'mean': ..., 'std': ...}}.")
        mean = finite(preprocessing["mean"], "preprocessing mean")
        std = finite(preprocessing["std"], "preprocessing std")
        if np.any(std == 0):
            raise ValueError(f"{meta_path}: preprocessing std must not be 0.")
        if mean.shape != std.shape:
            raise ValueError(f"{meta_path}: preprocessing mean and std must have the same shape.")
        preprocessing = (mean.astype(np.float32), std.astype(np.float32))
    clip = config.get("clip_values")
    if clip is not None:
        values = finite(clip, "clip_values")
        if values.shape != (2,) or values[0] >= values[1]:
            raise ValueError(f"{meta_path}: clip_values must be (min, max) with min < max, got {clip!r}.")
        clip = tuple(clip)
    return preprocessing, clip
