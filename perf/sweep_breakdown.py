"""
Where the time of the package's sweep goes on the lab's DeepID case: the head pass, the tail steps and the rest
(bookkeeping), each beside the floor (one forward pass of the whole network over both sets), in one process.

    python perf/sweep_breakdown.py [--repeats R]

The inputs are those of ``sweep_speed.py`` (11,547 clean and 11,547 sunglasses images made from the 15 real faces in
../shared/data/ytface). Each repeat measures the floor, then times ``FinePruning.fit`` (``conv_3``, both sets),
with the time spent in the head's compiled prediction (``BatchPredictor.__call__``: conversion of the inputs, the
head, the copy of the activations back) and in the tail's (``CachedTail.__call__``, and ``FrontState.begin`` and
``prune`` for the steps that keep the fronts' sums) counted apart; the rest is
bookkeeping (input checks, preprocessing, channel means, activity masks, label counts, caches).

Each repeat also times a bound that no exact sweep of this form goes below: the head's pass plus, for every
re-evaluation the sweep makes (a sample, at each step that prunes one of its active channels but the last), the
layers after those that read the cut (for DeepID ``fc_2`` and the 1,283-way ``output``), run on the fronts' outputs
computed beforehand, in calls of the sweep's tail size. Only the front layers' work, over the kept channels, and the
bookkeeping separate the sweep from it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_speed import lab_case, lab_parser, shared_missing  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = lab_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    if shared_missing():
        return 2

    from art.estimators.classification import KerasClassifier

    import art_pruning_defense.keras._model as adapter
    from art_pruning_defense import FinePruning
    from art_pruning_defense.keras import BatchPredictor

    x, y, px, model = lab_case(args.n, args.seed)
    classifier = KerasClassifier(model, clip_values=(0.0, 255.0))
    predict = BatchPredictor(model, labels_only=True)
    # Warm-up (traces and thread pools), not timed.
    FinePruning(classifier, layer_name="conv_3", verbose=False).fit(
        x[:300], y[:300], poisoned_x=px[:300], poisoned_target=0
    )
    predict(x[:512], args.batch_size)

    spent: dict[str, float] = {}

    def timed(cls: type, key: str, method: str = "__call__") -> None:
        call = getattr(cls, method)

        def wrapper(self: object, *a: object, **k: object) -> object:
            start = time.perf_counter()
            try:
                return call(self, *a, **k)
            finally:
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - start

        setattr(cls, method, wrapper)

    rest_only = _rest_only(model, x, px, args.batch_size)
    timed(adapter.BatchPredictor, "head")  # the floor's calls are cleared before each sweep
    timed(adapter.CachedTail, "tail")
    timed(adapter.FrontState, "tail", "begin")  # the steps that keep the fronts' sums
    timed(adapter.FrontState, "tail", "prune")
    print(
        "| repeat | floor s | sweep s | sweep / floor | head s (/ floor) | tail s (/ floor) | bookkeeping s (/ floor) "
        "| after the fronts only s (/ floor) | bound: head + after the fronts (/ floor) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for repeat in range(1, args.repeats + 1):
        start = time.perf_counter()
        predict(x, args.batch_size)
        predict(px, args.batch_size)
        floor = time.perf_counter() - start
        spent.clear()
        start = time.perf_counter()
        FinePruning(classifier, layer_name="conv_3", batch_size=args.batch_size, verbose=False).fit(
            x, y, poisoned_x=px, poisoned_target=0
        )
        sweep = time.perf_counter() - start
        head, tail = spent.get("head", 0.0), spent.get("tail", 0.0)
        rest = sweep - head - tail
        after = rest_only()
        cells = " | ".join(f"{v:.2f} ({v / floor:.2f})" for v in (head, tail, rest, after, head + after))
        print(f"| {repeat} | {floor:.2f} | {sweep:.2f} | {sweep / floor:.2f} | {cells} |", flush=True)
    print()
    print(f"re-evaluations: {rest_only.count} ({rest_only.count / (len(x) + len(px)):.2f} per image)")
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print("command: python perf/sweep_breakdown.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])))
    return 0


class _RestOnly:
    """
    Times the layers after the fronts (see ``channel_linear_front``) on as many rows as the sweep re-evaluates.
    """

    def __init__(self, rest: object, inputs: list, count: int, rows_per_call: int) -> None:
        self.count = count
        self._rest, self._inputs, self._rows = rest, inputs, rows_per_call

    def __call__(self) -> float:
        n = int(self._inputs[0].shape[0])
        start = time.perf_counter()
        done = 0
        while done < self.count:
            size = min(self._rows, self.count - done, n)
            self._rest([t[:size] for t in self._inputs]).numpy()
            done += size
        return time.perf_counter() - start


def _rest_only(model: object, x: np.ndarray, px: np.ndarray, batch_size: int) -> _RestOnly:
    """
    :return: A timer of the layers after the fronts on the sweep's number of re-evaluations at ``pool_3``.
    """
    import tensorflow as tf

    from art_pruning_defense import _sweep
    from art_pruning_defense.fine_pruning import TAIL_BATCH_FACTOR
    from art_pruning_defense.keras import BatchPredictor
    from art_pruning_defense.keras._model import channel_linear_front, split

    head, tail = split(model, "pool_3")
    fronts, rest = channel_linear_front(tail)
    head_predict = BatchPredictor(head)
    count = 0
    for data in (x, px):
        active = _sweep.active_channels(head_predict(data, batch_size))
        count += int(np.maximum(active.sum(axis=1) - 1, 0).sum())  # the last one is the all-zero input, shared
    rows = TAIL_BATCH_FACTOR * batch_size
    activations = tf.constant(head_predict(x[:rows], batch_size))
    inputs = []
    for front in fronts:
        layer_input = tf.reshape(activations, [activations.shape[0], -1]) if front.flatten else activations
        inputs.append(tf.constant(front.layer(layer_input)))
    signature = [[tf.TensorSpec([None, *t.shape[1:]], t.dtype) for t in inputs]]
    forward = tf.function(lambda outputs: tf.argmax(rest(outputs, training=False), axis=-1), input_signature=signature)
    timer = _RestOnly(forward, inputs, count, rows)
    timer()  # trace
    return timer


if __name__ == "__main__":
    sys.exit(main())
