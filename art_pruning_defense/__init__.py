"""
art_pruning_defense: the fine-pruning backdoor defence (Liu, Dolan-Gavitt and Garg, 2018) for the Adversarial
Robustness Toolbox.

The classes are imported lazily (PEP 562), so that ``import art_pruning_defense`` and the ``art-prune`` command line
start without TensorFlow; it is imported when one of them is first used.

| Paper link: https://arxiv.org/abs/1805.12185
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from art_pruning_defense._version import __version__

#: Public names and the modules that define them.
_LAZY = {
    "FinePruning": "art_pruning_defense.fine_pruning",
    "FinePruningDetector": "art_pruning_defense.detector",
    "GoodNetClassifier": "art_pruning_defense.goodnet",
    "SweepStep": "art_pruning_defense._sweep",
}

__all__ = ["FinePruning", "FinePruningDetector", "GoodNetClassifier", "SweepStep", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from art_pruning_defense._sweep import SweepStep
    from art_pruning_defense.detector import FinePruningDetector
    from art_pruning_defense.fine_pruning import FinePruning
    from art_pruning_defense.goodnet import GoodNetClassifier


def __getattr__(name: str) -> Any:
    """
    :param name: A public name of the package.
    :return: The class, imported on first use.
    :raises AttributeError: If ``name`` is not one of the package's public names.
    """
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
