"""
Clean-label backdoor (Turner et al. 2019): target-class training images are first made hard to classify by an
untargeted PGD attack on a proxy classifier, then given the trigger; their labels are kept.

| Paper link: https://arxiv.org/abs/1912.02771

ART's ``PoisoningAttackCleanLabelBackdoor`` does the work: its PGD (``norm=inf``, ``eps``, ``eps_step``,
``max_iter``; ART's defaults 0.3, 0.1 and 100, here 10 steps so that it stays feasible on a CPU) and its backdoor
(ART's ``add_pattern_bd`` through ``PoisoningAttackBackdoor``). The proxy is the ``small-cnn`` architecture trained
on the clean training set for ``proxy_epochs`` epochs from the cell's seed.

ART 1.20.1, as met here: ``PoisoningAttackCleanLabelBackdoor.poison`` draws its samples with
``np.random.choice(target_indices, int(pp_poison * n))``, with replacement (fewer distinct samples than asked for, some
perturbed twice) and without telling which; this module chooses the samples itself (as every attack here does) and
runs ART's PGD attack and backdoor on exactly those.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from art_pruning_defense._validation import check_int, check_number
from art_pruning_defense.benchmark.attacks._base import Attack

logger = logging.getLogger(__name__)


class CleanLabel(Attack):
    """
    Clean-label backdoor: PGD on a proxy, then ART's pattern trigger, on target-class images; labels kept.
    """

    name: ClassVar[str] = "clean-label"
    clean_label: ClassVar[bool] = True
    options: ClassVar[dict[str, Any]] = {
        "eps": 0.3,
        "eps_step": 0.1,
        "max_iter": 10,
        "proxy_epochs": 2,
        "proxy_batch_size": 64,
    }

    def _check_params(self) -> None:
        super()._check_params()
        self.eps = check_number(self.eps, "eps", 0.0, 1.0, closed=False)
        self.eps_step = check_number(self.eps_step, "eps_step", 0.0, 1.0, closed=False)
        self.max_iter = check_int(self.max_iter, "max_iter", 1, 10_000)
        self.proxy_epochs = check_int(self.proxy_epochs, "proxy_epochs", 1, 1000)
        self.proxy_batch_size = check_int(self.proxy_batch_size, "proxy_batch_size", 1, 65_536)
        self._x_clean: np.ndarray | None = None
        self._y_clean: np.ndarray | None = None

    def poison(self, x: np.ndarray, y: np.ndarray, copy: bool = True):  # noqa: D102 - documented in Attack
        # The proxy trains on the clean images in _poison_samples, before any image of x is replaced.
        self._x_clean, self._y_clean = x, np.asarray(y)
        try:
            return super().poison(x, y, copy=copy)
        finally:
            self._x_clean = self._y_clean = None

    def _backdoor(self):
        from art.attacks.poisoning import PoisoningAttackBackdoor
        from art.attacks.poisoning.perturbations import add_pattern_bd

        return PoisoningAttackBackdoor(add_pattern_bd)

    def _trigger(self, x: np.ndarray) -> np.ndarray:
        poisoned, _ = self._backdoor().poison(x.copy(), y=np.zeros(len(x)))
        return poisoned

    def _poison_samples(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        from art.attacks.poisoning import PoisoningAttackCleanLabelBackdoor
        from art.estimators.classification import KerasClassifier
        from art.utils import to_categorical

        from art_pruning_defense.keras import build_architecture, fit_classifier, seed_everything

        x_clean, y_clean = self._x_clean, self._y_clean
        n_classes = int(max(y_clean.max(), self.target)) + 1
        seed_everything(self.seed)
        proxy = build_architecture("small-cnn", x_clean.shape[1:], n_classes)
        fit_classifier(
            proxy, x_clean, y_clean, epochs=self.proxy_epochs, batch_size=self.proxy_batch_size, seed=self.seed
        )
        attack = PoisoningAttackCleanLabelBackdoor(
            backdoor=self._backdoor(),
            proxy_classifier=KerasClassifier(proxy, clip_values=(0.0, 1.0)),
            target=to_categorical([self.target], n_classes)[0],
            pp_poison=self.poison_rate,
            eps=self.eps,
            eps_step=self.eps_step,
            max_iter=self.max_iter,
        )
        attack.attack.set_params(verbose=False)
        logger.info("Clean-label: PGD (%d steps, eps %g) on %d target-class images.", self.max_iter, self.eps, len(x))
        perturbed = attack.attack.generate(x, y=to_categorical(y, n_classes))
        poisoned, _ = attack.backdoor.poison(perturbed, y=np.zeros(len(x)))
        return np.clip(poisoned, 0.0, 1.0).astype(np.float32)
