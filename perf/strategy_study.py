"""
Strategy × fine-tuning on one benchmark cell per seed (the benchmark's data and BadNet; B from the model cache, or
trained and cached):

    python perf/strategy_study.py --data ../shared/data/cifar10.npz --arch resnet20 --n-valid 2000 \\
        --attack badnets --seeds 0 1 --settings activation+feature-shift lipschitz+plain

Each setting fine-prunes B with one ranking strategy and one fine-tuning objective, on the whole clean validation
split, and prints one line: clean accuracy and attack success of the fine-pruned B' on the test sets, the channels
pruned and the seconds. The benchmark's own rows (``fine-pruning``, ``clp``, ``anp``, ``fst``) cover the package's
defaults and the strategies' own cuts; this script covers the combinations between them.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from art_pruning_defense.lab import quiet

quiet()  # before TensorFlow loads: no start-up noise

from art_pruning_defense.benchmark.cache import cached_badnet, default_cache_dir
from art_pruning_defense.benchmark.config import BenchmarkConfig
from art_pruning_defense.benchmark.data import load_benchmark_data
from art_pruning_defense.benchmark.training import train_badnet
from art_pruning_defense.fine_pruning import RECOMMENDED_FINE_TUNE_EPOCHS, FinePruning

#: FST's published recipe (Min et al. 2023): learning rate 0.01, batches of 128.
FEATURE_SHIFT = {"fine_tune_mode": "feature-shift", "fine_tune_learning_rate": 0.01, "fine_tune_batch_size": 128}

#: The settings: ranking strategy + fine-tuning objective, as FinePruning parameters.
SETTINGS: dict[str, dict] = {
    "activation+plain": {"strategy": "activation"},
    "activation+feature-shift": {"strategy": "activation", **FEATURE_SHIFT},
    "lipschitz+plain": {"strategy": "lipschitz"},
    "lipschitz+feature-shift": {"strategy": "lipschitz", **FEATURE_SHIFT, "fine_tune_epochs": 10},
    "adversarial+feature-shift": {"strategy": "adversarial", **FEATURE_SHIFT, "fine_tune_epochs": 10},
    # Random shifts (fine_tune_augment): the augmentation ResNet-20 was trained with, against the clean cost of tuning
    # on 2,000 images.
    "activation+feature-shift+shifts": {"strategy": "activation", **FEATURE_SHIFT, "fine_tune_augment": True},
}


def measure(config: BenchmarkConfig, settings: list[str], cache: str | None) -> list[dict]:
    """
    :return: One record per setting: its name, the seed, B's and B''s clean accuracy and attack success (test), the
             channels pruned and the seconds of the fit.
    """
    config = config.resolved()
    data = load_benchmark_data(config)
    classifier, _ = cached_badnet(data, config, cache, train=train_badnet)
    batch = config.predict_batch_size

    def rates(model) -> tuple[float, float]:
        clean = np.argmax(model.predict(data.x_test, batch_size=batch, verbose=0), axis=1)
        triggered = np.argmax(model.predict(data.x_test_poisoned, batch_size=batch, verbose=0), axis=1)
        return round(100.0 * float(np.mean(clean == data.y_test)), 2), round(
            100.0 * float(np.mean(triggered == data.target)), 2
        )

    base = rates(classifier.model)
    records = []
    for name in settings:
        params = {
            "accuracy_drops": config.accuracy_drops,
            "batch_size": batch,
            "fine_tune_epochs": RECOMMENDED_FINE_TUNE_EPOCHS,
            "seed": config.seed,
            "verbose": False,
            **SETTINGS[name],
        }
        start = time.perf_counter()
        defence = FinePruning(classifier, **params)
        defence.fit(data.x_valid, data.y_valid)
        seconds = time.perf_counter() - start
        clean, asr = rates(defence.fine_pruned_model())
        records.append(
            {
                "setting": name,
                "seed": config.seed,
                "B": {"clean": base[0], "asr": base[1]},
                "repaired": {"clean": clean, "asr": asr},
                "channels_pruned": int(defence.fine_tune_["channels_pruned"]),
                "seconds": round(seconds, 1),
            }
        )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--arch", default="small-cnn")
    parser.add_argument("--attack", default="badnets")
    parser.add_argument("--poison-rate", type=float, default=0.1)
    parser.add_argument("--n-valid", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=sorted(SETTINGS))
    parser.add_argument("--model-cache", default=default_cache_dir())
    args = parser.parse_args()
    for seed in args.seeds:
        config = BenchmarkConfig(
            data=args.data,
            arch=args.arch,
            attack=args.attack,
            poison_rate=args.poison_rate,
            seed=seed,
            n_valid=args.n_valid,
        )
        for record in measure(config, args.settings, args.model_cache):
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
