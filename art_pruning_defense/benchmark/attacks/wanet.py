"""
WaNet (Nguyen & Tran 2021): an imperceptible warping trigger, dirty-label, with "noise mode" samples.

| Paper link: https://arxiv.org/abs/2102.10369

1. A k×k grid (k = 4) of 2-D displacements is drawn uniformly in [−1, 1] (from ``trigger_seed``, the same for every
   cell) and divided by its mean absolute value.
2. It is upsampled bicubically to the image size: a smooth displacement field.
3. In coordinates normalised to [−1, 1], every pixel is sampled at its own position plus s·field / size (strength
   s = 0.5), clipped to the image, with bilinear interpolation.
4. Poisoned samples are warped and relabelled with the target. "Noise mode": a further ``cross_ratio`` × (number
   poisoned) training samples (2× by default) are warped with the field plus uniform noise in [−1, 1] / size, drawn
   per sample, and keep their true labels, so that the network learns the exact field rather than any warp.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from art_pruning_defense._validation import MAX_SEED, check_int, check_number
from art_pruning_defense.benchmark.attacks._base import Attack

#: Images warped per batch (bounds the memory of the interpolation).
WARP_BATCH = 2048


def _upsample_bicubic(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """
    :param grid: ``(channels, k, k)``.
    :return: ``(channels, height, width)``: the grid upsampled bicubically, corners aligned.
    """
    from scipy.ndimage import map_coordinates

    k_rows, k_columns = grid.shape[1:]
    rows, columns = np.meshgrid(
        np.linspace(0.0, k_rows - 1, height), np.linspace(0.0, k_columns - 1, width), indexing="ij"
    )
    return np.stack(
        [map_coordinates(channel, [rows, columns], order=3, mode="nearest") for channel in grid.astype(np.float64)]
    )


def warp_bilinear(x: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """
    Sample images at fractional pixel positions, bilinearly.

    :param x: Images ``(n, height, width, channels)``.
    :param rows: Row positions, ``(height, width)`` for all images or ``(n, height, width)`` per image, within
           ``[0, height - 1]``.
    :param columns: Column positions, likewise, within ``[0, width - 1]``.
    :return: The sampled images, ``x``'s shape.
    """
    height, width = x.shape[1:3]
    r0 = np.clip(np.floor(rows).astype(np.int64), 0, height - 1)
    c0 = np.clip(np.floor(columns).astype(np.int64), 0, width - 1)
    r1, c1 = np.minimum(r0 + 1, height - 1), np.minimum(c0 + 1, width - 1)
    wr, wc = (rows - r0)[..., np.newaxis], (columns - c0)[..., np.newaxis]
    index = np.arange(len(x))[:, np.newaxis, np.newaxis] if rows.ndim == 3 else slice(None)
    return (
        x[index, r0, c0] * (1 - wr) * (1 - wc)
        + x[index, r0, c1] * (1 - wr) * wc
        + x[index, r1, c0] * wr * (1 - wc)
        + x[index, r1, c1] * wr * wc
    ).astype(np.float32)


class WaNet(Attack):
    """
    WaNet: a fixed smooth warping field, dirty-label, with noise-mode samples that keep their labels.
    """

    name: ClassVar[str] = "wanet"
    options: ClassVar[dict[str, Any]] = {"k": 4, "strength": 0.5, "cross_ratio": 2.0, "trigger_seed": 0}

    def _check_params(self) -> None:
        super()._check_params()
        self.k = check_int(self.k, "k", 2, 256)
        self.strength = check_number(self.strength, "strength", 0.0, 100.0)
        self.cross_ratio = check_number(self.cross_ratio, "cross_ratio", 0.0, 100.0, closed=True)
        self.trigger_seed = check_int(self.trigger_seed, "trigger_seed", 0, MAX_SEED)

    def field(self, height: int, width: int) -> np.ndarray:
        """
        :return: The displacement field ``(2, height, width)`` (rows, columns), normalised units, before the
                 strength (the same for a given ``trigger_seed``).
        """
        grid = np.random.default_rng(self.trigger_seed).uniform(-1.0, 1.0, (2, self.k, self.k))
        grid /= np.mean(np.abs(grid))
        return _upsample_bicubic(grid, height, width)

    def _positions(self, height: int, width: int, noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """
        :param noise: Per-sample extra displacement ``(n, 2, height, width)`` in normalised units, or ``None``.
        :return: Row and column pixel positions to sample (``(height, width)``, or ``(n, height, width)``).
        """
        field = self.field(height, width)
        identity = np.meshgrid(np.linspace(-1.0, 1.0, height), np.linspace(-1.0, 1.0, width), indexing="ij")
        sizes = (height, width)
        grids = []
        for axis in range(2):
            grid = identity[axis] + self.strength * field[axis] / sizes[axis]
            if noise is not None:
                grid = grid[np.newaxis] + noise[:, axis] / sizes[axis]
            grids.append((np.clip(grid, -1.0, 1.0) + 1.0) / 2.0 * (sizes[axis] - 1))
        return grids[0], grids[1]

    def _trigger(self, x: np.ndarray) -> np.ndarray:
        rows, columns = self._positions(x.shape[1], x.shape[2])
        return np.concatenate(
            [warp_bilinear(x[i : i + WARP_BATCH], rows, columns) for i in range(0, len(x), WARP_BATCH)]
        )

    def _extra_samples(
        self, x: np.ndarray, y: np.ndarray, is_poison: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        candidates = np.flatnonzero(~is_poison)
        n = min(len(candidates), int(round(self.cross_ratio * np.count_nonzero(is_poison))))
        modified = np.zeros(len(x), dtype=bool)
        if n == 0:
            return modified
        chosen = np.sort(rng.choice(candidates, size=n, replace=False))
        height, width = x.shape[1:3]
        for start in range(0, n, WARP_BATCH):
            batch = chosen[start : start + WARP_BATCH]
            noise = rng.uniform(-1.0, 1.0, (len(batch), 2, height, width))
            rows, columns = self._positions(height, width, noise)
            x[batch] = np.clip(warp_bilinear(x[batch], rows, columns), 0.0, 1.0)
        modified[chosen] = True
        return modified
