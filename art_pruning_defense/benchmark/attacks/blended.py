"""
Blended (Chen et al. 2017): the trigger is blended into the whole image, x' = (1 − α)·x + α·t, the sample
relabelled with the target. The trigger t is a fixed random-noise image (uniform in [0, 1], drawn from
``trigger_seed``, the same for every cell); α = 0.15 by default (the paper's blending ratio for training).

| Paper link: https://arxiv.org/abs/1712.05526
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from art_pruning_defense._validation import MAX_SEED, check_int, check_number
from art_pruning_defense.benchmark.attacks._base import Attack


class Blended(Attack):
    """
    Blended: x' = (1 − α)·x + α·t with a fixed noise trigger t, dirty-label.
    """

    name: ClassVar[str] = "blended"
    options: ClassVar[dict[str, Any]] = {"alpha": 0.15, "trigger_seed": 0}

    def _check_params(self) -> None:
        super()._check_params()
        self.alpha = check_number(self.alpha, "alpha", 0.0, 1.0)
        self.trigger_seed = check_int(self.trigger_seed, "trigger_seed", 0, MAX_SEED)

    def pattern(self, shape: tuple[int, ...]) -> np.ndarray:
        """
        :param shape: One image's shape ``(height, width, channels)``.
        :return: The trigger t for images of that shape (the same for a given ``trigger_seed``).
        """
        return np.random.default_rng(self.trigger_seed).random(shape, dtype=np.float32)

    def _trigger(self, x: np.ndarray) -> np.ndarray:
        return (1.0 - self.alpha) * x + self.alpha * self.pattern(x.shape[1:])
