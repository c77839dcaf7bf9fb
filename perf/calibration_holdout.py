"""
What the calibration split buys and costs, on one benchmark cell per seed (the benchmark's data, BadNet and
fine-pruning settings; B from the model cache):

    python perf/calibration_holdout.py --data ../shared/data/mnist.npz --seeds 0 1 2 --fractions 0.3

For each seed, FinePruning is fitted once on the whole clean validation split (as before the split: the GoodNet
calibrated on the images that also fine-tuned B') and once per fraction (calibrated on the held-out part only). Each
line gives the fine-pruned B''s clean test accuracy (the cost of holding images out) and, at 1 % and 5 %, the share
of clean test images flagged (the realised false-alarm rate; target [0.5 α, 1.5 α]) and of triggered ones, beside
the 95 % band of the conformal rate for the number of calibration images.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from art_pruning_defense import _metrics
from art_pruning_defense.benchmark.cache import cached_badnet, default_cache_dir
from art_pruning_defense.benchmark.config import BenchmarkConfig
from art_pruning_defense.benchmark.data import load_benchmark_data
from art_pruning_defense.benchmark.defences.base import CALIBRATION_RATES
from art_pruning_defense.benchmark.training import train_badnet
from art_pruning_defense.fine_pruning import FinePruning


def measure(config: BenchmarkConfig, fractions: list[float], cache: str) -> list[str]:
    """
    :return: One line per fit: seed, fraction, clean accuracy, and per rate the realised clean and triggered flags.
    """
    config = config.resolved()
    data = load_benchmark_data(config)
    classifier, _ = cached_badnet(data, config, cache, train=train_badnet)
    lines = []
    for fraction in [None, *fractions]:
        defence = FinePruning(
            classifier,
            accuracy_drops=config.accuracy_drops,
            batch_size=config.predict_batch_size,
            fine_tune_epochs=config.fine_tune_epochs,
            seed=config.seed,
            verbose=False,
            calibration_fraction=fraction,
        )
        defence.fit(data.x_valid, data.y_valid)
        goodnet = defence(classifier)
        batch = config.predict_batch_size
        _, pruned, clean = goodnet.labels_and_scores(data.x_test, batch)
        triggered = goodnet.labels_and_scores(data.x_test_poisoned, batch)[2]
        accuracy = 100.0 * np.mean(pruned == data.y_test)
        calibration = data.x_valid if fraction is None else data.x_valid[defence.calibration_indices_]
        parts = [f"seed {config.seed}", f"fraction {fraction or 0:g}", f"B' clean acc {accuracy:.2f} %"]
        for rate in CALIBRATION_RATES:
            threshold = goodnet.calibrate(calibration, rate, batch_size=batch)
            low, high = _metrics.conformal_band(len(calibration), rate)
            parts.append(
                f"α {100 * rate:g} %: clean flagged {100 * np.mean(clean > threshold):.2f} % (band "
                f"[{100 * low:.2f}, {100 * high:.2f}] on n={len(calibration)}), triggered flagged "
                f"{100 * np.mean(triggered > threshold):.2f} %"
            )
        lines.append("; ".join(parts))
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.3])
    parser.add_argument("--model-cache", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for seed in args.seeds:
        config = BenchmarkConfig(data=args.data, attack="badnets", seed=seed, defences=("fine-pruning",))
        measure(config, args.fractions, args.model_cache or default_cache_dir())


if __name__ == "__main__":
    main()
