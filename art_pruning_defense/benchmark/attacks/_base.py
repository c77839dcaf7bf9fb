"""
What every attack shares: the all-to-one threat model, the choice of the samples to poison, and the checks of the
images and labels it is given.

Images are float32 in [0, 1], channels last ``(n, height, width, channels)``; labels are integers ``(n,)``.
A dirty-label attack replaces ``round(poison_rate * n)`` training samples that are not of the target class by
triggered copies labelled with the target; a clean-label attack triggers ``round(poison_rate * n_target)`` samples
of the target class and keeps their labels. At least one sample is poisoned. The triggered test set holds the test
images that are not of the target class, with the trigger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from art_pruning_defense._validation import check_int, check_number


@dataclass
class PoisonedData:
    """
    The result of :meth:`Attack.poison`.

    :param x: The training images, poisoned ones included (float32, in [0, 1]).
    :param y: Their labels (integers): the target for the poisoned samples of a dirty-label attack.
    :param is_poison: Which samples carry the trigger.
    :param apply_trigger: Applies the trigger to images (the test-time trigger).
    :param is_modified: Which samples differ from the clean ones (the poisoned ones and, for WaNet, its noise-mode
           samples, which keep their true labels).
    """

    x: np.ndarray
    y: np.ndarray
    is_poison: np.ndarray
    apply_trigger: Callable[[np.ndarray], np.ndarray]
    is_modified: np.ndarray


class Attack:
    """
    An all-to-one backdoor attack. Subclasses set :attr:`name`, :attr:`clean_label` and :attr:`options` (the option
    names and defaults), and implement :meth:`_trigger`.
    """

    #: The registry name.
    name: ClassVar[str] = ""
    #: Whether the attack poisons target-class samples and keeps their labels.
    clean_label: ClassVar[bool] = False
    #: Option name → default value.
    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, target: int = 0, poison_rate: float = 0.1, seed: int = 0, **options: Any) -> None:
        """
        :param target: The target class.
        :param poison_rate: Share of the training set poisoned (dirty-label) or of the target class's training
               images (clean-label), in (0, 1); at least one sample is poisoned.
        :param seed: Seed of the choice of the poisoned samples (and of any per-sample randomness).
        :param options: The attack's own options (see :attr:`options`).
        """
        self.target = target
        self.poison_rate = poison_rate
        self.seed = seed
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(self.options) or "none"
            raise ValueError(f"Unknown option(s) {', '.join(unknown)} for attack {self.name!r}; expected: {known}.")
        for key, default in self.options.items():
            setattr(self, key, options.get(key, default))
        self._check_params()

    def _check_params(self) -> None:
        self.target = check_int(self.target, "target", 0)
        self.seed = check_int(self.seed, "seed", 0)
        self.poison_rate = check_number(self.poison_rate, "poison_rate", 0.0, 1.0)

    def params(self) -> dict[str, Any]:
        """
        :return: The attack's options, as JSON-ready values.
        """
        return {key: getattr(self, key) for key in self.options}

    # -----------------------------------------------------------------------------------------------------------------

    def n_poison(self, y: np.ndarray) -> int:
        """
        :param y: Integer training labels.
        :return: How many training samples are poisoned.
        """
        pool = np.count_nonzero(y == self.target) if self.clean_label else len(y)
        return max(1, int(round(self.poison_rate * pool)))

    def poison(self, x: np.ndarray, y: np.ndarray, copy: bool = True) -> PoisonedData:
        """
        Poison a training set.

        :param x: Clean training images, float32 in [0, 1], ``(n, height, width, channels)``.
        :param y: Their integer labels ``(n,)``.
        :param copy: ``False``: poison the images of ``x`` in place (saves a copy of the training set; its clean
               images are then gone, and the result's ``x`` is ``x`` itself).
        :return: The poisoned training set, which samples are poisoned, and the test-time trigger.
        :raises ValueError: If the images or labels are malformed, or there are too few samples to poison.
        """
        x = self._check_images(x)
        y = np.asarray(y)
        if y.shape != (len(x),) or y.dtype.kind not in "iu":
            raise ValueError(f"y must hold {len(x)} integer labels (n,), got shape {y.shape} and dtype {y.dtype}.")
        candidates = np.flatnonzero(y == self.target if self.clean_label else y != self.target)
        n = self.n_poison(y)
        if n > len(candidates):
            pool = "target-class" if self.clean_label else "non-target"
            raise ValueError(
                f"{self.name}: {n} samples to poison (poison_rate {self.poison_rate:g}) but only {len(candidates)} "
                f"{pool} training samples."
            )
        rng = np.random.default_rng(self.seed)
        chosen = np.sort(rng.choice(candidates, size=n, replace=False))
        x_out, y_out = (x.copy() if copy else x), y.astype(np.int64, copy=True)
        x_out[chosen] = self._poison_samples(x[chosen], y[chosen])
        if not self.clean_label:
            y_out[chosen] = self.target
        is_poison = np.zeros(len(x), dtype=bool)
        is_poison[chosen] = True
        is_modified = is_poison | self._extra_samples(x_out, y_out, is_poison, rng)
        return PoisonedData(x_out, y_out, is_poison, self.apply_trigger, is_modified)

    def apply_trigger(self, x: np.ndarray) -> np.ndarray:
        """
        :param x: Images, float32 in [0, 1], ``(n, height, width, channels)``.
        :return: Triggered copies, float32 in [0, 1].
        """
        x = self._check_images(x)
        if len(x) == 0:
            return x.copy()
        return np.clip(self._trigger(x), 0.0, 1.0).astype(np.float32)

    def triggered_test_set(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """
        :param x: Test images.
        :param y: Their integer labels.
        :return: The test images that are not of the target class, triggered.
        """
        return self.apply_trigger(np.asarray(x)[np.asarray(y) != self.target])

    # -----------------------------------------------------------------------------------------------------------------

    def _poison_samples(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """
        :return: The poisoned versions of the chosen training samples (default: the trigger).
        """
        return self.apply_trigger(x)

    def _extra_samples(
        self, x: np.ndarray, y: np.ndarray, is_poison: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """
        Modify further training samples in place (WaNet's noise mode); default: none.

        :return: Which samples were modified.
        """
        return np.zeros(len(x), dtype=bool)

    def _trigger(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _check_images(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"{self.name}: expected images (n, height, width, 1 or 3), got shape {x.shape}.")
        if x.dtype != np.float32:
            raise ValueError(f"{self.name}: expected float32 images in [0, 1], got dtype {x.dtype}.")
        if x.size and (not np.all(np.isfinite(x)) or x.min() < 0.0 or x.max() > 1.0):
            raise ValueError(f"{self.name}: expected images in [0, 1], got values in [{x.min():g}, {x.max():g}].")
        return x
