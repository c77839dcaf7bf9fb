"""
BadNet data: clean image sets and their poisoning with ART's ``PoisoningAttackBackdoor``.

Images are float32 in [0, 1], channels last. Poisoning replaces a share of the training samples that are not of
the target class with triggered copies labelled with the target; the defender's validation split stays clean.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
from art.attacks.poisoning import PoisoningAttackBackdoor
from art.attacks.poisoning.perturbations import add_pattern_bd, add_single_bd

logger = logging.getLogger(__name__)

#: Trigger name → ART perturbation.
TRIGGERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "pattern": add_pattern_bd,
    "pixel": add_single_bd,
}


@dataclass
class BadNetData:
    """
    A poisoned training set, a clean validation split for the defender, and clean and triggered test sets.

    Labels are integers. ``x_test_poisoned`` holds the test images that are not of the target class, with the
    trigger; ``x_valid_poisoned`` likewise for the validation split (for attack-aware use and for curves).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    is_poison_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_valid_poisoned: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_test_poisoned: np.ndarray
    target: int
    n_classes: int


def add_trigger(x: np.ndarray, trigger: str = "pattern") -> np.ndarray:
    """
    :param x: Images in [0, 1], shape (n, height, width, channels).
    :param trigger: ``"pattern"`` (ART's ``add_pattern_bd``) or ``"pixel"`` (``add_single_bd``).
    :return: Triggered copies.
    """
    if trigger not in TRIGGERS:
        raise ValueError(f"Unknown trigger {trigger!r}; expected one of: {', '.join(TRIGGERS)}.")
    attack = PoisoningAttackBackdoor(TRIGGERS[trigger])
    poisoned, _ = attack.poison(np.asarray(x, dtype=np.float32), y=np.zeros(len(x)))
    return poisoned.astype(np.float32)


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """
    scikit-learn's bundled digits (1,797 images of 8×8), upsampled to 16×16 so that a trigger fits in a corner.

    :return: ``(x, y)``: images (1797, 16, 16, 1) in [0, 1] and integer labels.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.kron(digits.images, np.ones((1, 2, 2))) / 16.0
    return images[..., np.newaxis].astype(np.float32), digits.target.astype(np.int64)


def make_badnet_data(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    n_valid: int,
    poison_rate: float = 0.1,
    target: int = 0,
    trigger: str = "pattern",
    seed: int = 0,
) -> BadNetData:
    """
    Split off a clean validation set and poison the rest of the training set.

    :param x_train: Training images in [0, 1], channels last.
    :param y_train: Their integer labels.
    :param x_test: Test images.
    :param y_test: Their labels.
    :param n_valid: Size of the defender's clean validation split (taken from the training images).
    :param poison_rate: Share of the remaining training set replaced by triggered, relabelled images.
    :param target: The attack's target class.
    :param trigger: ``"pattern"`` or ``"pixel"``.
    :param seed: Seed for the split and the choice of poisoned samples.
    :return: The data.
    """
    if not 0.0 <= poison_rate < 1.0:
        raise ValueError(f"poison_rate must be in [0, 1), got {poison_rate}.")
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    if not 0 <= target < n_classes:
        raise ValueError(f"target must be a class in [0, {n_classes}), got {target}.")
    if not 0 < n_valid < len(x_train):
        raise ValueError(f"n_valid must be in (0, {len(x_train)}), got {n_valid}.")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_train))
    valid, train = order[:n_valid], order[n_valid:]
    x_tr, y_tr = x_train[train].astype(np.float32), y_train[train].astype(np.int64)

    candidates = np.flatnonzero(y_tr != target)
    n_poison = int(round(poison_rate * len(x_tr)))
    chosen = rng.choice(candidates, size=min(n_poison, len(candidates)), replace=False)
    x_tr = x_tr.copy()
    y_tr = y_tr.copy()
    x_tr[chosen] = add_trigger(x_tr[chosen], trigger)
    y_tr[chosen] = target
    is_poison = np.zeros(len(x_tr), dtype=bool)
    is_poison[chosen] = True
    logger.info("Poisoned %d of %d training images (target %d, %s trigger).", len(chosen), len(x_tr), target, trigger)

    x_va, y_va = x_train[valid].astype(np.float32), y_train[valid].astype(np.int64)
    x_te, y_te = x_test.astype(np.float32), y_test.astype(np.int64)
    return BadNetData(
        x_train=x_tr,
        y_train=y_tr,
        is_poison_train=is_poison,
        x_valid=x_va,
        y_valid=y_va,
        x_valid_poisoned=add_trigger(x_va[y_va != target], trigger),
        x_test=x_te,
        y_test=y_te,
        x_test_poisoned=add_trigger(x_te[y_te != target], trigger),
        target=target,
        n_classes=n_classes,
    )


def digits_badnet_data(
    poison_rate: float = 0.1, target: int = 0, trigger: str = "pattern", seed: int = 0
) -> BadNetData:
    """
    The embedded default: scikit-learn's digits, 1,100 training images (poisoned), 300 clean validation images for
    the defender, 397 test images.

    :param poison_rate: Share of the training images poisoned.
    :param target: The attack's target class.
    :param trigger: ``"pattern"`` or ``"pixel"``.
    :param seed: Seed.
    :return: The data.
    """
    x, y = load_digits_images()
    order = np.random.default_rng(seed).permutation(len(x))
    train, test = order[:1400], order[1400:]
    return make_badnet_data(
        x[train],
        y[train],
        x[test],
        y[test],
        n_valid=300,
        poison_rate=poison_rate,
        target=target,
        trigger=trigger,
        seed=seed,
    )
