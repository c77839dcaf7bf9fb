"""
Running the benchmark: one cell is one BadNet (data, architecture, attack, poison rate, seed) and every selected
defence on it (:func:`run_benchmark`).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from tqdm.auto import tqdm

from art_pruning_defense.benchmark.config import BenchmarkConfig
from art_pruning_defense.benchmark.data import load_benchmark_data
from art_pruning_defense.benchmark.defences import DEFENCES
from art_pruning_defense.benchmark.defences._common import _row, _Run
from art_pruning_defense.benchmark.training import train_badnet
from art_pruning_defense.keras import seed_everything

logger = logging.getLogger(__name__)


def run_benchmark(config: BenchmarkConfig, verbose: bool = True) -> list[dict]:
    """
    Poison the data, train the BadNet and measure every selected defence on it.

    A defence that raises does not end the benchmark: its rows keep ``None`` figures and an ``error`` message.

    :param config: What to run.
    :param verbose: Show a progress bar over the defences (and ART's own bars).
    :return: One row per measured model, in registry order, with the keys of :data:`ROW_KEYS`: ``defence``;
             ``clean_accuracy`` and ``attack_success_rate`` on the test data (percent); ``poison_detection_tpr`` and
             ``poison_detection_fpr`` (percent of poisoned, resp. clean, training samples flagged; ``None`` for
             defences that do not filter the training set); ``poisoned_flagged`` and ``clean_flagged`` (percent of
             triggered, resp. clean, test inputs flagged or abstained on; ``None`` for defences that never flag);
             ``seconds`` (wall time of this defence alone, from the trained BadNet to its figures; work shared
             between rows of one defence is counted in each); ``note``; ``error``.
    """
    if not isinstance(config, BenchmarkConfig):
        raise TypeError(f"config must be a BenchmarkConfig, got {type(config).__name__}.")
    if not isinstance(verbose, bool):
        raise TypeError(f"verbose must be a bool, got {type(verbose).__name__}.")
    config = config.resolved()
    started = time.perf_counter()
    data = load_benchmark_data(config)
    logger.info(
        "Data: %d training images (%d poisoned, target %d, %s trigger), %d clean validation, %d test.",
        len(data.x_train),
        int(np.count_nonzero(data.is_poison_train)),
        data.target,
        config.trigger,
        len(data.x_valid),
        len(data.x_test),
    )
    begin = time.perf_counter()
    classifier = train_badnet(data.x_train, data.y_train, data.n_classes, config)
    logger.info("Trained the BadNet (%d epochs) in %.1f s.", config.epochs, time.perf_counter() - begin)
    run = _Run(config=config, data=data, classifier=classifier, verbose=verbose)
    begin = time.perf_counter()
    for name in ("test", "test_poisoned", "train"):
        run.bad_labels(name)  # shared by the defences: counted in none of their rows
    logger.info("Predicted B's labels on the test and training sets in %.1f s.", time.perf_counter() - begin)

    rows: list[dict] = []
    selected = [DEFENCES[name] for name in DEFENCES if name in config.defences]
    progress = tqdm(selected, desc="Benchmark", unit="defence", disable=not verbose)
    with progress:
        for defence in progress:
            progress.set_postfix_str(defence.name)
            logger.info("Running %s: %s.", defence.name, defence.description)
            seed_everything(config.seed)
            begin = time.perf_counter()
            try:
                new_rows = defence.run(run)
            except Exception as error:  # record the failure of one defence, go on with the others
                logger.warning("%s failed: %s: %s", defence.name, type(error).__name__, error, exc_info=True)
                seconds = time.perf_counter() - begin
                message = f"{type(error).__name__}: {error}"
                new_rows = [_row(name, seconds, error=message) for name in defence.row_names(config)]
            for row in new_rows:
                logger.info(
                    "%s: clean accuracy %s, attack success rate %s%s.",
                    row["defence"],
                    _percent_text(row["clean_accuracy"]),
                    _percent_text(row["attack_success_rate"]),
                    f" (error: {row['error']})" if row["error"] else "",
                )
            rows.extend(new_rows)
    logger.info("Benchmark finished in %.1f s.", time.perf_counter() - started)
    return rows


def _percent_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"
