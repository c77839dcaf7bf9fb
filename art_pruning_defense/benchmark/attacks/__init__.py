"""
The benchmark's attacks: a registry by name (:data:`ATTACKS`), one module each. All are all-to-one backdoors on
images in [0, 1]; see :class:`~art_pruning_defense.benchmark.attacks._base.Attack` for the interface.

``badnets``
    Gu et al. 2017: ART's ``add_pattern_bd`` / ``add_single_bd``, or a square patch; dirty-label.
``blended``
    Chen et al. 2017: x' = (1 − α)·x + α·t, a fixed noise trigger, α = 0.15; dirty-label.
``sig``
    Barni et al. 2019: additive horizontal sinusoid (Δ = 20/255, f = 6); clean-label.
``wanet``
    Nguyen & Tran 2021: a fixed smooth warping field (k = 4, s = 0.5) with noise-mode samples; dirty-label.
``clean-label``
    Turner et al. 2019: ART's ``PoisoningAttackCleanLabelBackdoor`` (PGD on a proxy, then ART's pattern); clean-label.
``pruning-aware``
    Liu et al. 2018 (Fine-Pruning, §4): another attack's poison (``badnets`` by default) trained into the channels
    activation pruning keeps, the pruned channels re-inserted as dormant decoys; it trains B itself
    (``train_model``).

Importing this package loads neither TensorFlow nor ART (they are imported when an attack runs), so that the command
line checks attack names and options at once.
"""

from __future__ import annotations

from typing import Any

from art_pruning_defense._defaults import ATTACK_NAMES
from art_pruning_defense.benchmark.attacks._base import Attack, PoisonedData
from art_pruning_defense.benchmark.attacks.badnets import BadNets
from art_pruning_defense.benchmark.attacks.blended import Blended
from art_pruning_defense.benchmark.attacks.clean_label import CleanLabel
from art_pruning_defense.benchmark.attacks.pruning_aware import PruningAware
from art_pruning_defense.benchmark.attacks.sig import SIG
from art_pruning_defense.benchmark.attacks.wanet import WaNet

#: The attacks, by name.
ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls for cls in (BadNets, Blended, SIG, WaNet, CleanLabel, PruningAware)
}
assert tuple(ATTACKS) == ATTACK_NAMES, "keep _defaults.ATTACK_NAMES in step with ATTACKS"


def attack_names() -> tuple[str, ...]:
    """
    :return: The names of the registered attacks.
    """
    return tuple(ATTACKS)


def make_attack(name: str, target: int = 0, poison_rate: float = 0.1, seed: int = 0, **options: Any) -> Attack:
    """
    :param name: One of :data:`ATTACKS`.
    :param target: The target class.
    :param poison_rate: Share of the training set (dirty-label) or of the target class (clean-label) poisoned.
    :param seed: Seed of the choice of the poisoned samples.
    :param options: The attack's own options.
    :return: The attack.
    :raises ValueError: If the name, a parameter or an option is wrong.
    """
    if not isinstance(name, str) or name not in ATTACKS:
        raise ValueError(f"Unknown attack {name!r}; expected one of: {', '.join(ATTACKS)}.")
    return ATTACKS[name](target=target, poison_rate=poison_rate, seed=seed, **options)


__all__ = ["ATTACKS", "Attack", "PoisonedData", "attack_names", "make_attack"]
