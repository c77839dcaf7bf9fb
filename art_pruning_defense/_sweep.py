"""
Framework-free core of the pruning defence: channel ranking, the bookkeeping of the pruning sweep, the stopping
rule per accuracy drop X, and the metrics. Only numpy is used here; the network is reached through a callable that
maps (masked) activations of the pruned layer to predicted labels.

The network is reached through a callable that evaluates the part after the pruned layer on cached activations
(``RowsFunction``). The sweep is evaluated incrementally. Pruning channel ``c`` changes the network's input to the
tail only for the samples whose activation map of ``c`` is not identically zero, so at each step only those samples
are re-evaluated and every other sample keeps its previous prediction. This is exact: a sample whose channel ``c``
is all zeros feeds the same bits to the tail before and after the step. Likewise, every sample whose active
channels are all pruned feeds the tail all zeros, so those samples share one label, evaluated once.

Because the sweep visits the steps in order and re-evaluates every sample that a step changes, an evaluator may also
carry state from one step to the next (a :class:`Stepper`): where that pays, the Keras adapter keeps, per sample, the
sums of the layers that read the pruned layer and subtracts the pruned channel's share at each step, so that a step's
cost does not grow with the number of channels still kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import math
from typing import Callable, Iterable, Optional, Protocol, Sequence

import numpy as np

#: ``predict_rows(rows, mask)``: the labels of the given samples (``None``: all of them) when the cached activations
#: at the pruned layer are multiplied by ``mask`` (one value per channel, 1 keep, 0 pruned). With an all-zero mask
#: the labels are those of an all-zero input to the tail.
RowsFunction = Callable[[Optional[np.ndarray], np.ndarray], np.ndarray]


class Stepper(Protocol):
    """
    An evaluator that follows one sweep step by step (see :func:`sweep_chunk`): :meth:`begin` once, then
    :meth:`prune` once per step that re-evaluates samples, in the sweep's order (a step that changes no sample's
    input is skipped). It may carry per-sample state from call to call on that promise; labels must be those of
    the masked network whatever it keeps.
    """

    def begin(self) -> np.ndarray:
        """
        :return: The label of every sample, nothing pruned.
        """

    def prune(self, rows: np.ndarray, channel: int, mask: np.ndarray) -> np.ndarray:
        """
        :param rows: Every sample on which ``channel`` is active, but those left with no active channel.
        :param channel: The channel this step prunes.
        :param mask: The mask after this step (1 keep, 0 pruned; ``channel`` and every channel pruned before it at 0);
               the sweep's own array, which later steps change: copy it to keep it.
        :return: The labels of ``rows`` after this step.
        """


@dataclass(frozen=True)
class SweepStep:
    """
    One record of the pruning sweep: the network after ``channels_pruned`` channels have been pruned.

    Percentages are in [0, 100]. ``attack_success_rate`` and ``poisoned_flagged`` are ``None`` when no poisoned
    data was given. ``channel`` (of ``layer``) is the channel pruned at this step, ``None`` for the unpruned network.
    """

    channels_pruned: int
    fraction_pruned: float
    channel: int | None
    clean_accuracy: float
    attack_success_rate: float | None
    clean_flagged: float
    poisoned_flagged: float | None
    layer: str | None = None

    def as_dict(self) -> dict:
        """
        :return: The record as a plain dictionary.
        """
        return asdict(self)


@dataclass
class SweepCounts:
    """
    Running counts over a sweep of ``n_steps`` steps (step 0 is the unpruned network).

    ``hits[k]`` counts the samples whose label after step ``k`` equals the reference label (the true label for
    clean data, the attack target for poisoned data); ``changed[k]`` counts the samples whose label after step ``k``
    differs from the unpruned network's label (the inputs a GoodNet would flag).
    """

    hits: np.ndarray
    changed: np.ndarray
    n_samples: int = 0

    @classmethod
    def zeros(cls, n_steps: int) -> "SweepCounts":
        """
        :param n_steps: Number of steps, the unpruned network included.
        :return: Empty counts.
        """
        return cls(np.zeros(n_steps, dtype=np.int64), np.zeros(n_steps, dtype=np.int64), 0)

    def __iadd__(self, other: "SweepCounts") -> "SweepCounts":
        self.hits += other.hits
        self.changed += other.changed
        self.n_samples += other.n_samples
        return self

    def hit_rate(self) -> np.ndarray:
        """
        :return: Percent of samples on the reference label, per step.
        """
        return percent(self.hits, self.n_samples)

    def change_rate(self) -> np.ndarray:
        """
        :return: Percent of samples whose label differs from the unpruned network's, per step.
        """
        return percent(self.changed, self.n_samples)


def percent(count: np.ndarray | int, total: int) -> np.ndarray:
    """
    :param count: Count(s) of samples.
    :param total: Number of samples (> 0).
    :return: ``100 * count / total``.
    """
    return 100.0 * np.asarray(count, dtype=np.float64) / float(total)


def rank_channels(mean_activation: np.ndarray) -> np.ndarray:
    """
    Order channels for pruning: ascending mean activation, ties broken by channel index.

    :param mean_activation: Mean activation per channel, shape ``(n_channels,)``.
    :return: Channel indices, least active first.
    """
    mean_activation = np.asarray(mean_activation)
    if mean_activation.ndim != 1:
        raise ValueError(f"Expected one mean activation per channel (1-D), got shape {mean_activation.shape}.")
    return np.argsort(mean_activation, kind="stable")


class ChannelMeans:
    """
    Streaming mean of each channel's activation over samples and spatial positions (channels last).
    """

    def __init__(self) -> None:
        self._sum: np.ndarray | None = None
        self._count = 0

    def update(self, activations: np.ndarray) -> None:
        """
        :param activations: A batch of activations, shape ``(batch, ..., n_channels)``.
        """
        flat = activations.reshape(-1, activations.shape[-1])
        batch_sum = flat.sum(axis=0, dtype=np.float64)
        self._sum = batch_sum if self._sum is None else self._sum + batch_sum
        self._count += flat.shape[0]

    @property
    def mean(self) -> np.ndarray:
        """
        :return: Mean activation per channel.
        """
        if self._sum is None:
            raise ValueError("No activations were seen.")
        return self._sum / self._count


#: Activations compared with zero at a time by :func:`active_channels` (the comparison's boolean copy is a quarter
#: of their float32 size: a whole activation cache at once would add that much to the cache itself).
ACTIVE_CHUNK_VALUES = 16 * 2**20


def active_channels(activations: np.ndarray) -> np.ndarray:
    """
    :param activations: Activations, shape ``(n, ..., n_channels)``.
    :return: Boolean array ``(n, n_channels)``: whether the sample's map of that channel has any non-zero value
             (found a few samples at a time, :data:`ACTIVE_CHUNK_VALUES` values each).
    """
    n, n_channels = activations.shape[0], activations.shape[-1]
    maps = activations.reshape(n, -1, n_channels)
    active = np.empty((n, n_channels), dtype=bool)
    step = max(1, ACTIVE_CHUNK_VALUES // max(1, maps.shape[1] * n_channels))
    for start in range(0, n, step):
        np.any(maps[start : start + step] != 0, axis=1, out=active[start : start + step])
    return active


def sweep_chunk(
    active: np.ndarray,
    references: np.ndarray,
    order: np.ndarray,
    predict_rows: RowsFunction,
    on_step: Callable[[], None] | None = None,
    stepper: Stepper | None = None,
) -> SweepCounts:
    """
    Run the whole pruning sweep on one chunk of cached activations.

    Step ``k`` prunes the channels ``order[:k]``; step 0 is the unpruned network.

    :param active: ``(n, n_channels)``: whether each sample's map of each channel has a non-zero value
           (:func:`active_channels`).
    :param references: Reference label per sample: true label (clean data) or attack target (poisoned data).
    :param order: Channels in pruning order; its length sets the number of steps.
    :param predict_rows: Evaluates the network after the pruned layer on cached activations (see ``RowsFunction``).
    :param on_step: Called after each pruning step (progress reporting).
    :param stepper: Evaluates the unpruned network and each step instead of ``predict_rows`` (which still gives
           the label of an all-zero input); default: ``predict_rows`` with each step's mask.
    :return: Counts for steps ``0 .. len(order)``.
    """
    counts = SweepCounts.zeros(len(order) + 1)
    counts.n_samples = active.shape[0]
    if counts.n_samples == 0:
        return counts
    mask = np.ones(active.shape[1], dtype=np.float32)
    unpruned = np.asarray(predict_rows(None, mask) if stepper is None else stepper.begin())
    labels = unpruned.copy()
    counts.hits[0] = np.count_nonzero(labels == references)
    # Active channels not yet pruned, per sample: a sample left with none feeds all zeros to the tail, like every
    # other such sample, so all of them share one label, computed once.
    remaining = np.count_nonzero(active, axis=1)
    blank_label = None
    for step, channel in enumerate(order, start=1):
        mask[channel] = 0
        rows = np.flatnonzero(active[:, channel])
        if rows.size:
            remaining[rows] -= 1
            emptied = remaining[rows] == 0
            if emptied.any():
                if blank_label is None:
                    blank_label = np.asarray(predict_rows(rows[emptied][:1], np.zeros_like(mask)))[0]
                labels[rows[emptied]] = blank_label
                rows = rows[~emptied]
        if rows.size:
            labels[rows] = predict_rows(rows, mask) if stepper is None else stepper.prune(rows, int(channel), mask)
        counts.hits[step] = np.count_nonzero(labels == references)
        counts.changed[step] = np.count_nonzero(labels != unpruned)
        if on_step is not None:
            on_step()
    return counts


def build_records(
    order: np.ndarray,
    n_channels: int,
    clean: SweepCounts,
    poisoned: SweepCounts | None,
    layers: Sequence[str | None] | None = None,
) -> list[SweepStep]:
    """
    :param order: Channels in pruning order.
    :param n_channels: Number of channels that can be pruned (the fraction's denominator).
    :param clean: Counts on the clean data (hits are correct labels).
    :param poisoned: Counts on the poisoned data (hits are attack targets), or ``None``.
    :param layers: The layer of each channel in ``order`` (default: no layer named).
    :return: One record per step, the unpruned network first.
    """
    accuracy, clean_flagged = clean.hit_rate(), clean.change_rate()
    if poisoned is not None:
        asr, poisoned_flagged = poisoned.hit_rate(), poisoned.change_rate()
    records = []
    for step in range(len(order) + 1):
        records.append(
            SweepStep(
                channels_pruned=step,
                fraction_pruned=step / n_channels,
                channel=None if step == 0 else int(order[step - 1]),
                clean_accuracy=float(accuracy[step]),
                attack_success_rate=None if poisoned is None else float(asr[step]),
                clean_flagged=float(clean_flagged[step]),
                poisoned_flagged=None if poisoned is None else float(poisoned_flagged[step]),
                layer=None if step == 0 or layers is None else layers[step - 1],
            )
        )
    return records


@dataclass
class GreedyState:
    """
    The state of an attack-aware pass: current labels of every clean and poisoned sample, the unpruned network's
    labels (to count what a GoodNet would flag), and the counts after each accepted step.
    """

    clean_labels: np.ndarray
    clean_references: np.ndarray
    clean_unpruned: np.ndarray
    poisoned_labels: np.ndarray
    poisoned_references: np.ndarray
    poisoned_unpruned: np.ndarray
    accepted: list[tuple[str, int]]
    clean: SweepCounts
    poisoned: SweepCounts

    @classmethod
    def start(
        cls,
        clean_labels: np.ndarray,
        clean_references: np.ndarray,
        poisoned_labels: np.ndarray,
        poisoned_references: np.ndarray,
    ) -> "GreedyState":
        """
        :param clean_labels: The unpruned network's labels on the clean data.
        :param clean_references: True labels.
        :param poisoned_labels: The unpruned network's labels on the poisoned data.
        :param poisoned_references: Attack targets.
        :return: The state before any pruning (one step recorded).
        """
        clean = SweepCounts(
            np.array([np.count_nonzero(clean_labels == clean_references)]), np.zeros(1, np.int64), len(clean_labels)
        )
        poisoned = SweepCounts(
            np.array([np.count_nonzero(poisoned_labels == poisoned_references)]),
            np.zeros(1, np.int64),
            len(poisoned_labels),
        )
        return cls(
            clean_labels.copy(),
            clean_references,
            clean_labels.copy(),
            poisoned_labels.copy(),
            poisoned_references,
            poisoned_labels.copy(),
            [],
            clean,
            poisoned,
        )


def _trial(
    predict_rows: RowsFunction,
    rows: np.ndarray,
    mask: np.ndarray,
    references: np.ndarray,
    labels: np.ndarray,
    hits: int,
) -> tuple[np.ndarray | None, int]:
    """
    :return: The new labels of ``rows`` under ``mask`` (``None`` where no row changes) and the new number of hits.
    """
    if not rows.size:
        return None, hits
    new = predict_rows(rows, mask)
    wanted = references[rows]
    return new, hits + int(np.count_nonzero(new == wanted) - np.count_nonzero(labels[rows] == wanted))


def attack_aware_pass(
    state: GreedyState,
    layer: str,
    clean_active: np.ndarray,
    poisoned_active: np.ndarray,
    candidates: np.ndarray,
    clean_rows: RowsFunction,
    poisoned_rows: RowsFunction,
    min_clean_hits: int,
    on_candidate: Callable[[], None] | None = None,
) -> np.ndarray:
    """
    Attack-aware pruning of one layer: try the candidate channels in order, and keep a channel pruned if that
    lowers the number of poisoned samples classified as the target while at least ``min_clean_hits`` clean samples
    stay correct, or if it is harmless: the attack's count is unchanged and no clean sample is lost. (Pruning only
    on a strict decrease stalls where the backdoor is spread over several channels, none of which matters alone;
    pruning the harmless ones first lets the later ones show.) Each candidate is judged from the cached
    activations, re-evaluating only the samples on which the channel is active. ``state`` is updated in place.

    :param state: The pass's state (labels and counts so far).
    :param layer: Name of the layer (for the records).
    :param clean_active: ``(n, n_channels)``: which channels are active on which clean sample.
    :param poisoned_active: The same on the poisoned data.
    :param candidates: Channels to try, in order.
    :param clean_rows: Evaluates the rest of the network (with the masks accepted so far in later layers) on this
           layer's cached clean activations.
    :param poisoned_rows: The same on the poisoned activations.
    :param min_clean_hits: The accuracy budget, as a number of correctly classified clean samples.
    :param on_candidate: Called after each candidate (progress reporting).
    :return: The layer's mask (1 keep, 0 pruned).
    """
    mask = np.ones(clean_active.shape[1], dtype=np.float32)
    clean_hits = int(state.clean.hits[-1])
    poisoned_hits = int(state.poisoned.hits[-1])
    for channel in candidates:
        mask[channel] = 0
        clean_changed = np.flatnonzero(clean_active[:, channel])
        poisoned_changed = np.flatnonzero(poisoned_active[:, channel])
        new_poisoned, new_poisoned_hits = _trial(
            poisoned_rows, poisoned_changed, mask, state.poisoned_references, state.poisoned_labels, poisoned_hits
        )
        accepted = False
        if new_poisoned_hits <= poisoned_hits:
            new_clean, new_clean_hits = _trial(
                clean_rows, clean_changed, mask, state.clean_references, state.clean_labels, clean_hits
            )
            lowers_attack = new_poisoned_hits < poisoned_hits and new_clean_hits >= min_clean_hits
            harmless = new_poisoned_hits == poisoned_hits and new_clean_hits >= max(clean_hits, min_clean_hits)
            if lowers_attack or harmless:
                accepted = True
                if new_clean is not None:
                    state.clean_labels[clean_changed] = new_clean
                if new_poisoned is not None:
                    state.poisoned_labels[poisoned_changed] = new_poisoned
                clean_hits, poisoned_hits = new_clean_hits, new_poisoned_hits
                state.accepted.append((layer, int(channel)))
                for counts, hits, labels, unpruned in (
                    (state.clean, clean_hits, state.clean_labels, state.clean_unpruned),
                    (state.poisoned, poisoned_hits, state.poisoned_labels, state.poisoned_unpruned),
                ):
                    counts.hits = np.append(counts.hits, hits)
                    counts.changed = np.append(counts.changed, np.count_nonzero(labels != unpruned))
        if not accepted:
            mask[channel] = 1
        if on_candidate is not None:
            on_candidate()
    return mask


def select_steps(clean_accuracy: Sequence[float], accuracy_drops: Iterable[float]) -> dict[float, int]:
    """
    The stopping rule: for each X, the first step whose clean accuracy is at least X percentage points below the
    unpruned accuracy (step 0); the last step (the whole layer pruned) where no step falls that far.

    :param clean_accuracy: Clean accuracy in percent per step, the unpruned network first.
    :param accuracy_drops: The X values, in percentage points.
    :return: ``{X: step}``.
    """
    accuracy = np.asarray(clean_accuracy, dtype=np.float64)
    if accuracy.ndim != 1 or accuracy.size == 0:
        raise ValueError(f"Expected a non-empty 1-D sequence of accuracies, got shape {accuracy.shape}.")
    drop = accuracy[0] - accuracy
    steps = {}
    for x in accuracy_drops:
        # A small tolerance keeps e.g. 97.0 - 95.0 >= 2.0 true despite binary rounding.
        reached = np.flatnonzero(drop >= float(x) - 1e-9)
        steps[float(x)] = int(reached[0]) if reached.size else accuracy.size - 1
    return steps


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """
    :param predicted: Predicted labels.
    :param labels: True labels.
    :return: Percent of samples predicted correctly.
    """
    return float(percent(np.count_nonzero(np.asarray(predicted) == np.asarray(labels)), len(labels)))


def attack_success_rate(predicted: np.ndarray, target: np.ndarray | int) -> float:
    """
    :param predicted: Predicted labels on poisoned inputs.
    :param target: Attack target, one for all or one per sample.
    :return: Percent of poisoned inputs classified as the target.
    """
    predicted = np.asarray(predicted)
    return float(percent(np.count_nonzero(predicted == np.asarray(target)), len(predicted)))


def goodnet_labels(
    bad_labels: np.ndarray, pruned_labels: np.ndarray, n_classes: int, flagged: np.ndarray | None = None
) -> np.ndarray:
    """
    :param bad_labels: Labels predicted by B.
    :param pruned_labels: Labels predicted by B'.
    :param n_classes: N, the number of classes of B.
    :param flagged: The inputs to flag (a calibrated GoodNet's ``score > threshold``); default: those on which B and
           B' differ.
    :return: B's label where an input is not flagged, N ("poisoned input") where it is (by default: the shared
             label where B and B' agree, N where they differ).
    """
    bad_labels = np.asarray(bad_labels)
    keep = bad_labels == np.asarray(pruned_labels) if flagged is None else ~np.asarray(flagged, dtype=bool)
    return np.where(keep, bad_labels, n_classes)


def goodnet_scores(
    bad_scores: np.ndarray,
    pruned_labels: np.ndarray,
    bad_labels: np.ndarray | None = None,
    abstain: bool = False,
    flagged: np.ndarray | None = None,
) -> np.ndarray:
    """
    :param bad_scores: B's scores, shape ``(n, N)``.
    :param pruned_labels: Labels predicted by B', shape ``(n,)``.
    :param bad_labels: Labels predicted by B (default: the argmax of ``bad_scores``).
    :param abstain: Abstain where B and B' differ instead of answering class N.
    :param flagged: The inputs to flag, shape ``(n,)`` (a calibrated GoodNet's ``score > threshold``); default:
           those on which B and B' differ.
    :return: Scores of shape ``(n, N + 1)``: B's scores with 0 in column N where an input is not flagged, a one-hot
             row at N where it is. With ``abstain``, of shape ``(n, N)``: B's scores where not flagged, an all-zero
             row where flagged.
    """
    n, n_classes = bad_scores.shape
    scores = np.zeros((n, n_classes if abstain else n_classes + 1), dtype=bad_scores.dtype)
    if bad_labels is None:
        bad_labels = np.argmax(bad_scores, axis=1)
    if flagged is None:
        agree = np.asarray(bad_labels) == np.asarray(pruned_labels)
    else:
        agree = ~np.asarray(flagged, dtype=bool)
    scores[agree, :n_classes] = bad_scores[agree]
    if not abstain:
        scores[~agree, n_classes] = 1
    return scores


def compare_labels(
    n_classes: int,
    labels: np.ndarray | None,
    bad: np.ndarray | None,
    pruned: np.ndarray | None,
    target: np.ndarray | None = None,
    poisoned_bad: np.ndarray | None = None,
    poisoned_pruned: np.ndarray | None = None,
    flagged: np.ndarray | None = None,
    poisoned_flagged: np.ndarray | None = None,
) -> dict[str, dict[str, float | None]]:
    """
    Metrics of B, B' and GoodNet from their predicted labels.

    :param n_classes: N, the number of classes of B.
    :param labels: True labels of the clean inputs (or ``None`` without clean data).
    :param bad: B's labels on the clean inputs.
    :param pruned: B''s labels on the clean inputs.
    :param target: Attack target per poisoned input (or ``None`` without poisoned data).
    :param poisoned_bad: B's labels on the poisoned inputs.
    :param poisoned_pruned: B''s labels on the poisoned inputs.
    :param flagged: The clean inputs a calibrated GoodNet flags (default: those on which B and B' differ).
    :param poisoned_flagged: The poisoned inputs a calibrated GoodNet flags (default: as ``flagged``).
    :return: ``{"B": row, "B'": row, "GoodNet": row}``; each row holds ``clean_accuracy``, ``attack_success_rate``,
             ``clean_flagged`` and ``poisoned_flagged`` (percent of inputs answered with class N; GoodNet only).
    """
    rows: dict[str, dict[str, float | None]] = {}
    clean = labels is not None
    poisoned = target is not None
    goodnet_clean = goodnet_labels(bad, pruned, n_classes, flagged) if clean else None
    goodnet_poisoned = goodnet_labels(poisoned_bad, poisoned_pruned, n_classes, poisoned_flagged) if poisoned else None
    for name, clean_labels, poisoned_labels in (
        ("B", bad, poisoned_bad),
        ("B'", pruned, poisoned_pruned),
        ("GoodNet", goodnet_clean, goodnet_poisoned),
    ):
        is_goodnet = name == "GoodNet"
        rows[name] = {
            "clean_accuracy": accuracy(clean_labels, labels) if clean else None,
            "attack_success_rate": attack_success_rate(poisoned_labels, target) if poisoned else None,
            "clean_flagged": float(percent(np.count_nonzero(clean_labels == n_classes), len(clean_labels)))
            if clean and is_goodnet
            else None,
            "poisoned_flagged": float(percent(np.count_nonzero(poisoned_labels == n_classes), len(poisoned_labels)))
            if poisoned and is_goodnet
            else None,
        }
    return rows


#: A ranked sweep over many channels evaluates the network on a grid of this many steps (plus the unpruned network)
#: before refining each X by bisection, instead of after every channel.
SEARCH_GRID = 32


def search_steps(
    clean_accuracy: Callable[[int], float], n_steps: int, accuracy_drops: Iterable[float], grid: int = SEARCH_GRID
) -> dict[float, int]:
    """
    The stopping rule of :func:`select_steps` where evaluating a step costs a pass of the whole network: the
    accuracy is evaluated at step 0 and on a grid of about ``grid`` steps up to the first grid step that falls
    below the largest X, then each X is refined by bisection between the last grid step above it and the first
    below it. Where accuracy falls monotonically with the steps, this is :func:`select_steps`'s answer; otherwise
    it is the first crossing on the grid, refined to one step.

    :param clean_accuracy: ``step → clean accuracy in percent`` (the caller records whatever else it measures).
    :param n_steps: The last step (every channel pruned).
    :param accuracy_drops: The X values, in percentage points.
    :param grid: About how many grid steps cover ``0..n_steps``.
    :return: ``{X: step}``.
    """
    drops = sorted(float(x) for x in accuracy_drops)
    if not drops:
        return {}
    seen = {0: float(clean_accuracy(0))}
    base = seen[0]

    def fallen(step: int, x: float) -> bool:
        if step not in seen:
            seen[step] = float(clean_accuracy(step))
        # A small tolerance keeps e.g. 97.0 - 95.0 >= 2.0 true despite binary rounding (as select_steps).
        return base - seen[step] >= x - 1e-9

    stride = max(1, math.ceil(n_steps / max(1, grid)))
    step = 0
    while step < n_steps and not fallen(step, drops[-1]):
        step = min(n_steps, step + stride)
    fallen(step, drops[-1])
    steps = {}
    for x in drops:
        grid_steps = sorted(s for s in seen if s == 0 or s % stride == 0 or s == n_steps)
        below = next((s for s in grid_steps if fallen(s, x)), None)
        if below is None:
            steps[x] = n_steps
            continue
        low, high = max([s for s in grid_steps if s < below], default=below), below
        while high - low > 1:
            middle = (low + high) // 2
            if fallen(middle, x):
                high = middle
            else:
                low = middle
        steps[x] = high
    return steps
