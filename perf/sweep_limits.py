"""
What an exact sweep of the lab's DeepID case cannot go below on this machine, piece by piece, and the shortcuts
measured against the package's own tail steps.

    python perf/sweep_limits.py [--n N] [--rows R] [--repeats K]

The inputs are those of ``sweep_speed.py`` (N = 11,547 clean and N sunglasses images made from the 15 real faces in
../shared/data/ytface); the cut is ``pool_3`` (``conv_3``'s 60 channels), whose readers ``conv_4`` and ``fc_1`` are
the fronts; ``fc_2``, the ``add`` and the 1,283-way ``output`` come after them.

1. Cost per re-evaluated row, in calls of R rows (the sweep's tail calls): the layers after the fronts as the sweep
   runs them (with the output's softmax and the argmax); their two matrix products alone, with the multiply-add
   rate; the fronts over the last 10 and 30 channels of the cache (the package's slice path).
2. Kept front sums: the package's ``SweepStepper`` made to keep each sample's sums of ``conv_4`` and ``fc_1`` (before
   bias and activation) through every step that keeps at least ``FrontState.min_kept`` channels, subtracting the
   pruned channel's share, against the package's ``CachedTail`` alone (the fronts summed anew over the kept channels
   at every step) and against the stepper as ``FinePruning.fit`` makes it (which keeps the sums only where its
   estimate says they pay: not here). The tail steps of both sets (``_sweep.sweep_chunk``); the counts of every
   step must be equal, else the script stops with an error.
3. Certified skipping: the share of re-evaluations whose label a margin bound proves unchanged (the label ``c`` of
   the last exact evaluation stands while ``max_j ||w_c - w_j|| * ||h - h_ref|| * (1 + 1e-4) + 1e-3`` stays below that
   evaluation's top-two logit margin, ``h`` the input of ``output``); only ``output``'s product could be skipped
   there, ``fc_2`` still runs. And a second bound, with the K classes of highest logit at the last full evaluation
   computed exactly: the label is among them while their best logit beats ``M + N * ||h - h_ref||`` (``M`` the
   highest other logit then, ``N`` the longest other weight column); only K of the 1,283 columns of ``output``
   would then run.
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

    # 2. Kept front sums against the package's tail steps.
    timings: dict[str, list[float]] = {
        "package (CachedTail, the fronts anew)": [],
        "as FinePruning.fit makes it (its plan)": [],
        "front sums kept while min_kept allows": [],
    }
    for _ in range(args.repeats):
        results = {}
        for name in timings:
            counts, seconds = [], 0.0
            for cache, active, references in prepared:
                package = CachedTail(compiled, cache, rows, channel_order=order)
                stepper = {
                    "package (CachedTail, the fronts anew)": None,
                    "as FinePruning.fit makes it (its plan)": package.stepper(order, active),
                    "front sums kept while min_kept allows": package.stepper(),
                }.get(name)
                start = time.perf_counter()
                counts.append(_sweep.sweep_chunk(active, references, order, package, stepper=stepper))
                seconds += time.perf_counter() - start
            timings[name].append(seconds)
            results[name] = counts
        for a, *others in zip(*results.values()):
            if not all(np.array_equal(a.hits, b.hits) and np.array_equal(a.changed, b.changed) for b in others):
                print("error: the counts with kept front sums differ from the package's", file=sys.stderr)
                return 1
    print()
    print(
        f"front sums: min_kept {compiled.stateful.min_kept} of 60 channels, {compiled.stateful.values} values a sample"
    )
    print("| tail steps, both sets | seconds per run | floors |")
    print("| --- | --- | --- |")
    for name, values in timings.items():
        print(
            f"| {name} | {' / '.join(f'{v:.2f}' for v in values)} | {' / '.join(f'{v / floor:.2f}' for v in values)} |"
        )
    print("counts of all 61 steps equal on both sets")

    # 3. Certified skipping.
    skipped, top_k = _certified(model, prepared, order, (4, 16, 64))
    print()
    print(f"certified skipping: {skipped} of {count} re-evaluations ({100 * skipped / count:.1f} %) provably unchanged")
    for k, proven in top_k.items():
        print(f"top-{k} bound: {proven} of {count} re-evaluations ({100 * proven / count:.1f} %) proven in the top {k}")

    # 4. The bound.
    after_all = after_us * count / 1e6
    print()
    print(
        f"floor {floor:.2f} s; head's pass {head_seconds:.2f} s ({head_seconds / floor:.2f} floors); layers after the "
        f"fronts on every re-evaluation {after_all:.2f} s ({after_all / floor:.2f}); sum "
        f"{(head_seconds + after_all) / floor:.2f} floors"
    )
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print("command: python perf/sweep_limits.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])))
    return 0


def _reevaluations(model, prepared, order: np.ndarray):
    """
    :return: Per set, ``(h0, steps)``: the input of ``output`` of every sample unpruned, and an iterator over the
             sweep's steps with re-evaluations, each ``(rows, h)``: the samples re-evaluated and their inputs of
             ``output`` after the step.
    """
    import keras
    import tensorflow as tf

    network = keras.Model(model.get_layer("pool_3").output, model.get_layer("activation_1").output)
    features = tf.function(lambda a: network(a, training=False))

    def inputs(activations: np.ndarray) -> np.ndarray:
        return np.concatenate([features(activations[s : s + 4096]).numpy() for s in range(0, len(activations), 4096)])

    def steps(activations: np.ndarray, active: np.ndarray):
        mask = np.ones(activations.shape[-1], np.float32)
        remaining = active.sum(axis=1)
        for channel in order:
            mask[channel] = 0
            rows = np.flatnonzero(active[:, channel])
            remaining[rows] -= 1
            rows = rows[remaining[rows] > 0]
            if rows.size:
                yield rows, inputs(activations[rows] * mask)

    for cache, active, _ in prepared:
        activations = tf.gather(cache, np.argsort(order), axis=3).numpy()  # back to the model's channel order
        yield inputs(activations), steps(activations, active)


def _certified(model, prepared, order: np.ndarray, ks: tuple[int, ...]) -> tuple[int, dict[int, int]]:
    """
    :return: How many of the sweep's re-evaluations the margin bound proves unchanged, and for each K how many the
             top-K bound places among the K classes of highest logit at the sample's last full evaluation (see the
             module's text). After each failure the sample is evaluated in full and that evaluation becomes its
             reference. Every label the top-K bound proves is checked against the exact one.
    """
    weights, bias = (np.asarray(w, np.float64) for w in model.get_layer("output").get_weights())
    gram = weights.T @ weights
    squares = np.diag(gram)
    spread = np.sqrt(np.maximum(squares[:, None] + squares[None, :] - 2 * gram, 0)).max(axis=1)
    norms = np.linalg.norm(weights, axis=0)
    skipped, proven = 0, dict.fromkeys(ks, 0)
    for h0, steps in _reevaluations(model, prepared, order):
        h0 = h0.astype(np.float64)
        h_ref, logits = h0.copy(), h0 @ weights + bias
        label = logits.argmax(axis=1)
        top2 = np.sort(logits, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        references = {k: (h0.copy(), logits.copy()) for k in ks}
        for rows, h in steps:
            h = h.astype(np.float64)
            z = h @ weights + bias
            # The margin bound.
            distance = np.linalg.norm(h - h_ref[rows], axis=1)
            sure = margin[rows] > spread[label[rows]] * distance * (1 + 1e-4) + 1e-3
            skipped += int(sure.sum())
            exact = rows[~sure]
            top2 = np.sort(z[~sure], axis=1)[:, -2:]
            h_ref[exact], label[exact], margin[exact] = h[~sure], z[~sure].argmax(axis=1), top2[:, 1] - top2[:, 0]
            # The top-K bound.
            for k, (k_ref, z_ref) in references.items():
                top = np.argpartition(-z_ref[rows], k, axis=1)[:, :k]
                others = np.ones(z.shape, bool)
                np.put_along_axis(others, top, False, axis=1)
                highest = np.where(others, z_ref[rows], -np.inf).max(axis=1)
                longest = np.where(others, norms[None, :], 0).max(axis=1)
                bound = highest + longest * np.linalg.norm(h - k_ref[rows], axis=1)
                inside = np.take_along_axis(z, top, axis=1)
                ok = inside.max(axis=1) > bound + 1e-4 * (np.abs(bound) + 1)
                picked = np.take_along_axis(top, inside.argmax(axis=1)[:, None], axis=1)[:, 0]
                if np.any(picked[ok] != z[ok].argmax(axis=1)):
                    raise AssertionError("the top-K bound proved a wrong label")
                proven[k] += int(ok.sum())
                k_ref[rows[~ok]], z_ref[rows[~ok]] = h[~ok], z[~ok]
    return skipped, proven


if __name__ == "__main__":
    sys.exit(main())
