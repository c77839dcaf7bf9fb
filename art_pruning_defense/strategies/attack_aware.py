"""
The attack-aware strategy, for a defender who holds triggered validation samples: over several layers, deepest
first, least active channel first, a channel stays pruned if that lowers the attack success rate on the poisoned
validation data while clean accuracy stays within X points of B's, or if it changes neither.

1. For each layer (the last three blocks that every path to the output passes through, by default), the channels'
   mean clean activations and which channels are active on which clean and poisoned sample.
2. For each budget X, a greedy pass: a channel is tried pruned; only the samples on which it is active are evaluated
   again; the channel is kept pruned under the rule above.
3. B'(X) is the network at the end of the pass with budget X; fine-pruning fine-tunes the one with budget
   ``prune_until``.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from art_pruning_defense import _sweep
from art_pruning_defense.strategies.activation import TAIL_BATCH_FACTOR
from art_pruning_defense.strategies.base import FinePruneCut, FitRun, Source, Strategy, StrategyFit

from art_pruning_defense.keras import (
    BatchPredictor,
    CachedTail,
    CompiledHead,
    CompiledTail,
    PrunePoint,
    RecomputedTail,
    find_prune_point,
    last_prunable_layers,
    multi_masked_copy,
    resolve_layer_name,
    shared_tensor,
    split,
)

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

#: How many blocks the strategy prunes by default.
DEFAULT_N_LAYERS = 3


class _CutView(NamedTuple):
    """
    What the attack-aware pass needs of one cut: the channel means on the clean data, the ranking, which channels
    are active on which clean and poisoned sample, and ``rows(tail)``: a budget's tail (a :class:`CompiledTail`) as
    the rows functions on the clean and the poisoned data.
    """

    means: np.ndarray
    order: np.ndarray
    clean_active: np.ndarray
    poisoned_active: np.ndarray
    rows: Callable[[CompiledTail], tuple[CachedTail, CachedTail]]


class AttackAwareStrategy(Strategy):
    """
    Greedy pruning over several layers that keeps a channel pruned only where that lowers the attack success rate
    on triggered validation data within the accuracy budget (needs ``poisoned_x`` and ``poisoned_target``).
    """

    name = "attack_aware"
    needs_poisoned = True
    takes_layer_names = True

    def prune_points(
        self, model: "keras.Model", user_model: "keras.Model", layer_name: str | None, layer_names: list[str] | None
    ) -> list[PrunePoint]:
        names = (
            [resolve_layer_name(user_model, name) for name in layer_names]
            if layer_names is not None
            else last_prunable_layers(model, DEFAULT_N_LAYERS)
        )
        order = {layer.name: index for index, layer in enumerate(model.layers)}
        return sorted((find_prune_point(model, name) for name in names), key=lambda p: order[p.layer_name])

    def fit(
        self,
        run: FitRun,
        clean: Source | None,
        poisoned: Source | None,
        budgets: list[float],
        prune_until: float | None,
    ) -> StrategyFit:
        """
        One attack-aware pass per budget X, layer by layer, deepest first.
        """
        x, labels, poisoned_x, targets = clean.x, clean.y, poisoned.x, poisoned.y
        drops = list(budgets)
        budgets = sorted(set(drops) | ({prune_until} if prune_until is not None else set()))
        predict = BatchPredictor(run.model, labels_only=True)
        clean_unpruned = predict(run.prepared(x), run.batch_size)
        poisoned_unpruned = predict(run.prepared(poisoned_x), run.batch_size)
        base_hits = int(np.count_nonzero(clean_unpruned == labels))
        states = {b: _sweep.GreedyState.start(clean_unpruned, labels, poisoned_unpruned, targets) for b in budgets}
        masks = {b: {p: np.ones(p.n_channels, dtype=np.float32) for p in run.points} for b in budgets}
        means_by_layer, ranking = {}, {}
        progress = tqdm(
            total=run.n_prunable * len(budgets), desc="Attack-aware pruning", unit="channel", disable=not run.verbose
        )
        with progress:
            for point in reversed(run.points):
                head = split(run.model, point.cut_name)[0]
                head_predict = BatchPredictor(head)
                cut_bytes = 4 * (len(x) + len(poisoned_x)) * math.prod(int(d) for d in head.outputs[0].shape[1:])
                if cut_bytes <= run.max_cache_bytes:
                    view = self._cached_cut(run, head_predict, x, poisoned_x)
                else:
                    view = self._recomputed_cut(run, head_predict, x, poisoned_x, point.cut_name, cut_bytes)
                means_by_layer[point.layer_name] = view.means
                ranking[point.layer_name] = view.order
                for budget in budgets:
                    tail = CompiledTail(split(multi_masked_copy(run.model, masks[budget]), point.cut_name)[1])
                    min_hits = math.ceil(base_hits - budget * len(x) / 100.0 - 1e-9)
                    masks[budget][point] = _sweep.attack_aware_pass(
                        states[budget],
                        point.layer_name,
                        view.clean_active,
                        view.poisoned_active,
                        view.order,
                        *view.rows(tail),
                        min_hits,
                        on_candidate=progress.update,
                    )
                del view
        sweeps = {}
        for budget in budgets:
            state = states[budget]
            sweeps[budget] = _sweep.build_records(
                np.array([c for _, c in state.accepted], dtype=np.int64),
                run.n_prunable,
                state.clean,
                state.poisoned,
                layers=[layer for layer, _ in state.accepted],
            )
        channels = {
            budget: {
                p.layer_name: np.array([r.channel for r in sweeps[budget][1:] if r.layer == p.layer_name], np.int64)
                for p in run.points
            }
            for budget in budgets
        }
        fine_prune = None
        if prune_until is not None:
            fine_prune = FinePruneCut(
                masks=masks[prune_until],
                channels={layer: c.tolist() for layer, c in channels[prune_until].items()},
                clean_accuracy=sweeps[prune_until][-1].clean_accuracy,
            )
        return StrategyFit(
            sweeps={drop: sweeps[drop] for drop in drops},
            steps={drop: len(sweeps[drop]) - 1 for drop in drops},
            masks={drop: masks[drop] for drop in drops},
            channels={drop: channels[drop] for drop in drops},
            ranking=ranking,
            scores=means_by_layer,
            fine_prune=fine_prune,
        )

    def _cached_cut(self, run: FitRun, head_predict: BatchPredictor, x: np.ndarray, poisoned_x: np.ndarray) -> _CutView:
        """
        :return: The attack-aware pass's view of one cut, from the activations of all of ``x`` and ``poisoned_x``
                 held in memory (one TensorFlow copy of each, shared by the budgets' tails).
        """
        tail_batch = TAIL_BATCH_FACTOR * run.batch_size
        clean_cache = run.activation_cache(head_predict, x, "x")
        means = _sweep.ChannelMeans()
        means.update(clean_cache)
        order = _sweep.rank_channels(means.mean)
        clean_active = _sweep.active_channels(clean_cache)
        # Aligned caches, so TensorFlow shares them (one copy of each, not a numpy and a TensorFlow one).
        clean_cache = shared_tensor(clean_cache)
        poisoned_cache = run.activation_cache(head_predict, poisoned_x, "poisoned_x")
        poisoned_active = _sweep.active_channels(poisoned_cache)
        poisoned_cache = shared_tensor(poisoned_cache)
        return _CutView(
            means.mean,
            order,
            clean_active,
            poisoned_active,
            lambda tail: (CachedTail(tail, clean_cache, tail_batch), CachedTail(tail, poisoned_cache, tail_batch)),
        )

    def _recomputed_cut(
        self,
        run: FitRun,
        head_predict: BatchPredictor,
        x: np.ndarray,
        poisoned_x: np.ndarray,
        cut_name: str,
        cut_bytes: int,
    ) -> _CutView:
        """
        As :meth:`_cached_cut` where the cut's activations would exceed ``max_cache_bytes``: the means and the active
        channels are reduced batch by batch, and the preprocessed inputs are kept instead of the activations, the
        head run again on the rows of each evaluation (:class:`RecomputedTail`).

        :param cut_name: Name of the cut (for the messages).
        :param cut_bytes: Size of the activations at the cut on ``x`` and ``poisoned_x`` (for the messages).
        :raises ValueError: If the preprocessed inputs do not fit in ``max_cache_bytes`` either.
        """
        head = head_predict.model
        input_bytes = 4 * (len(x) + len(poisoned_x)) * math.prod(int(d) for d in head.inputs[0].shape[1:])
        if input_bytes > run.max_cache_bytes:
            raise ValueError(
                f"strategy='attack_aware' keeps either the activations at {cut_name} "
                f"({cut_bytes / 2**20:.0f} MiB) or the inputs ({input_bytes / 2**20:.0f} MiB) of x and poisoned_x in "
                f"memory; both exceed max_cache_bytes={run.max_cache_bytes / 2**20:.0f} MiB. Raise max_cache_bytes "
                "or use fewer validation samples."
            )
        means = _sweep.ChannelMeans()
        clean_active = []
        for activations in run.activations(head_predict, x, name="x"):
            means.update(activations)
            clean_active.append(_sweep.active_channels(activations))
        poisoned_active = [
            _sweep.active_channels(a) for a in run.activations(head_predict, poisoned_x, name="poisoned_x")
        ]
        # RecomputedTail takes fewer rows per call where the head's activations of a call would be too wide.
        tail_batch = TAIL_BATCH_FACTOR * run.batch_size
        compiled_head = CompiledHead(head)
        clean_inputs = np.asarray(run.prepared(np.asarray(x)), dtype=np.float32)
        poisoned_inputs = np.asarray(run.prepared(np.asarray(poisoned_x)), dtype=np.float32)
        logger.info(
            "Attack-aware pass at %s: its activations (%.0f MiB) exceed max_cache_bytes; keeping the inputs "
            "(%.0f MiB) and recomputing the head per evaluation.",
            cut_name,
            cut_bytes / 2**20,
            input_bytes / 2**20,
        )
        return _CutView(
            means.mean,
            _sweep.rank_channels(means.mean),
            np.concatenate(clean_active),
            np.concatenate(poisoned_active),
            lambda tail: (
                RecomputedTail(compiled_head, tail, clean_inputs, tail_batch),
                RecomputedTail(compiled_head, tail, poisoned_inputs, tail_batch),
            ),
        )
