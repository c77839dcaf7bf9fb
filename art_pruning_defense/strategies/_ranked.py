"""
What the strategies that score every channel of every convolution share (:mod:`~art_pruning_defense.strategies.lipschitz`,
:mod:`~art_pruning_defense.strategies.adversarial`): the prune points (every Conv2D's block, inside residual branches
too), one global pruning order, a cut of the strategy's own (a prefix of that order, chosen by a threshold), and the
sweep to each accuracy budget X over that order.

The sweep runs the whole network per evaluated step, with the masks set in one copy of B
(:class:`~art_pruning_defense.keras.MaskedPredictor`); :func:`~art_pruning_defense._sweep.search_steps` chooses the
steps, a grid and a bisection per X, so that a network of a thousand channels is evaluated a few dozen times.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from art_pruning_defense import _sweep
from art_pruning_defense.keras import MaskedPredictor, PrunePoint, channel_layers
from art_pruning_defense.strategies.base import FinePruneCut, FitRun, Source, Strategy, StrategyFit, prefix_masks

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)


class RankedStrategy(Strategy):
    """
    Every conv channel scored, pruned in one global order; subclasses give the scores, the order and their own cut.
    """

    def prune_points(
        self, model: "keras.Model", user_model: "keras.Model", layer_name: str | None, layer_names: list[str] | None
    ) -> list[PrunePoint]:
        self.layers = channel_layers(model)
        return [layer.point for layer in self.layers]

    @abstractmethod
    def scores(self, run: FitRun, clean: Source | None) -> list[np.ndarray]:
        """
        :return: One score per channel, one array per prune point (in ``run.points``' order).
        """

    @abstractmethod
    def order(self, scores: list[np.ndarray]) -> list[tuple[int, int]]:
        """
        :return: ``(point index, channel)`` for every channel, in pruning order.
        """

    @abstractmethod
    def own_cut(self, scores: list[np.ndarray]) -> int:
        """
        :return: How many channels of the order the strategy's own threshold prunes.
        """

    def fit(
        self,
        run: FitRun,
        clean: Source | None,
        poisoned: Source | None,
        budgets: list[float],
        prune_until: float | None,
    ) -> StrategyFit:
        if clean is not None:
            check_ranked_data(self.name, clean.y, run.n_classes)
        self.layers = [layer for layer in channel_layers(run.model) if layer.point in set(run.points)]
        scores = self.scores(run, clean)
        order = self.order(scores)
        n_own = self.own_cut(scores)
        points = run.points
        own_masks = prefix_masks(points, order, n_own)
        logger.info(
            "%s: its own cut prunes %d of %d channels over %d layers.", self.name, n_own, len(order), len(points)
        )
        records: list[_sweep.SweepStep] = []
        steps: dict[float, int] = {}
        if clean is not None and budgets:
            records, at = _sweep_ranked(run, clean, poisoned, order, budgets)
            steps = {budget: at[budget] for budget in budgets}
        channels_at = {
            budget: _channels(points, order, records[index].channels_pruned) for budget, index in steps.items()
        }
        fine_prune = None
        if prune_until is not None:
            fine_prune = FinePruneCut(
                masks=own_masks,
                channels={layer: c.tolist() for layer, c in _channels(points, order, n_own).items()},
                clean_accuracy=None,
            )
        by_layer = {point.layer_name: score for point, score in zip(points, scores)}
        ranking = {
            point.layer_name: np.array([c for i, c in order if i == index], np.int64)
            for index, point in enumerate(points)
        }
        return StrategyFit(
            sweeps={budget: records for budget in steps},
            steps=steps,
            masks={
                budget: prefix_masks(points, order, records[index].channels_pruned) for budget, index in steps.items()
            },
            channels=channels_at,
            ranking=ranking,
            scores=by_layer,
            own_cut=own_masks,
            fine_prune=fine_prune,
        )


#: Fewest clean images the ranked strategies take: one batch of the adversarial strategy's mask optimisation.
MIN_IMAGES = 128


def check_ranked_data(strategy: str, labels: np.ndarray, n_classes: int) -> None:
    """
    :param strategy: The strategy's name (for the message).
    :param labels: The clean data's labels.
    :param n_classes: N.
    :raises ValueError: If there are fewer than :data:`MIN_IMAGES` images, or they hold one class only.
    """
    if len(labels) < MIN_IMAGES:
        raise ValueError(
            f"strategy={strategy!r} needs at least {MIN_IMAGES} clean images to measure accuracy on (and for one "
            f"batch of the adversarial strategy's mask optimisation), got {len(labels)}."
        )
    classes = np.unique(labels)
    if classes.size < 2:
        raise ValueError(
            f"strategy={strategy!r} needs clean images of several classes to measure accuracy on, got "
            f"{len(labels)} images of class {int(classes[0])} only."
        )


def _channels(points: list[PrunePoint], order: list[tuple[int, int]], k: int) -> dict[str, np.ndarray]:
    """
    :return: The first ``k`` channels of ``order``, by layer, in pruning order.
    """
    return {
        point.layer_name: np.array([c for i, c in order[:k] if i == index], np.int64)
        for index, point in enumerate(points)
    }


def _sweep_ranked(
    run: FitRun, clean: Source, poisoned: Source | None, order: list[tuple[int, int]], budgets: list[float]
) -> tuple[list[_sweep.SweepStep], dict[float, int]]:
    """
    :return: ``(records, steps)``: one record per evaluated step (the unpruned network first, in step order) and,
             per budget, the index of B'(X)'s record.
    """
    points = run.points
    predictor = MaskedPredictor(run.model, points)
    x = run.prepared(np.asarray(clean.x))
    px = None if poisoned is None else run.prepared(np.asarray(poisoned.x))
    base_clean = predictor(x, run.batch_size)
    base_poisoned = None if px is None else predictor(px, run.batch_size)
    measured: dict[int, _sweep.SweepStep] = {}
    progress = tqdm(desc=f"Sweeping {len(order)} channels ({len(points)} layers)", unit="step", disable=not run.verbose)

    def evaluate(k: int) -> float:
        predictor.set_masks(prefix_masks(points, order, k))
        labels = base_clean if k == 0 else predictor(x, run.batch_size)
        asr = poisoned_flagged = None
        if px is not None:
            poisoned_labels = base_poisoned if k == 0 else predictor(px, run.batch_size)
            asr = float(_sweep.percent(np.count_nonzero(poisoned_labels == poisoned.y), len(px)))
            poisoned_flagged = float(_sweep.percent(np.count_nonzero(poisoned_labels != base_poisoned), len(px)))
        measured[k] = _sweep.SweepStep(
            channels_pruned=k,
            fraction_pruned=k / len(order),
            channel=None if k == 0 else int(order[k - 1][1]),
            clean_accuracy=float(_sweep.percent(np.count_nonzero(labels == clean.y), len(x))),
            attack_success_rate=asr,
            clean_flagged=float(_sweep.percent(np.count_nonzero(labels != base_clean), len(x))),
            poisoned_flagged=poisoned_flagged,
            layer=None if k == 0 else points[order[k - 1][0]].layer_name,
        )
        progress.update()
        return measured[k].clean_accuracy

    with progress:
        at = _sweep.search_steps(evaluate, len(order), budgets)
    evaluated = sorted(measured)
    records = [measured[k] for k in evaluated]
    return records, {budget: evaluated.index(step) for budget, step in at.items()}
