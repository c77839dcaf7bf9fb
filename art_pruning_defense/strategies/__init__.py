"""
Pruning strategies' numpy cores: channel scores and the rules that turn them into masks. No TensorFlow here; the
Keras adapter (:mod:`art_pruning_defense.keras`) reads the weights and trains.
"""

from art_pruning_defense.strategies.adversarial import ANP_THRESHOLD, anp_prune_masks
from art_pruning_defense.strategies.lipschitz import CLP_U, channel_lipschitz, lipschitz_outliers

__all__ = ["ANP_THRESHOLD", "CLP_U", "anp_prune_masks", "channel_lipschitz", "lipschitz_outliers"]
