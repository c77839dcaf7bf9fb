"""
The ways of choosing the channels to prune, each behind the narrow interface of
:class:`~art_pruning_defense.strategies.base.Strategy`. Adding one is a module here and an entry in
:data:`STRATEGIES`; :class:`~art_pruning_defense.FinePruning` takes its name as ``strategy=``.
"""

from __future__ import annotations

from art_pruning_defense.strategies.activation import ActivationStrategy
from art_pruning_defense.strategies.attack_aware import AttackAwareStrategy
from art_pruning_defense.strategies.base import FinePruneCut, FitRun, Strategy, StrategyFit

#: The strategies by name.
STRATEGIES: dict[str, type[Strategy]] = {
    strategy.name: strategy for strategy in (ActivationStrategy, AttackAwareStrategy)
}

__all__ = ["STRATEGIES", "Strategy", "StrategyFit", "FinePruneCut", "FitRun", "ActivationStrategy", "AttackAwareStrategy"]
