"""
The seeds' strategy: rank one layer's channels by their mean activation on clean data and prune them one at a time,
least active first (Liu, Dolan-Gavitt and Garg, 2018).

| Paper link: https://arxiv.org/abs/1805.12185

1. One pass over the clean data: each channel's mean activation at the end of the layer's block (after its
   normalisation, non-linearity and pooling), keeping the activations while they fit in ``max_cache_bytes``.
2. The sweep: channels pruned in that order, the clean accuracy (and the attack success rate, with poisoned data)
   recorded after each step; only the part of the network after the layer runs at each step, on cached activations.
3. B'(X) is the first step whose clean accuracy is at least X points below B's; fine-pruning prunes to
   ``prune_until`` (at least one channel kept).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from art_pruning_defense import _sweep
from art_pruning_defense._aligned import aligned_empty
from art_pruning_defense._stream import regroup
from art_pruning_defense.strategies.base import FinePruneCut, FitRun, Source, Strategy, StrategyFit

from art_pruning_defense.keras import CachedTail, PrunePoint, find_prune_point, resolve_layer_name, shared_tensor

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

#: The tail of the network is evaluated in batches this many times larger than ``batch_size`` (fewer rows where a
#: call's widest tensor would exceed the adapter's ``CALL_BYTES``).
TAIL_BATCH_FACTOR = 8


class ActivationStrategy(Strategy):
    """
    Mean clean activation at one layer, least active pruned first (the lab's sweep).
    """

    name = "activation"
    streams = True
    single_layer = True

    def prune_points(
        self, model: "keras.Model", user_model: "keras.Model", layer_name: str | None, layer_names: list[str] | None
    ) -> list[PrunePoint]:
        name = None if layer_name is None else resolve_layer_name(user_model, layer_name)
        return [find_prune_point(model, name)]

    def fit(
        self,
        run: FitRun,
        clean: Source | None,
        poisoned: Source | None,
        budgets: list[float],
        prune_until: float | None,
    ) -> StrategyFit:
        point = run.points[-1]
        head, head_predict, compiled_tail = run.compiled_split(point.cut_name)
        chunk = run.chunk_size(head)
        # The tail needs far less memory per sample than the whole network: fewer, larger calls cost less.
        tail_batch = TAIL_BATCH_FACTOR * run.batch_size

        # Pass 1: channel means on the clean data, keeping the activations while they fit in the cache.
        means = _sweep.ChannelMeans()
        cache: list[tuple[np.ndarray, np.ndarray]] | None = (
            [] if clean.n_samples is None or clean.n_samples <= chunk else None
        )
        cached = 0
        for batch in clean.batches():
            activations = head_predict(run.prepared(batch.x), run.batch_size)
            means.update(activations)
            if cache is not None:
                cached += len(activations)
                if cached <= chunk:
                    cache.append((activations, batch.y))
                else:
                    cache = None
                    if clean.one_shot:
                        raise ValueError(
                            f"The activations of x outgrow max_cache_bytes={run.max_cache_bytes} (from batch "
                            f"{batch.index} on), so the sweep must read x a second time, but x is a one-shot "
                            "iterator (a generator): pass a re-iterable instead (a tf.data.Dataset, a list of "
                            "batches, or an object whose __iter__ returns a fresh iterator), or raise "
                            "max_cache_bytes."
                        )
        order = _sweep.rank_channels(means.mean)

        # Pass 2: the sweep, chunk by chunk; only the tail of the network runs at each step.
        n_chunks = math.ceil(clean.n_samples / chunk)
        if poisoned is not None:
            n_chunks = None if poisoned.n_samples is None else n_chunks + math.ceil(poisoned.n_samples / chunk)
        progress = tqdm(
            total=None if n_chunks is None else n_chunks * len(order),
            desc=f"Pruning {point.layer_name}",
            unit="step",
            disable=not run.verbose,
        )

        def sweep(activations: list[np.ndarray], references: list[np.ndarray]) -> _sweep.SweepCounts:
            """
            :param activations: A chunk's activations, batch by batch: the list is emptied as they are copied (held
                   by nothing else, each batch goes then), so that one copy of a chunk and one batch are held.
            """
            # Cached with the channels in pruning order, step k keeps the last channels: a slice, not a gather. The
            # cache is filled batch by batch, each batch dropped once copied, and is aligned so that TensorFlow
            # shares it rather than copying it: one copy of the chunk in all.
            in_order = aligned_empty((sum(len(a) for a in activations), *activations[0].shape[1:]), np.float32)
            start = 0
            for i, part in enumerate(activations):
                # (mode="clip": the order is a permutation, so no index is clipped, and numpy writes out directly.)
                np.take(
                    np.asarray(part, np.float32), order, axis=-1, out=in_order[start : start + len(part)], mode="clip"
                )
                start += len(part)
                activations[i] = part = None
            activations.clear()
            active = _sweep.active_channels(in_order)[:, np.argsort(order)]
            tail = CachedTail(compiled_tail, shared_tensor(in_order), tail_batch, channel_order=order)
            # The sweep keeps the fronts' sums per sample where they pay and fit beside the cache.
            stepper = tail.stepper(order, active, spare_bytes=run.max_cache_bytes - in_order.nbytes)
            del in_order
            return _sweep.sweep_chunk(
                active, np.concatenate(references), order, tail, on_step=progress.update, stepper=stepper
            )

        def run_source(source: Source) -> _sweep.SweepCounts:
            counts = _sweep.SweepCounts.zeros(len(order) + 1)
            activations = ((head_predict(run.prepared(b.x), run.batch_size), b.y) for b in source.batches())
            for parts, references in regroup(activations, chunk):  # chunks of max_cache_bytes, whatever the batches
                counts += sweep(parts, references)
            return counts

        with progress:
            if cache is not None:
                parts, references = [a for a, _ in cache], [r for _, r in cache]
                cache = None
                clean_counts = sweep(parts, references)
            else:
                clean_counts = run_source(clean)
            cache = None
            poisoned_counts = None if poisoned is None else run_source(poisoned)

        records = _sweep.build_records(
            order, point.n_channels, clean_counts, poisoned_counts, layers=[point.layer_name] * len(order)
        )
        accuracies = [r.clean_accuracy for r in records]
        steps = _sweep.select_steps(accuracies, budgets)
        fine_prune = None
        if prune_until is not None:
            # With every channel gone the output no longer depends on the input: nothing left to fine-tune.
            step = min(_sweep.select_steps(accuracies, [prune_until])[prune_until], point.n_channels - 1)
            fine_prune = FinePruneCut(
                masks=_masks(point, order, step),
                channels={point.layer_name: order[:step].tolist()},
                clean_accuracy=records[step].clean_accuracy,
            )
        return StrategyFit(
            sweeps={budget: records for budget in budgets},
            steps=steps,
            masks={budget: _masks(point, order, step) for budget, step in steps.items()},
            channels={budget: {point.layer_name: order[:step].copy()} for budget, step in steps.items()},
            ranking=order,
            scores=means.mean,
            fine_prune=fine_prune,
        )


def _masks(point: PrunePoint, order: np.ndarray, step: int) -> dict[PrunePoint, np.ndarray]:
    """
    :return: The mask of ``point`` with the first ``step`` channels of ``order`` pruned.
    """
    mask = np.ones(point.n_channels, dtype=np.float32)
    mask[order[:step]] = 0.0
    return {point: mask}
