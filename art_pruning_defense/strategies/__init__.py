"""
The ways of choosing the channels to prune, each behind the narrow interface of
:class:`~art_pruning_defense.strategies.base.Strategy`. Adding one is a module here and an entry in
:data:`STRATEGIES`; :class:`~art_pruning_defense.FinePruning` takes its name as ``strategy=``.
"""

from __future__ import annotations

from art_pruning_defense.strategies.activation import ActivationStrategy
from art_pruning_defense.strategies.adversarial import ANP_THRESHOLD, AdversarialStrategy, anp_prune_masks
from art_pruning_defense.strategies.attack_aware import AttackAwareStrategy
from art_pruning_defense.strategies.base import FinePruneCut, FitRun, Strategy, StrategyFit
from art_pruning_defense.strategies.lipschitz import CLP_U, LipschitzStrategy, channel_lipschitz, lipschitz_outliers

#: The strategies by name.
STRATEGIES: dict[str, type[Strategy]] = {
    strategy.name: strategy
    for strategy in (ActivationStrategy, AttackAwareStrategy, LipschitzStrategy, AdversarialStrategy)
}

__all__ = [
    "STRATEGIES",
    "Strategy",
    "StrategyFit",
    "FinePruneCut",
    "FitRun",
    "ActivationStrategy",
    "AttackAwareStrategy",
    "LipschitzStrategy",
    "AdversarialStrategy",
    "ANP_THRESHOLD",
    "CLP_U",
    "anp_prune_masks",
    "channel_lipschitz",
    "lipschitz_outliers",
]
