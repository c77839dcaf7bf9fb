"""
How the package's pruning sweep scales: its time against the validation-set size and against the pruned layer's
channel count, with the floor (one forward pass of the whole network over the same images) beside each.

    python perf/sweep_scaling.py [--quick] [--out DIR]

1. Size: the lab's DeepID network (``lab3_bd_weights.h5`` when ../shared is present, else the same architecture
   with random weights) on n images of 55x47x3 made from the 15 real faces in ../shared/data/ytface by random
   shifts, brightness and contrast changes and pixel noise (uniform noise images without ../shared); the sweep of
   ``conv_3`` (60 channels) on the clean images only; n in 1k, 4k, 16k, 64k (``--quick``: 1k, 4k).
2. Channels: a small synthetic network, ``conv (32) → pool → conv (C) → pool → conv (64) / flatten → dense (128)
   → dense (10)`` with random weights, on 4,000 random 32x32x3 images (``--quick``: 1,000); the sweep of the
   C-channel conv, C in 16, 32, 64, 128, 256 (``--quick``: 16, 64).

Times are the best of ``--repeats`` runs, each after an untimed warm-up. Prints two markdown tables and the
command; with ``--out DIR`` also writes ``DIR/sweep_scaling.png`` (needs matplotlib).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS = SHARED / "models" / "csaw" / "lab3_bd_weights.h5"
FACES = SHARED / "data" / "ytface"


def best_time(function, repeats: int) -> float:
    """
    :return: The shortest wall time of ``repeats`` calls of ``function``, in seconds.
    """
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(model, layer: str, x: np.ndarray, y: np.ndarray, batch_size: int, repeats: int) -> tuple[float, float]:
    """
    :return: ``(sweep seconds, floor seconds)``: FinePruning.fit on ``layer`` over ``x``, and one forward pass of
             the whole network over ``x`` (both at ``batch_size``).
    """
    from art.estimators.classification import KerasClassifier

    from art_pruning_defense import FinePruning
    from art_pruning_defense.keras import BatchPredictor

    classifier = KerasClassifier(model, clip_values=(float(x.min()), float(x.max())))
    predict = BatchPredictor(model, labels_only=True)

    def sweep() -> None:
        FinePruning(classifier, layer_name=layer, batch_size=batch_size, verbose=False).fit(x, y)

    # Warm-up (traces, thread pools), not timed.
    FinePruning(classifier, layer_name=layer, batch_size=batch_size, verbose=False).fit(x[:300], y[:300])
    predict(x[:512], batch_size)
    return best_time(sweep, repeats), best_time(lambda: predict(x, batch_size), repeats)


def deepid_inputs(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """
    :return: ``(x, y, description)``: n DeepID inputs and labels.
    """
    if FACES.is_dir():
        sys.path.insert(0, str(ROOT / "perf"))
        from sweep_speed import augmented_faces

        paths = sorted(FACES.glob("cl_*.png"))
        x, y = augmented_faces(paths, [int(p.stem.split("=")[1]) for p in paths], n, rng)
        return x, y, "augmented real faces"
    return rng.uniform(0, 255, (n, 55, 47, 3)).astype(np.float32), rng.integers(0, 1283, n), "uniform noise"


def channel_model(n_channels: int, seed: int):
    """
    :return: The synthetic network of the channel scan, with random weights; the layer to prune is ``conv_c``.
    """
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(32, 3, activation="relu", name="conv_a")(inputs)
    x = layers.MaxPooling2D(2, name="pool_a")(x)
    x = layers.Conv2D(n_channels, 3, activation="relu", name="conv_c")(x)
    cut = layers.MaxPooling2D(2, name="pool_c")(x)
    side = layers.Flatten(name="flat_c")(layers.Conv2D(64, 3, activation="relu", name="conv_d")(cut))
    x = layers.Add(name="add")(
        [layers.Dense(128, name="fc_c")(layers.Flatten(name="flat")(cut)), layers.Dense(128)(side)]
    )
    outputs = layers.Dense(10, activation="softmax", name="out")(layers.Activation("relu")(x))
    return keras.Model(inputs, outputs, name=f"scan_{n_channels}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and channel counts")
    parser.add_argument("--out", type=Path, help="directory for sweep_scaling.png")
    parser.add_argument("--sizes", type=int, nargs="+", help="images per run (default 1000 4000 16000 64000)")
    parser.add_argument("--channels", type=int, nargs="+", help="channel counts (default 16 32 64 128 256)")
    parser.add_argument("--n-channel-scan", type=int, help="images per run of the channel scan (default 4000)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1, help="runs per point; the best is kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = args.sizes or ([1000, 4000] if args.quick else [1000, 4000, 16000, 64000])
    channels = args.channels or ([16, 64] if args.quick else [16, 32, 64, 128, 256])
    n_scan = args.n_channel_scan or (1000 if args.quick else 4000)
    command = "python perf/sweep_scaling.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:]))
    rng = np.random.default_rng(args.seed)

    from art_pruning_defense.keras import build_deepid, load_deepid_weights

    model = load_deepid_weights(str(WEIGHTS)) if WEIGHTS.is_file() else build_deepid()
    x_all, y_all, source = deepid_inputs(max(sizes), rng)
    weights = "lab3_bd_weights.h5" if WEIGHTS.is_file() else "random weights"
    print(f"Sweep time against the number of images (DeepID, {weights}, {source}; conv_3, 60 channels; clean set")
    print(f"only; batch size {args.batch_size}; best of {args.repeats}):")
    print()
    print("| images | sweep s | floor s | sweep / floor | sweep s per 1k images | floor s per 1k images |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    size_rows = []
    for n in sizes:
        sweep, floor = measure(model, "conv_3", x_all[:n], y_all[:n], args.batch_size, args.repeats)
        size_rows.append((n, sweep, floor))
        per_1k = f"{1000 * sweep / n:.3f} | {1000 * floor / n:.3f}"
        print(f"| {n} | {sweep:.2f} | {floor:.2f} | {sweep / floor:.2f} | {per_1k} |", flush=True)
    del x_all, y_all

    print()
    print(f"Sweep time against the channel count (synthetic net, random weights, {n_scan} random 32x32x3 images):")
    print()
    print("| channels | sweep s | floor s | sweep / floor | sweep ms per channel |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    x = rng.uniform(0, 1, (n_scan, 32, 32, 3)).astype(np.float32)
    channel_rows = []
    for c in channels:
        scan = channel_model(c, args.seed)
        y = rng.integers(0, 10, n_scan)
        sweep, floor = measure(scan, "conv_c", x, y, args.batch_size, args.repeats)
        channel_rows.append((c, sweep, floor))
        print(f"| {c} | {sweep:.2f} | {floor:.2f} | {sweep / floor:.2f} | {1000 * sweep / c:.1f} |", flush=True)

    if args.out is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        args.out.mkdir(parents=True, exist_ok=True)
        figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
        for axis, rows, label in ((left, size_rows, "images"), (right, channel_rows, "channels of the pruned layer")):
            xs = [r[0] for r in rows]
            axis.loglog(xs, [r[1] for r in rows], "o-", label="sweep")
            axis.loglog(xs, [r[2] for r in rows], "s--", label="floor (one forward pass)")
            axis.set_xticks(xs, [str(v) for v in xs])
            axis.minorticks_off()
            axis.set_xlabel(label)
            axis.set_ylabel("seconds")
            axis.grid(True, which="both", alpha=0.3)
            axis.legend()
        left.set_title("DeepID conv_3, by validation-set size", fontsize=9)
        right.set_title(f"synthetic net, {n_scan} images, by channel count", fontsize=9)
        figure.tight_layout()
        path = args.out / "sweep_scaling.png"
        figure.savefig(path, dpi=80)
        print()
        print(f"plot: {path}")
    print()
    print(f"command: {command.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
