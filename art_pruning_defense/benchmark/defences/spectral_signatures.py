"""
ART's ``SpectralSignatureDefense`` (``expected_pp_poison`` = the share of the training set actually poisoned) flags
training samples; the flagged samples are removed and a fresh CNN is trained on the rest, with the same seed and
epochs as B.
"""

from __future__ import annotations

import numpy as np

from art_pruning_defense.benchmark.config import SPECTRAL_EPS_MULTIPLIER
from art_pruning_defense.benchmark.defences import register
from art_pruning_defense.benchmark.defences.base import Run, filter_and_retrain


@register(
    "spectral-signatures",
    "ART's SpectralSignatureDefense (expected_pp_poison = the share poisoned), flagged samples removed, CNN retrained",
    lambda config: ["spectral signatures"],
)
def _spectral_signatures(run: Run) -> list[dict]:
    from art.defences.detector.poison import SpectralSignatureDefense

    def detect(y_onehot: np.ndarray) -> list[int]:
        defence = SpectralSignatureDefense(
            run.chunked_classifier(),
            run.data.x_train,
            y_onehot,
            expected_pp_poison=float(np.mean(run.data.is_poison_train)),
            batch_size=run.config.predict_batch_size,
            eps_multiplier=SPECTRAL_EPS_MULTIPLIER,
        )
        _, is_clean = defence.detect_poison()
        return is_clean

    return filter_and_retrain(run, "spectral signatures", detect)
