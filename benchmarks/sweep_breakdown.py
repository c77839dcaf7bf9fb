"""
Where the time of the package's sweep goes on the lab's DeepID case: the head pass, the tail steps and the rest
(bookkeeping), each beside the floor (one forward pass of the whole network over both sets), in one process.

    python benchmarks/sweep_breakdown.py [--repeats R]

The inputs are those of ``sweep_speed.py`` (11,547 clean and 11,547 sunglasses images made from the 15 real faces in
../shared/data/ytface). Each repeat measures the floor, then times ``FinePruning.fit`` (``conv_3``, both sets),
with the time spent in the head's compiled prediction (``BatchPredictor.__call__``: conversion of the inputs, the
head, the copy of the activations back) and in the tail's (``CachedTail.__call__``) counted apart; the rest is
bookkeeping (input checks, preprocessing, channel means, activity masks, label counts, caches).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_speed import FACES, WEIGHTS, augmented_faces  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=11547, help="images per set (clean and triggered)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not WEIGHTS.is_file() or not FACES.is_dir():
        print(f"error: {WEIGHTS} or {FACES} not found: this benchmark needs ../shared", file=sys.stderr)
        return 2

    from art.estimators.classification import KerasClassifier

    import art_pruning_defense.keras._model as adapter
    from art_pruning_defense import FinePruning
    from art_pruning_defense.keras import BatchPredictor, load_deepid_weights

    rng = np.random.default_rng(args.seed)
    clean_paths = sorted(FACES.glob("cl_*.png"))
    sun_paths = sorted(FACES.glob("sun_*.png"))
    x, y = augmented_faces(clean_paths, [int(p.stem.split("=")[1]) for p in clean_paths], args.n, rng)
    px, _ = augmented_faces(sun_paths, [0] * len(sun_paths), args.n, rng)
    model = load_deepid_weights(str(WEIGHTS))
    classifier = KerasClassifier(model, clip_values=(0.0, 255.0))
    predict = BatchPredictor(model, labels_only=True)
    # Warm-up (traces and thread pools), not timed.
    FinePruning(classifier, layer_name="conv_3", verbose=False).fit(
        x[:300], y[:300], poisoned_x=px[:300], poisoned_target=0
    )
    predict(x[:512], args.batch_size)

    spent: dict[str, float] = {}

    def timed(cls: type, key: str) -> None:
        call = cls.__call__

        def wrapper(self: object, *a: object, **k: object) -> object:
            start = time.perf_counter()
            try:
                return call(self, *a, **k)
            finally:
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - start

        cls.__call__ = wrapper

    timed(adapter.BatchPredictor, "head")  # the floor's calls are cleared before each sweep
    timed(adapter.CachedTail, "tail")
    print(
        "| repeat | floor s | sweep s | sweep / floor | head s (/ floor) | tail s (/ floor) | bookkeeping s (/ floor) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
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
        cells = " | ".join(f"{v:.2f} ({v / floor:.2f})" for v in (head, tail, rest))
        print(f"| {repeat} | {floor:.2f} | {sweep:.2f} | {sweep / floor:.2f} | {cells} |", flush=True)
    print()
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print("command: python benchmarks/sweep_breakdown.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
