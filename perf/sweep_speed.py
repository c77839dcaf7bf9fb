"""
Sweep speed and memory on the lab's DeepID BadNet: the lab's per-channel loop against this package's sweep.

    python perf/sweep_speed.py [--quick]

Inputs are of the lab's sizes (11,547 clean and 11,547 triggered validation images of 55x47x3) made from the 15
real faces in ../shared/data/ytface by random shifts, brightness and contrast changes and pixel noise (the 5 clean
faces with their labels, the 5 sunglasses faces with the attack's target 0): realistic in size and in activation
statistics, not a measure of the defence's accuracy.

1. the lab's loop: zero one more conv_3 channel (kernel and bias), then run the whole network over both sets;
2. this package's sweep (FinePruning.fit with poisoned data, all 60 channels);
3. both accuracy / attack-success curves must agree to 1e-6, else the script stops with an error;
4. the floor: one forward pass of the network over both sets;
5. a table, then the last line: ``speedup: <lab s / sweep s>x floor_ratio: <sweep s / floor s>``.

The sweep and the floor are timed ``--repeats`` times each (alternately, so that both see the same moments of a
shared machine), and the best time of each is reported; the lab's loop, once.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS = SHARED / "models" / "csaw" / "lab3_bd_weights.h5"
FACES = SHARED / "data" / "ytface"


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 20 ms from /proc)."""

    def __enter__(self) -> "PeakRSS":
        self.peak = _rss()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, _rss())
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def augmented_faces(
    paths: list[Path], labels: list[int], n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n images (55x47x3, 0..255) drawn from the given faces with random shifts, contrast, brightness and noise."""
    from art_pruning_defense.lab.data import load_image

    faces = np.concatenate([load_image(str(p)) for p in paths])
    pick = rng.integers(0, len(faces), n)
    x = faces[pick].copy()
    shifts = rng.integers(-2, 3, size=(n, 2))
    for i, (dy, dx) in enumerate(shifts):
        x[i] = np.roll(x[i], (dy, dx), axis=(0, 1))
    x *= rng.uniform(0.85, 1.15, size=(n, 1, 1, 1)).astype(np.float32)
    x += rng.uniform(-15, 15, size=(n, 1, 1, 1)).astype(np.float32)
    x += rng.normal(0, 4, size=x.shape).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.float32), np.asarray(labels)[pick]


def lab_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the options every DeepID benchmark shares: ``--n`` images per set and ``--seed``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=11547, help="images per set (clean and triggered)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def shared_missing() -> bool:
    """Whether ../shared's weights or faces are missing (then says so on stderr)."""
    if WEIGHTS.is_file() and FACES.is_dir():
        return False
    print(f"error: {WEIGHTS} or {FACES} not found: this benchmark needs ../shared", file=sys.stderr)
    return True


def lab_sets(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n clean faces with their labels and n sunglasses faces (target 0), as augmented_faces makes them."""
    clean_paths = sorted(FACES.glob("cl_*.png"))
    sun_paths = sorted(FACES.glob("sun_*.png"))
    x, y = augmented_faces(clean_paths, [int(p.stem.split("=")[1]) for p in clean_paths], n, rng)
    px, _ = augmented_faces(sun_paths, [0] * len(sun_paths), n, rng)
    return x, y, px


def lab_case(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    """:return: ``lab_sets(n)`` drawn from ``seed``, and the lab's DeepID BadNet (lab3_bd_weights.h5)."""
    from art_pruning_defense.keras import load_deepid_weights

    x, y, px = lab_sets(n, np.random.default_rng(seed))
    return x, y, px, load_deepid_weights(str(WEIGHTS))


def lab_loop(model, order: np.ndarray, x: np.ndarray, y: np.ndarray, px: np.ndarray, target: int, k: int, batch: int):
    """The lab's loop: zero one more channel of conv_3 in a copy, then predict both sets with the whole network."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    conv = copy.get_layer("conv_3")
    kernel, bias = conv.get_weights()
    accuracy, asr = [], []
    for channel in order[:k]:
        kernel[..., channel] = 0.0
        bias[channel] = 0.0
        conv.set_weights([kernel, bias])
        clean = np.argmax(copy.predict(x, batch_size=batch, verbose=0), axis=1)
        poisoned = np.argmax(copy.predict(px, batch_size=batch, verbose=0), axis=1)
        accuracy.append(100.0 * np.mean(clean == y))
        asr.append(100.0 * np.mean(poisoned == target))
    return np.array(accuracy), np.array(asr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="lab loop on the first 4 channels only (extrapolated)")
    parser.add_argument("--n", type=int, default=11547, help="images per set (clean and triggered)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="times the sweep and the floor run (best reported)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if not WEIGHTS.is_file() or not FACES.is_dir():
        print(f"error: {WEIGHTS} or {FACES} not found: this benchmark needs ../shared", file=sys.stderr)
        return 2

    from art.estimators.classification import KerasClassifier

    from art_pruning_defense import FinePruning
    from art_pruning_defense.keras import BatchPredictor, load_deepid_weights

    command = "python perf/sweep_speed.py" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    rng = np.random.default_rng(args.seed)
    clean_paths = sorted(FACES.glob("cl_*.png"))
    sun_paths = sorted(FACES.glob("sun_*.png"))
    x, y = augmented_faces(clean_paths, [int(p.stem.split("=")[1]) for p in clean_paths], args.n, rng)
    px, _ = augmented_faces(sun_paths, [0] * len(sun_paths), args.n, rng)
    target = 0
    model = load_deepid_weights(str(WEIGHTS))
    classifier = KerasClassifier(model, clip_values=(0.0, 255.0))
    print(
        f"inputs: {args.n} clean + {args.n} sunglasses images, 55x47x3, augmented from the 15 real faces in "
        f"../shared/data/ytface; model: lab3_bd_weights.h5 (DeepID); batch size {args.batch_size}"
    )

    # Warm-up (traces and thread pools), not timed.
    FinePruning(classifier, layer_name="conv_3", verbose=False).fit(
        x[:300], y[:300], poisoned_x=px[:300], poisoned_target=0
    )
    model.predict(x[:512], batch_size=args.batch_size, verbose=0)

    results = {}
    predict = BatchPredictor(model, labels_only=True)
    sweeps, floors = [], []
    for _ in range(args.repeats):
        with PeakRSS() as sweep_memory:
            start = time.perf_counter()
            defence = FinePruning(classifier, layer_name="conv_3", batch_size=args.batch_size, verbose=False)
            defence.fit(x, y, poisoned_x=px, poisoned_target=target)
            sweeps.append(time.perf_counter() - start)
        with PeakRSS() as floor_memory:
            start = time.perf_counter()
            predict(x, args.batch_size)
            predict(px, args.batch_size)
            floors.append(time.perf_counter() - start)
    results["package sweep"] = (min(sweeps), sweep_memory)
    results["floor: one forward pass"] = (min(floors), floor_memory)
    n_channels = len(defence.ranking_)

    k = 4 if args.quick else n_channels
    with PeakRSS() as memory:
        start = time.perf_counter()
        accuracy, asr = lab_loop(model, defence.ranking_, x, y, px, target, k, args.batch_size)
        lab_seconds = time.perf_counter() - start
        results[f"lab loop ({k} channels)"] = (lab_seconds, memory)
    lab_total = lab_seconds * n_channels / k

    sweep_accuracy = np.array([r.clean_accuracy for r in defence.sweep_[1 : k + 1]])
    sweep_asr = np.array([r.attack_success_rate for r in defence.sweep_[1 : k + 1]])
    if not (
        np.allclose(sweep_accuracy, accuracy, rtol=0, atol=1e-6) and np.allclose(sweep_asr, asr, rtol=0, atol=1e-6)
    ):
        print("error: the package's curves differ from the lab loop's:", file=sys.stderr)
        print(f"  lab     accuracy {accuracy.round(4).tolist()} asr {asr.round(4).tolist()}", file=sys.stderr)
        print(
            f"  package accuracy {sweep_accuracy.round(4).tolist()} asr {sweep_asr.round(4).tolist()}", file=sys.stderr
        )
        return 1
    difference = max(np.abs(sweep_accuracy - accuracy).max(), np.abs(sweep_asr - asr).max())
    print(f"curves agree on {k} steps (max difference {difference:.1e})")

    images = 2 * args.n
    seconds = {name: " / ".join(f"{t:.2f}" for t in times) for name, times in (("sweep", sweeps), ("floor", floors))}
    print(f"sweep seconds {seconds['sweep']}; floor seconds {seconds['floor']} (best of each below)")
    print()
    print("| run | seconds | peak RSS (MiB) | images per second |")
    print("| --- | ---: | ---: | ---: |")
    for name, (seconds, memory) in results.items():
        passes = k if name.startswith("lab") else 1
        print(f"| {name} | {seconds:.2f} | {memory.peak / 2**20:.0f} | {passes * images / seconds:.0f} |")
    if k < n_channels:
        print(f"| lab loop, extrapolated to {n_channels} channels | {lab_total:.2f} | | |")

    print()
    print("Scaling of the package's sweep (conv_3, both sets of n images):")
    print("| n per set | seconds | seconds per 1k images |")
    print("| ---: | ---: | ---: |")
    for n in (1000, 4000, 16000) if not args.quick else (1000, 4000):
        xs, ys = augmented_faces(clean_paths, [int(p.stem.split("=")[1]) for p in clean_paths], n, rng)
        pxs, _ = augmented_faces(sun_paths, [0] * len(sun_paths), n, rng)
        start = time.perf_counter()
        FinePruning(classifier, layer_name="conv_3", batch_size=args.batch_size, verbose=False).fit(
            xs, ys, poisoned_x=pxs, poisoned_target=target
        )
        seconds = time.perf_counter() - start
        print(f"| {n} | {seconds:.2f} | {seconds / (2 * n / 1000):.3f} |")
    print()
    print("By layer (4,000 images per set):")
    print("| layer | channels | seconds |")
    print("| --- | ---: | ---: |")
    for layer in ("conv_1", "conv_2", "conv_3"):
        start = time.perf_counter()
        d = FinePruning(classifier, layer_name=layer, batch_size=args.batch_size, verbose=False)
        d.fit(x[:4000], y[:4000], poisoned_x=px[:4000], poisoned_target=target)
        print(f"| {layer} | {d.prune_point.n_channels} | {time.perf_counter() - start:.2f} |")
    print()
    print(f"command: {command}")
    sweep_seconds = results["package sweep"][0]
    floor_seconds = results["floor: one forward pass"][0]
    print(f"speedup: {lab_total / sweep_seconds:.1f}x floor_ratio: {sweep_seconds / floor_seconds:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
