"""
art_pruning_defense: the fine-pruning backdoor defence (Liu, Dolan-Gavitt and Garg, 2018) for the Adversarial
Robustness Toolbox.

| Paper link: https://arxiv.org/abs/1805.12185
"""
__version__ = "0.1.0"

from art_pruning_defense._sweep import SweepStep  # noqa: E402
from art_pruning_defense.goodnet import GoodNetClassifier  # noqa: E402
from art_pruning_defense.fine_pruning import FinePruning  # noqa: E402
from art_pruning_defense.detector import FinePruningDetector  # noqa: E402

__all__ = ["FinePruning", "FinePruningDetector", "GoodNetClassifier", "SweepStep", "__version__"]
