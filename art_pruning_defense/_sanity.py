"""
Checks that say when a result means nothing: a model with non-finite weights (refused), and figures that are
computed correctly but say nothing (warned about with :class:`MeaninglessResultWarning`): a BadNet near chance, an
accuracy drop larger than what B has above chance, a sweep that prunes every channel, a detector that flags most of
the clean inputs. numpy only (a Keras model is read through ``layers`` and ``get_weights``).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: B's clean accuracy within this many percentage points of chance (100 / classes) is "near chance".
NEAR_CHANCE_POINTS = 10.0
#: A detector that flags more than this share (percent) of inputs known to be clean flags "most" of them.
MOST_FLAGGED_PERCENT = 50.0


class MeaninglessResultWarning(UserWarning):
    """
    A figure was computed correctly but means nothing (see :mod:`art_pruning_defense._sanity`).
    """


def _warn(message: str) -> str:
    warnings.warn(message, MeaninglessResultWarning, stacklevel=3)
    logger.debug("%s", message)
    return message


def first_non_finite_layer(model: Any) -> str | None:
    """
    :param model: A Keras model (anything with ``layers``, each with ``name`` and ``get_weights()``).
    :return: The name of the first layer holding a NaN or an infinite weight (``outer/inner`` inside a nested
             model), or ``None``.
    """
    pending: list[tuple[str, Any]] = [("", model)]
    while pending:
        prefix, current = pending.pop(0)
        for layer in getattr(current, "layers", ()):
            name = f"{prefix}{layer.name}"
            if getattr(layer, "layers", None):
                pending.insert(0, (name + "/", layer))
                continue
            for weight in layer.get_weights():
                array = np.asarray(weight)
                if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
                    return name
    return None


def check_finite_weights(model: Any, what: str = "The model") -> None:
    """
    :param model: A Keras model.
    :param what: What it is, starting the message (e.g. ``"--model b.keras"``).
    :raises ValueError: If a weight is NaN or infinite, in one line naming the first such layer.
    """
    layer = first_non_finite_layer(model)
    if layer is not None:
        raise ValueError(
            f"{what} has non-finite weights (NaN or infinity), first in layer {layer!r}; its outputs mean nothing, "
            "so it is refused (was its training diverging?)."
        )


def chance_percent(n_classes: int) -> float:
    """
    :return: The accuracy of a constant guess among ``n_classes`` balanced classes, percent.
    """
    return 100.0 / max(int(n_classes), 1)


def warn_if_near_chance(accuracy: float | None, n_classes: int, what: str = "B's clean accuracy") -> str | None:
    """
    :param accuracy: A clean accuracy, percent.
    :param n_classes: The number of classes.
    :param what: The figure, for the message.
    :return: The warning's message, or ``None`` where there was nothing to say.
    """
    if accuracy is None or n_classes < 2:
        return None
    chance = chance_percent(n_classes)
    if accuracy < chance + NEAR_CHANCE_POINTS:
        return _warn(
            f"{what} is {accuracy:.2f} %, near chance ({chance:.2f} % for {n_classes} classes): B has not learned "
            "the task on this data, and the pruning figures mean nothing."
        )
    return None


def warn_if_drop_exceeds_margin(
    drops: Iterable[float], accuracy: float | None, n_classes: int, what: str = "accuracy drop X"
) -> str | None:
    """
    :param drops: Accuracy drops (percentage points): the X of a sweep, or ``prune_until``.
    :param accuracy: B's clean accuracy, percent.
    :param n_classes: The number of classes.
    :param what: The figure, for the message.
    :return: The warning's message, or ``None``.
    """
    if accuracy is None or n_classes < 2:
        return None
    margin = accuracy - chance_percent(n_classes)
    large = sorted(float(d) for d in drops if float(d) > margin)
    if large:
        shown = ", ".join(f"{d:g}" for d in large)
        return _warn(
            f"{what} {shown} exceeds B's accuracy above chance ({accuracy:.2f} % − {chance_percent(n_classes):.2f} % "
            f"= {margin:.2f} points): at that X the pruned network may be no better than a guess."
        )
    return None


def warn_if_everything_pruned(summary: Sequence[Mapping[str, Any]], what: str = "The sweep") -> str | None:
    """
    :param summary: One row per X with ``accuracy_drop`` and ``fraction_pruned`` (FinePruning's ``summary()``).
    :param what: The figure, for the message.
    :return: The warning's message, or ``None``.
    """
    every = [row["accuracy_drop"] for row in summary if row.get("fraction_pruned") is not None
             and float(row["fraction_pruned"]) >= 1.0]
    if every:
        shown = ", ".join(f"{float(d):g}" for d in every)
        return _warn(
            f"{what} prunes every channel at X = {shown}: B' there answers from the biases alone, and its figures "
            "say nothing about the backdoor."
        )
    return None


def warn_if_flags_most(flagged: float | None, what: str) -> str | None:
    """
    :param flagged: Percent of inputs known to be clean that a detector flags.
    :param what: The detector and the inputs (e.g. ``"GoodNet X=10 flags the clean validation inputs"``).
    :return: The warning's message, or ``None``.
    """
    if flagged is not None and float(flagged) > MOST_FLAGGED_PERCENT:
        return _warn(
            f"{what}: {float(flagged):.2f} % of them, more than {MOST_FLAGGED_PERCENT:g} %; a detector that flags "
            "most clean inputs tells nothing apart."
        )
    return None


def check_repair(
    summary: Sequence[Mapping[str, Any]],
    b_accuracy: float | None,
    n_classes: int,
    prune_until: float | None = None,
) -> list[str]:
    """
    Every check of a fitted sweep (``FinePruning.summary()``), each warning issued.

    :param summary: One row per X (``accuracy_drop``, ``fraction_pruned``, ``clean_flagged``).
    :param b_accuracy: B's clean accuracy on the validation data (the sweep's first step), percent.
    :param n_classes: The number of classes of B.
    :param prune_until: Fine-pruning's ``prune_until`` (an accuracy drop), if fine-tuning ran.
    :return: The messages of the warnings issued.
    """
    messages = [
        warn_if_near_chance(b_accuracy, n_classes, "B's clean accuracy on the validation data"),
        warn_if_drop_exceeds_margin([row["accuracy_drop"] for row in summary], b_accuracy, n_classes),
        None if prune_until is None else warn_if_drop_exceeds_margin([prune_until], b_accuracy, n_classes, "prune_until"),
        warn_if_everything_pruned(summary),
    ]
    for row in summary:
        messages.append(
            warn_if_flags_most(
                row.get("clean_flagged"), f"GoodNet X={float(row['accuracy_drop']):g} flags clean validation inputs"
            )
        )
    return [message for message in messages if message]
