"""
Adversarial Neuron Pruning (ANP) of Wu and Wang (NeurIPS 2021), "Adversarial Neuron Pruning Purifies Backdoored Deep
Models": the rule that turns optimised mask values into channel masks, and the strategy ``"adversarial"``.

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

from art_pruning_defense.keras._adversarial import ANP_ALPHA, ANP_EPS, ANP_ITERATIONS, anp_mask_values
from art_pruning_defense.strategies._ranked import MIN_IMAGES, RankedStrategy
from art_pruning_defense.strategies.base import FitRun, Source

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


class AdversarialStrategy(RankedStrategy):
    """
    ANP: every conv channel gets a mask value learnt on the clean data against adversarial neuron perturbations;
    channels are pruned in increasing order of their mask values, and the own cut prunes those below
    ``adversarial_threshold``.
    """

    name = "adversarial"
    needs_clean = True

    def scores(self, run: FitRun, clean: Source | None) -> list[np.ndarray]:
        o = self.options
        values = anp_mask_values(
            run.model,
            run.prepared(np.asarray(clean.x)),
            clean.y,
            [layer for layer in self.layers],
            eps=o.get("adversarial_eps", ANP_EPS),
            alpha=o.get("adversarial_alpha", ANP_ALPHA),
            iterations=o.get("adversarial_iterations", ANP_ITERATIONS),
            batch_size=MIN_IMAGES,
            seed=run.seed,
            verbose=run.verbose,
        )
        return [np.asarray(values[point], dtype=np.float64) for point in run.points]

    def order(self, scores: list[np.ndarray]) -> list[tuple[int, int]]:
        keyed = [(float(v), index, channel) for index, score in enumerate(scores) for channel, v in enumerate(score)]
        return [(index, channel) for _, index, channel in sorted(keyed)]

    def own_cut(self, scores: list[np.ndarray]) -> int:
        threshold = float(self.options.get("adversarial_threshold", ANP_THRESHOLD))
        return int(sum(np.count_nonzero(score < threshold) for score in scores))
