"""
BadNets (Gu et al. 2017): a visible trigger stamped on the image, the sample relabelled with the target.

| Paper link: https://arxiv.org/abs/1708.06733

Triggers: ``"pattern"`` and ``"pixel"`` are ART's ``add_pattern_bd`` (a checkerboard in the bottom-right corner) and
``add_single_bd`` (one pixel), applied through ART's ``PoisoningAttackBackdoor``
(:func:`~art_pruning_defense.lab.digits.add_trigger`, as in the lab's digits data); ``"patch"`` is a square of
``patch_size`` pixels of value ``patch_value`` at ``patch_position`` (a corner, one pixel from the edges, or the
``[row, column]`` of its top-left pixel).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from art_pruning_defense._defaults import TRIGGER_NAMES
from art_pruning_defense._validation import check_int, check_number
from art_pruning_defense.benchmark.attacks._base import Attack

#: The named positions of the patch trigger.
CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")
#: Distance of a corner patch from the image's edges (pixels).
CORNER_MARGIN = 1


class BadNets(Attack):
    """
    BadNets: a visible trigger (ART's pattern or pixel, or a square patch), dirty-label.
    """

    name: ClassVar[str] = "badnets"
    options: ClassVar[dict[str, Any]] = {
        "trigger": "pattern",
        "patch_size": 3,
        "patch_position": "bottom-right",
        "patch_value": 1.0,
    }

    def _check_params(self) -> None:
        super()._check_params()
        if self.trigger not in TRIGGER_NAMES:
            raise ValueError(f"trigger must be one of {', '.join(TRIGGER_NAMES)}, got {self.trigger!r}.")
        self.patch_size = check_int(self.patch_size, "patch_size", 1, 256)
        self.patch_value = check_number(self.patch_value, "patch_value", 0.0, 1.0, closed=True)
        position = self.patch_position
        if isinstance(position, str):
            if position not in CORNERS:
                raise ValueError(
                    f"patch_position must be one of {', '.join(CORNERS)} or [row, column], got {position!r}."
                )
        elif isinstance(position, (list, tuple)) and len(position) == 2:
            self.patch_position = [check_int(value, "patch_position", 0, 4096) for value in position]
        else:
            raise TypeError(f"patch_position must be one of {', '.join(CORNERS)} or [row, column], got {position!r}.")

    def params(self) -> dict[str, Any]:
        """
        :return: The options that apply: the patch's only with the ``"patch"`` trigger.
        """
        params = super().params()
        return params if self.trigger == "patch" else {"trigger": self.trigger}

    def _patch_corner(self, height: int, width: int) -> tuple[int, int]:
        size, position = self.patch_size, self.patch_position
        if isinstance(position, str):
            row = CORNER_MARGIN if position.startswith("top") else height - CORNER_MARGIN - size
            column = CORNER_MARGIN if position.endswith("left") else width - CORNER_MARGIN - size
        else:
            row, column = position
        if row < 0 or column < 0 or row + size > height or column + size > width:
            raise ValueError(
                f"badnets: a patch of {size}×{size} pixels at {position} does not fit images of {height}×{width}."
            )
        return row, column

    def _trigger(self, x: np.ndarray) -> np.ndarray:
        if self.trigger == "patch":
            row, column = self._patch_corner(x.shape[1], x.shape[2])
            out = x.copy()
            out[:, row : row + self.patch_size, column : column + self.patch_size, :] = self.patch_value
            return out
        from art_pruning_defense.lab.digits import add_trigger  # imports ART: only when a trigger is applied

        return add_trigger(x, self.trigger)
