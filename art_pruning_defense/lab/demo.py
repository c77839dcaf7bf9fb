"""
The embedded default job: train a BadNet on scikit-learn's digits with ART's backdoor attack, repair it with
:class:`~art_pruning_defense.FinePruning`, and measure B, B'(X) and GoodNet(X) on clean and triggered test data.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

from art.estimators.classification import KerasClassifier

from art_pruning_defense.lab.digits import BadNetData, digits_badnet_data
from art_pruning_defense.fine_pruning import RECOMMENDED_FINE_TUNE_EPOCHS, FinePruning
from art_pruning_defense.keras import mnist_cnn, seed_everything, train

logger = logging.getLogger(__name__)

#: Columns of the demo table: (key, header).
DEMO_COLUMNS = (
    ("model", "model"),
    ("channels_pruned", "channels pruned"),
    ("clean_accuracy", "clean accuracy %"),
    ("attack_success_rate", "attack success %"),
    ("poisoned_flagged", "poisoned flagged %"),
    ("clean_flagged", "clean flagged %"),
)


def train_digits_badnet(data: BadNetData, epochs: int = 30, seed: int = 0, verbose: bool = False) -> KerasClassifier:
    """
    :param data: The poisoned digits data.
    :param epochs: Training epochs.
    :param seed: Seed.
    :param verbose: Show Keras's progress bar.
    :return: The BadNet B (the CNN of ART's poisoning examples), wrapped as an ART ``KerasClassifier`` (inputs in
             [0, 1]).
    """
    seed_everything(seed)  # the initial weights too
    model = mnist_cnn(data.x_train.shape[1:], data.n_classes)
    train(model, data.x_train, data.y_train, epochs=epochs, batch_size=32, seed=seed, verbose=verbose)
    return KerasClassifier(model, clip_values=(0.0, 1.0))


def run_demo(
    accuracy_drops: Sequence[float] = (2.0, 4.0, 10.0),
    epochs: int = 30,
    fine_tune_epochs: int = RECOMMENDED_FINE_TUNE_EPOCHS,
    seed: int = 0,
    verbose: bool = True,
) -> list[dict]:
    """
    :param accuracy_drops: The X values.
    :param epochs: Training epochs of the BadNet.
    :param fine_tune_epochs: Epochs of fine-pruning (0 to show pruning only).
    :param seed: Seed for the data split, the poisoning and the training.
    :param verbose: Show progress bars.
    :return: Table rows: B, then B'(X) and GoodNet(X) for each X, then the fine-pruned B' and its GoodNet, all
             measured on the test data.
    """
    start = time.perf_counter()
    data = digits_badnet_data(seed=seed)
    classifier = train_digits_badnet(data, epochs=epochs, seed=seed)
    logger.info("Trained the digits BadNet in %.1f s.", time.perf_counter() - start)

    defence = FinePruning(
        classifier, accuracy_drops=accuracy_drops, fine_tune_epochs=fine_tune_epochs, seed=seed, verbose=verbose
    )
    defence.fit(data.x_valid, data.y_valid)
    rows = []
    for drop in defence.accuracy_drops:
        goodnet = defence(classifier, accuracy_drop=drop)
        metrics = goodnet.evaluate(data.x_test, data.y_test, data.x_test_poisoned, data.target)
        if not rows:
            rows.append({"model": "B (BadNet)", "channels_pruned": 0, **metrics["B"]})
        n_pruned = len(defence.pruned_channels(drop))
        rows.append({"model": f"B'(X={drop:g})", "channels_pruned": n_pruned, **metrics["B'"]})
        rows.append({"model": f"GoodNet(X={drop:g})", "channels_pruned": n_pruned, **metrics["GoodNet"]})
    if defence.fine_tune_ is not None:
        metrics = defence(classifier).evaluate(data.x_test, data.y_test, data.x_test_poisoned, data.target)
        n_pruned = defence.fine_tune_["channels_pruned"]
        rows.append({"model": "B' fine-pruned", "channels_pruned": n_pruned, **metrics["B'"]})
        rows.append({"model": "GoodNet fine-pruned", "channels_pruned": n_pruned, **metrics["GoodNet"]})
    logger.info("Demo finished in %.1f s.", time.perf_counter() - start)
    return rows
