"""
SIG (Barni et al. 2019): a clean-label attack with an additive horizontal sinusoid,
v(i, j) = Δ·sin(2π·j·f / W), x' = clip(x + v, 0, 1); Δ = 20/255 and f = 6 by default (the paper's values).

| Paper link: https://arxiv.org/abs/1902.11237

Only training images of the target class are poisoned (``poison_rate`` is the share of that class's images) and
their labels are kept; at test time the signal is added to images of the other classes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from art_pruning_defense._validation import check_number
from art_pruning_defense.benchmark.attacks._base import Attack


class SIG(Attack):
    """
    SIG: an additive horizontal sinusoid on target-class training images, clean-label.
    """

    name: ClassVar[str] = "sig"
    clean_label: ClassVar[bool] = True
    options: ClassVar[dict[str, Any]] = {"delta": 20 / 255, "frequency": 6.0}

    def _check_params(self) -> None:
        super()._check_params()
        self.delta = check_number(self.delta, "delta", 0.0, 1.0, closed=False)
        self.frequency = check_number(self.frequency, "frequency", 0.0, 1000.0, closed=False)

    def signal(self, height: int, width: int) -> np.ndarray:
        """
        :return: The signal v, ``(height, width, 1)``.
        """
        columns = np.arange(width, dtype=np.float64)
        row = self.delta * np.sin(2.0 * np.pi * columns * self.frequency / width)
        return np.broadcast_to(row, (height, width))[..., np.newaxis].astype(np.float32)

    def _trigger(self, x: np.ndarray) -> np.ndarray:
        return x + self.signal(x.shape[1], x.shape[2])
