"""
The field's repairs for networks with normalised channels, each as a defence of its own and a GoodNet over it:

``clp``
    Lipschitz pruning (Zheng et al., ECCV 2022): :class:`~art_pruning_defense.FinePruning` with
    ``strategy="lipschitz"``, fitted without data, B' at the paper's threshold (u = 3).
``anp``
    Adversarial neuron pruning (Wu and Wang, NeurIPS 2021): ``strategy="adversarial"`` on the defender's clean
    split, B' at the paper's mask threshold (0.2).
``fst``
    Feature-shift tuning alone (Min et al., NeurIPS 2023): B fine-tuned with its head re-initialised and pushed away
    from B's, no channel pruned, at the paper's settings (10 epochs, learning rate 0.01, batches of 128).

Each GoodNet row carries the AUROC and TPR at 1 % FPR of the GoodNet score on the test inputs.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from art_pruning_defense.benchmark.defences import register
from art_pruning_defense.benchmark.defences.base import Run, make_row, without_flags
from art_pruning_defense.fine_pruning import FinePruning
from art_pruning_defense.goodnet import GoodNetClassifier

if TYPE_CHECKING:
    import keras

#: FST's published settings (epochs, learning rate, batch size).
FST_EPOCHS, FST_LEARNING_RATE, FST_BATCH_SIZE = 10, 0.01, 128


def _rows(run: Run, name: str, repaired: "keras.Model", start: float, note: str) -> list[dict]:
    """
    :return: The repaired model's row and its GoodNet's row, with the training-set detection rates of the pair.
    """
    goodnet = GoodNetClassifier.from_classifier(run.classifier, repaired, metadata={"method": name})
    metrics, scored = run.evaluate_scored(goodnet)
    evaluated = time.perf_counter() - start
    goodnet_row = make_row(
        f"{name} GoodNet",
        evaluated,
        note=f"B and the repaired B' side by side; {note}",
        **metrics["GoodNet"],
        **scored.detection(),
    )
    tpr, fpr, auroc = run.detection_rates(repaired)
    row = make_row(
        name,
        time.perf_counter() - start,
        poison_detection_tpr=tpr,
        poison_detection_fpr=fpr,
        poison_detection_auroc=auroc,
        note=note,
        retune=run.retune(repaired),
        **without_flags(metrics["B'"]),
    )
    return [row, goodnet_row]


def _own_cut(defence: FinePruning) -> str:
    """
    :return: How many conv channels the strategy's own cut prunes, of how many, in words.
    """
    pruned = sum(len(channels) for channels in defence.pruned_channels(None).values())
    return f"{pruned} of {sum(p.n_channels for p in defence.prune_points)} conv channels pruned"


def _pair(name: str) -> Callable:
    return lambda config: [name, f"{name} GoodNet"]


@register("clp", "Lipschitz pruning (CLP, data-free), alone and as GoodNet", _pair("clp"))
def _clp(run: Run) -> list[dict]:
    start = time.perf_counter()
    defence = run.fine_pruning(strategy="lipschitz", fine_tune_epochs=0)
    defence.fit()
    pruned = defence.pruned_model(None)
    note = f"{_own_cut(defence)} at u = {defence.lipschitz_threshold:g}, no data"
    return _rows(run, "clp", pruned, start, note)


@register("anp", "adversarial neuron pruning (ANP) on the clean split, alone and as GoodNet", _pair("anp"))
def _anp(run: Run) -> list[dict]:
    start = time.perf_counter()
    data = run.data
    defence = run.fine_pruning(strategy="adversarial", fine_tune_epochs=0)
    defence.fit(data.x_valid, data.y_valid)
    pruned = defence.pruned_model(None)
    note = (
        f"{_own_cut(defence)} (mask < {defence.adversarial_threshold:g}, "
        f"{defence.adversarial_iterations} iterations on {len(data.x_valid)} clean images)"
    )
    return _rows(run, "anp", pruned, start, note)


@register("fst", "feature-shift tuning (FST) alone on the clean split, and as GoodNet", _pair("fst"))
def _fst(run: Run) -> list[dict]:
    from art_pruning_defense.keras import feature_shift_tune

    start = time.perf_counter()
    data = run.data
    tuned = feature_shift_tune(
        run.model,
        data.x_valid,
        data.y_valid,
        epochs=FST_EPOCHS,
        learning_rate=FST_LEARNING_RATE,
        batch_size=FST_BATCH_SIZE,
        seed=run.config.seed,
    )
    note = f"{FST_EPOCHS} epochs at {FST_LEARNING_RATE:g}, batches of {FST_BATCH_SIZE}, on {len(data.x_valid)} images"
    return _rows(run, "fst", tuned, start, note)
