"""
The benchmark's defences: a registry by name (:data:`DEFENCES`), one module each; a run can take any subset.

``none``
    "no defence": B itself.
``pruning``
    "pruning X=..." (B'(X) of :class:`~art_pruning_defense.FinePruning`, one row per accuracy drop X) and
    "GoodNet X=10".
``fine-pruning``
    "fine-pruning" (the fine-pruned B', with the detection rates of ``FinePruningDetector``'s defaults) and
    "fine-pruning GoodNet" (GoodNet over the fine-pruned B').
``attack-aware``
    attack-aware pruning and fine-pruning: the defender holds triggered validation samples.
``clp``, ``anp``, ``fst``
    the field's repairs for networks with normalised channels: Lipschitz pruning, adversarial neuron pruning and
    feature-shift tuning, each alone and as a GoodNet (:mod:`~art_pruning_defense.benchmark.defences.repairs`).
``activation-clustering``, ``spectral-signatures``
    ART's ``ActivationDefence`` and ``SpectralSignatureDefense`` flag training samples; the flagged samples are
    removed and a fresh CNN is trained on the rest, with the same seed and epochs as B, as a user would.
``neural-cleanse``
    ART's Neural Cleanse, one row per mitigation ("filtering", "unlearning", "pruning").
``strip``
    ART's STRIP: ``mitigate`` on the defender's clean validation data, then ``predict``.

For a GoodNet row, clean accuracy counts the clean inputs sent to the "poisoned" class as errors and the attack
success rate is the share of triggered inputs still answered with the target. Defences that abstain (ART's
``AbstainPredictorMixin``: an all-zero score row) are scored the same way: an abstention is an error on clean
data, not a success of the attack, and counts as flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from art_pruning_defense.benchmark.config import BenchmarkConfig
    from art_pruning_defense.benchmark.defences.base import Run


@dataclass(frozen=True)
class Defence:
    """
    One entry of the registry: a defence, the rows it produces, and the function that measures them.

    ``run`` takes the benchmark's state and returns its rows; ``row_names`` gives the names of those rows for a
    configuration (used for the error rows when the defence fails as a whole).
    """

    name: str
    description: str
    run: Callable[["Run"], list[dict]]
    row_names: Callable[["BenchmarkConfig"], list[str]]


#: The defences, by name, in the order a full run measures them.
DEFENCES: dict[str, Defence] = {}


def register(
    name: str, description: str, row_names: Callable[["BenchmarkConfig"], list[str]]
) -> Callable[[Callable[["Run"], list[dict]]], Callable[["Run"], list[dict]]]:
    """
    Register the decorated function as the defence ``name``.

    :param name: The defence's name (as ``--defences`` takes it).
    :param description: One line, logged when the defence runs.
    :param row_names: The names of the rows the defence produces for a configuration.
    :return: The decorator (the function is returned unchanged).
    """

    def decorator(function: Callable[["Run"], list[dict]]) -> Callable[["Run"], list[dict]]:
        DEFENCES[name] = Defence(name, description, function, row_names)
        return function

    return decorator


def defence_names() -> tuple[str, ...]:
    """
    :return: The names of the registered defences, in the order a full run measures them.
    """
    return tuple(DEFENCES)


# Registered in this order (a full run's order; art_pruning_defense._defaults.DEFENCE_NAMES lists it without
# importing TensorFlow).
from art_pruning_defense.benchmark.defences import (  # noqa: E402, F401  (each module registers itself)
    none,
    pruning,
    fine_pruning,
    attack_aware,
    repairs,
    activation_clustering,
    spectral_signatures,
    neural_cleanse,
    strip,
)

__all__ = ["DEFENCES", "Defence", "defence_names", "register"]
