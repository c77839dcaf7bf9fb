"""
Adversarial Neuron Pruning (ANP) of Wu and Wang (NeurIPS 2021), "Adversarial Neuron Pruning Purifies Backdoored Deep
Models": the numpy rule that turns optimised mask values into channel masks.

| Paper link: https://arxiv.org/abs/2110.14430

The optimisation itself (:func:`art_pruning_defense.keras.anp_mask_values`) needs the model and TensorFlow:

1. Every channel gets a mask value ``m`` (initially 1) and, on its normalisation's scale and shift, perturbations
   ``δ, ξ ∈ [-ε, ε]``: the channel computes ``γ (m + δ) x̂ + β (1 + ξ)``.
2. Each iteration draws a batch of clean data, draws the perturbations uniformly in ``[-ε, ε]`` and moves them by
   signed-gradient ascent to maximise the loss (the backdoor channels are the ones whose perturbation hurts most).
3. The masks take one SGD step (momentum 0.9) on ``α · L(natural) + (1 - α) · L(perturbed)`` and are clipped to
   ``[0, 1]``.
4. Channels whose mask value ends below a threshold (0.2 in the paper) are pruned: :func:`anp_prune_masks`. The
   authors zero the pruned channel's BN scale (its shift stays); a mask at the end of the conv block zeroes the
   channel's whole output.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import TypeVar

import numpy as np

logger = logging.getLogger(__name__)

#: The paper's pruning threshold on the optimised mask values.
ANP_THRESHOLD = 0.2

Key = TypeVar("Key", bound=Hashable)


def anp_prune_masks(values: Mapping[Key, np.ndarray], threshold: float = ANP_THRESHOLD) -> dict[Key, np.ndarray]:
    """
    :param values: Optimised mask values in ``[0, 1]``, one array per layer (as ``anp_mask_values`` returns).
    :param threshold: Channels whose value is below it are pruned.
    :return: For each layer, a float32 channel mask: 0 for a pruned channel, 1 for a kept one.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1] (mask values do), got {threshold}.")
    masks: dict[Key, np.ndarray] = {}
    for key, value in values.items():
        value = np.asarray(value, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(value)):
            raise ValueError(f"Mask values of {key} are not all finite.")
        masks[key] = (value >= threshold).astype(np.float32)
    pruned = sum(int((mask == 0).sum()) for mask in masks.values())
    logger.info("ANP: pruning %d channels (mask value < %g) over %d layers.", pruned, threshold, len(masks))
    return masks
