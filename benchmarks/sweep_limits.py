"""
What an exact sweep of the lab's DeepID case cannot go below on this machine, piece by piece, and two shortcuts
measured against the package's own tail steps.

    python benchmarks/sweep_limits.py [--n N] [--rows R] [--repeats K]

The inputs are those of ``sweep_speed.py`` (N = 11,547 clean and N sunglasses images made from the 15 real faces in
../shared/data/ytface); the cut is ``pool_3`` (``conv_3``'s 60 channels), whose readers ``conv_4`` and ``fc_1`` are
the fronts; ``fc_2``, the ``add`` and the 1,283-way ``output`` come after them.

1. Cost per re-evaluated row, in calls of R rows (the sweep's tail calls): the layers after the fronts as the sweep
   runs them (with the output's softmax and the argmax); their two matrix products alone, with the multiply-add
   rate; the fronts over the last 10 and 30 channels of the cache (the package's slice path).
2. Incremental fronts: each sample keeps its fronts' outputs before bias and activation, and a step subtracts the
   pruned channel's contribution (one channel's map through ``conv_4`` and ``fc_1``) instead of recomputing the
   fronts over the kept channels. The tail steps of both sets (``_sweep.sweep_chunk``), timed against the package's
   ``CachedTail``; the counts of every step must be equal, else the script stops with an error.
3. Certified skipping: the share of re-evaluations whose label a margin bound proves unchanged (the label ``c`` of
   the last exact evaluation stands while ``max_j ||w_c - w_j|| * ||h - h_ref|| * (1 + 1e-4) + 1e-3`` stays below that
   evaluation's top-two logit margin, ``h`` the input of ``output``); only ``output``'s product could be skipped
   there, ``fc_2`` still runs.
4. The floor (one forward pass of the network over both sets), and the head's pass and the layers after the fronts
   on all re-evaluations in floors: no exact sweep that re-evaluates each touched sample goes below their sum.
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


class IncrementalFronts:
    """
    A ``RowsFunction`` (see ``_sweep``) for a sweep that prunes channels one at a time in a fixed order: it keeps the
    fronts' outputs (before bias and activation) of every sample and, at each call, subtracts the contributions of
    the channels pruned since the previous call from the called samples' outputs. Correct for ``sweep_chunk``'s calls
    only: a sample is called at each step that prunes a channel active on it (a channel all zero on a sample adds
    exactly zero to its outputs). An all-zero mask goes to ``fallback`` (the package's tail).
    """

    def __init__(self, fronts, rest, cache, order: np.ndarray, rows_per_call: int, fallback) -> None:
        import keras
        import tensorflow as tf

        self._rows, self._fallback = rows_per_call, fallback
        self._position = {int(c): i for i, c in enumerate(order)}  # the cache holds the channels in pruning order
        self._mask: np.ndarray | None = None
        self._cache = cache
        n, height, width, channels = (int(d) for d in cache.shape)
        in_order = tf.constant(order.astype(np.int32))
        sizes = [tuple(int(d) for d in f.output.shape[1:]) for f in fronts]
        self._state = [tf.Variable(tf.zeros([n, *s]), shape=tf.TensorShape([None, *s])) for s in sizes]

        def kernel(front):
            layer = front.layer
            if front.flatten:  # rows of the flattened map: (position, channel)
                return tf.reshape(layer.kernel, [height * width, channels, -1])
            return layer.kernel

        def contribution(front, maps, channel):
            """One channel's maps (rows, h, w, 1) through a front, before bias and activation."""
            layer = front.layer
            if front.flatten:
                return tf.matmul(tf.reshape(maps, [-1, height * width]), kernel(front)[:, channel, :])
            if isinstance(layer, keras.layers.Dense):
                return maps * layer.kernel[channel]
            return layer.convolution_op(maps, layer.kernel[:, :, channel : channel + 1, :])

        def full(front, x):
            """All channels (in pruning order) through a front, before bias and activation."""
            layer = front.layer
            if front.flatten:
                k = tf.reshape(tf.gather(kernel(front), in_order, axis=1), [height * width * channels, -1])
                return tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), k)
            if isinstance(layer, keras.layers.Dense):
                return tf.matmul(x, tf.gather(layer.kernel, in_order, axis=0))
            return layer.convolution_op(x, tf.gather(layer.kernel, in_order, axis=2))

        def labels(pre):
            outputs = []
            for front, p in zip(fronts, pre):
                out = p + front.layer.bias if front.layer.bias is not None else p
                outputs.append(front.layer.activation(out) if front.layer.activation is not None else out)
            return tf.argmax(rest(outputs, training=False), axis=-1)

        rows_spec = tf.TensorSpec([None], tf.int64)

        @tf.function(input_signature=[rows_spec])
        def start(rows):
            pre = [full(f, tf.gather(self._cache, rows)) for f in fronts]
            for v, p in zip(self._state, pre):
                v.scatter_nd_update(rows[:, None], p)
            return labels(pre)

        @tf.function(input_signature=[rows_spec, tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32)])
        def prune(rows, positions, channels):
            x = tf.gather(self._cache, rows)
            new = [tf.gather(v, rows) for v in self._state]
            for i in range(tf.size(positions)):
                maps = tf.gather(x, positions[i : i + 1], axis=3)
                new = [s - contribution(f, maps, channels[i]) for f, s in zip(fronts, new)]
            for v, s in zip(self._state, new):
                v.scatter_nd_update(rows[:, None], s)
            return labels(new)

        self._start, self._prune = start, prune

    def __call__(self, rows: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        if not np.any(mask):
            return self._fallback(rows, mask)
        if rows is None:  # the unpruned network: fill the state
            self._mask = mask.copy()
            n = int(self._cache.shape[0])
            calls = [tf.range(s, min(n, s + self._rows), dtype=tf.int64) for s in range(0, n, self._rows)]
            return np.concatenate([self._start(r).numpy() for r in calls])
        pruned = np.flatnonzero((self._mask == 1) & (mask == 0))
        self._mask = mask.copy()
        positions = tf.constant([self._position[int(c)] for c in pruned], tf.int32)
        channels = tf.constant(pruned.astype(np.int32))
        parts = [
            self._prune(tf.constant(rows[s : s + self._rows], tf.int64), positions, channels).numpy()
            for s in range(0, len(rows), self._rows)
        ]
        return np.concatenate(parts)


def per_row(function, rows: int, repeats: int = 30) -> float:
    """:return: Microseconds per row of ``function`` (one call on ``rows`` rows; best of three runs)."""
    function()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            out = function()
        np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
        best = min(best, (time.perf_counter() - start) / repeats)
    return 1e6 * best / rows


def main(argv: list[str] | None = None) -> int:
    parser = lab_parser(__doc__)
    parser.add_argument("--rows", type=int, default=2048, help="rows per tail call (the sweep's: 8 x batch size)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if shared_missing():
        return 2

    import tensorflow as tf

    from art_pruning_defense import _sweep
    from art_pruning_defense.keras import BatchPredictor
    from art_pruning_defense.keras._model import CachedTail, CompiledTail, channel_linear_front, split

    x, y, px, model = lab_case(args.n, args.seed)
    head, tail = split(model, "pool_3")
    fronts, rest = channel_linear_front(tail)
    head_predict, predict = BatchPredictor(head), BatchPredictor(model, labels_only=True)
    head_predict(x[:512]), predict(x[:512])  # traces, not timed

    start = time.perf_counter()
    predict(x), predict(px)
    floor = time.perf_counter() - start
    start = time.perf_counter()
    sets = [(head_predict(x), y), (head_predict(px), np.zeros(args.n, np.int64))]
    head_seconds = time.perf_counter() - start
    means = _sweep.ChannelMeans()
    means.update(sets[0][0])
    order = _sweep.rank_channels(means.mean)
    compiled = CompiledTail(tail)
    prepared = []
    for activations, references in sets:
        in_order = np.ascontiguousarray(activations[..., order])
        prepared.append((tf.constant(in_order), _sweep.active_channels(in_order)[:, np.argsort(order)], references))
    count = sum(int(np.maximum(a.sum(axis=1) - 1, 0).sum()) for _, a, _ in prepared)

    # 1. Cost per row.
    rng = np.random.default_rng(args.seed + 1)  # the rows and operands of the per-row timings
    cache = prepared[0][0]
    rows = min(args.rows, int(cache.shape[0]))
    sample = tf.constant(np.sort(rng.choice(int(cache.shape[0]), rows, replace=False)).astype(np.int64))
    inputs = [tf.constant(f.layer(tf.reshape(cache[:rows], [rows, -1]) if f.flatten else cache[:rows])) for f in fronts]
    after = tf.function(lambda outs: tf.argmax(rest(outs, training=False), axis=-1))
    fc_2, output = model.get_layer("fc_2"), model.get_layer("output")
    a2, h = (
        tf.constant(rng.random((rows, fc_2.kernel.shape[0]), np.float32)),
        tf.constant(rng.random((rows, 160), np.float32)),
    )
    product_2 = tf.function(lambda: tf.matmul(a2, fc_2.kernel))
    product_out = tf.function(lambda: tf.matmul(h, output.kernel))
    kept = {k: tf.constant(order[-k:].astype(np.int32)) for k in (10, 30)}
    after_us = per_row(lambda: after(inputs), rows)
    fc_2_us, output_us = per_row(product_2, rows), per_row(product_out, rows)
    step_us = {k: per_row(lambda k=k: compiled.suffix(cache, sample, kept[k]), rows) for k in kept}
    rate = {
        "fc_2": 2 * int(fc_2.kernel.shape[0]) * 160 / fc_2_us / 1e3,
        "output": 2 * 160 * int(output.kernel.shape[1]) / output_us / 1e3,
    }
    print(f"inputs: {args.n} clean + {args.n} sunglasses images; cut pool_3 (60 channels); {count} re-evaluations")
    print()
    print(f"| per row, calls of {rows} rows | microseconds |")
    print("| --- | ---: |")
    print(f"| layers after the fronts (fc_2, add, output with softmax, argmax) | {after_us:.2f} |")
    print(f"| fc_2's product alone ({int(fc_2.kernel.shape[0])}x160), {rate['fc_2']:.0f} GFLOP/s | {fc_2_us:.2f} |")
    classes = int(output.kernel.shape[1])
    print(f"| output's product alone (160x{classes}), {rate['output']:.0f} GFLOP/s | {output_us:.2f} |")
    for k, value in step_us.items():
        print(f"| package's tail step, last {k} of 60 channels kept (fronts + the above) | {value:.2f} |")

    # 2. Incremental fronts against the package's tail steps.
    timings: dict[str, list[float]] = {"package (CachedTail)": [], "incremental fronts": []}
    for _ in range(args.repeats):
        results = {}
        for name in timings:
            counts, seconds = [], 0.0
            for cache, active, references in prepared:
                package = CachedTail(compiled, cache, rows, channel_order=order)
                rows_function = (
                    package
                    if name.startswith("package")
                    else IncrementalFronts(fronts, rest, cache, order, rows, package)
                )
                start = time.perf_counter()
                counts.append(_sweep.sweep_chunk(active, references, order, rows_function))
                seconds += time.perf_counter() - start
            timings[name].append(seconds)
            results[name] = counts
        for a, b in zip(*results.values()):
            if not (np.array_equal(a.hits, b.hits) and np.array_equal(a.changed, b.changed)):
                print("error: the incremental fronts' counts differ from the package's", file=sys.stderr)
                return 1
    print()
    print("| tail steps, both sets | seconds per run | floors |")
    print("| --- | --- | --- |")
    for name, values in timings.items():
        print(
            f"| {name} | {' / '.join(f'{v:.2f}' for v in values)} | {' / '.join(f'{v / floor:.2f}' for v in values)} |"
        )
    print("counts of all 61 steps equal on both sets")

    # 3. Certified skipping.
    skipped = _certified(model, prepared, order)
    print()
    print(f"certified skipping: {skipped} of {count} re-evaluations ({100 * skipped / count:.1f} %) provably unchanged")

    # 4. The bound.
    after_all = after_us * count / 1e6
    print()
    print(
        f"floor {floor:.2f} s; head's pass {head_seconds:.2f} s ({head_seconds / floor:.2f} floors); layers after the "
        f"fronts on every re-evaluation {after_all:.2f} s ({after_all / floor:.2f}); sum "
        f"{(head_seconds + after_all) / floor:.2f} floors"
    )
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print("command: python benchmarks/sweep_limits.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])))
    return 0


def _certified(model, prepared, order: np.ndarray) -> int:
    """
    :return: How many of the sweep's re-evaluations the margin bound proves unchanged (see the module's text).
    """
    import keras
    import tensorflow as tf

    weights, bias = (np.asarray(w) for w in model.get_layer("output").get_weights())
    gram = weights.T.astype(np.float64) @ weights.astype(np.float64)
    squares = np.diag(gram)
    spread = np.sqrt(np.maximum(squares[:, None] + squares[None, :] - 2 * gram, 0)).max(axis=1)
    network = keras.Model(model.get_layer("pool_3").output, model.get_layer("activation_1").output)
    features = tf.function(lambda a: network(a, training=False))
    skipped = 0
    for cache, active, _ in prepared:
        activations = tf.gather(cache, np.argsort(order), axis=3).numpy()  # back to the model's channel order
        mask = np.ones(activations.shape[-1], np.float32)
        h_ref = np.concatenate([features(activations[s : s + 4096]).numpy() for s in range(0, len(activations), 4096)])
        logits = h_ref @ weights + bias
        label = logits.argmax(axis=1)
        top2 = np.sort(logits, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        remaining = active.sum(axis=1)
        for channel in order:
            mask[channel] = 0
            rows = np.flatnonzero(active[:, channel])
            remaining[rows] -= 1
            rows = rows[remaining[rows] > 0]
            if not rows.size:
                continue
            h = np.concatenate(
                [features(activations[rows[s : s + 4096]] * mask).numpy() for s in range(0, len(rows), 4096)]
            )
            distance = np.linalg.norm(h.astype(np.float64) - h_ref[rows], axis=1)
            proven = margin[rows] > spread[label[rows]] * distance * (1 + 1e-4) + 1e-3
            skipped += int(proven.sum())
            exact = rows[~proven]
            z = h[~proven] @ weights + bias
            top2 = np.sort(z, axis=1)[:, -2:]
            h_ref[exact], label[exact], margin[exact] = h[~proven], z.argmax(axis=1), top2[:, 1] - top2[:, 0]
    return skipped


if __name__ == "__main__":
    sys.exit(main())
