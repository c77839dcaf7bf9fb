"""
ART's ``ActivationDefence`` (its default clustering, as in ART's poisoning examples) flags training samples; the
flagged samples are removed and a fresh CNN is trained on the rest, with the same seed and epochs as B.
"""

from __future__ import annotations

import numpy as np

from art_pruning_defense.benchmark.config import ACTIVATION_CLUSTERING_PARAMS
from art_pruning_defense.benchmark.defences import register
from art_pruning_defense.benchmark.defences.base import Run, filter_and_retrain


@register(
    "activation-clustering",
    "ART's ActivationDefence on the training set, flagged samples removed, CNN retrained",
    lambda config: ["activation clustering"],
)
def _activation_clustering(run: Run) -> list[dict]:
    from art.defences.detector.poison import ActivationDefence

    def detect(y_onehot: np.ndarray) -> list[int]:
        defence = ActivationDefence(run.chunked_classifier(), run.data.x_train, y_onehot)
        _, is_clean = defence.detect_poison(**ACTIVATION_CLUSTERING_PARAMS)
        return is_clean

    return filter_and_retrain(run, "activation clustering", detect)
