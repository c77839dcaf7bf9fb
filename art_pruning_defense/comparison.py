"""
The comparative benchmark: one BadNet, every defence, one table.

A training set is poisoned with ART's ``PoisoningAttackBackdoor``, a CNN (the BadNet) is trained on it, and a clean
validation split is kept for the defender. Then, on the same BadNet: no defence; pruning at X = 2, 4, 10 (B' and
GoodNet); fine-pruning; attack-aware pruning and fine-pruning (these assume the defender holds triggered
validation samples); ART's ActivationDefence and SpectralSignatureDefense (flagged samples removed, then a fresh
CNN retrained as a user would); ART's NeuralCleanse with each of its mitigations; ART's STRIP.

Each row: ``defence``, ``clean_accuracy`` and ``attack_success_rate`` on the test set (percent; an abstention or a
flag counts as neither correct nor the target), ``poison_detection_tpr`` / ``poison_detection_fpr`` (percent of
poisoned / clean training samples flagged, for defences that filter the training set), ``poisoned_flagged`` /
``clean_flagged`` (percent of triggered / clean test inputs flagged or abstained on, for test-time defences),
``seconds`` (that defence alone), and ``error`` where an ART defence raised.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from art_pruning_defense import reports
from art_pruning_defense._io import atomic_directory
from art_pruning_defense.badnet import BadNetData, digits_badnet_data, make_badnet_data
from art_pruning_defense.fine_pruning import RECOMMENDED_FINE_TUNE_EPOCHS, FinePruning

logger = logging.getLogger(__name__)

#: Activation cache of the benchmark's FinePruning runs (2 GiB).
ATTACK_AWARE_CACHE_BYTES = 2 * 2**30

#: Columns of the results table: (key, header).
RESULT_COLUMNS = (
    ("defence", "defence"),
    ("clean_accuracy", "clean accuracy %"),
    ("attack_success_rate", "attack success %"),
    ("poison_detection_tpr", "poison detection TPR %"),
    ("poison_detection_fpr", "poison detection FPR %"),
    ("poisoned_flagged", "triggered test flagged %"),
    ("clean_flagged", "clean test flagged %"),
    ("seconds", "seconds"),
)


@dataclass
class BenchmarkConfig:
    """
    :param data: ``"digits"`` (scikit-learn's, bundled) or the path of an npz with ``x_train, y_train, x_test,
           y_test`` (images, uint8 0..255 or floats in [0, 1]).
    :param poison_rate: Share of the training set poisoned.
    :param trigger: ``"pattern"`` (``add_pattern_bd``) or ``"pixel"`` (``add_single_bd``).
    :param target: The attack's target class.
    :param seed: Seed of the split, the poisoning, the training and the defences.
    :param n_valid: Size of the defender's clean validation split (default 300 for digits, 5,000 otherwise).
    :param epochs: Training epochs of the BadNet and of every retrained CNN (default 30 for digits, 3 otherwise).
    :param defences: Names of the defences to run (default: all, see ``DEFENCES``).
    :param neural_cleanse_steps: Optimisation steps per class of NeuralCleanse's trigger reverse-engineering. ART's
           default is 1,000, and each step runs over all the data given to it: on 2 CPU cores, 300 steps over 300
           digits took 290 s. 100 steps over ``neural_cleanse_samples`` validation images keeps MNIST within the
           time budget (ART's early stopping stays on).
    :param neural_cleanse_samples: Clean validation images given to NeuralCleanse (the first ones of the split).
    :param strip_samples: Perturbations per input for STRIP (ART's default, 20).
    """

    data: str = "digits"
    poison_rate: float = 0.1
    trigger: str = "pattern"
    target: int = 0
    seed: int = 0
    n_valid: int | None = None
    epochs: int | None = None
    defences: Sequence[str] | None = None
    neural_cleanse_steps: int = 100
    neural_cleanse_samples: int = 200
    strip_samples: int = 20


@dataclass
class _Context:
    config: BenchmarkConfig
    data: BadNetData
    classifier: object
    epochs: int
    batch_size: int
    shared: dict = field(default_factory=dict)


def load_npz_images(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """
    :param path: An npz with ``x_train, y_train, x_test, y_test``.
    :return: The images as float32 in [0, 1] with a channel axis, and integer labels.
    """
    from art_pruning_defense.data import load_npz

    arrays = load_npz(path)
    out = []
    for key in ("x_train", "x_test"):
        x = np.asarray(arrays[key])
        if x.ndim == 3:
            x = x[..., np.newaxis]
        if x.ndim != 4:
            raise ValueError(f"{path}: {key} must hold images (n, h, w) or (n, h, w, c), got shape {x.shape}.")
        x = x.astype(np.float32)
        if x.max() > 1.0:
            x = x / 255.0
        out.append(x)
    return out[0], np.asarray(arrays["y_train"]).astype(np.int64), out[1], np.asarray(arrays["y_test"]).astype(np.int64)


def _train_cnn(x: np.ndarray, y: np.ndarray, ctx: _Context):
    from art.estimators.classification import KerasClassifier

    from art_pruning_defense.keras import mnist_cnn, seed_everything, train

    seed_everything(ctx.config.seed)  # the initial weights too
    model = mnist_cnn(x.shape[1:], ctx.data.n_classes)
    train(model, x, y, epochs=ctx.epochs, batch_size=ctx.batch_size, seed=ctx.config.seed)
    return KerasClassifier(model, clip_values=(0.0, 1.0))


def _labels(predictions: np.ndarray) -> np.ndarray:
    """Argmax labels, -1 where a defence abstained (an all-zero row)."""
    labels = np.argmax(predictions, axis=1)
    labels[~np.any(predictions != 0, axis=1)] = -1
    return labels


def _test_row(name: str, ctx: _Context, clean: np.ndarray, poisoned: np.ndarray, flag: int | None = None) -> dict:
    """
    :param clean: Labels on the clean test set (-1 or ``flag`` for flagged).
    :param poisoned: Labels on the triggered test set.
    :param flag: The label that means "flagged" (GoodNet's class N), if any.
    """
    data = ctx.data
    row = {
        "defence": name,
        "clean_accuracy": 100.0 * float(np.mean(clean == data.y_test)),
        "attack_success_rate": 100.0 * float(np.mean(poisoned == data.target)),
        "poison_detection_tpr": None,
        "poison_detection_fpr": None,
        "poisoned_flagged": None,
        "clean_flagged": None,
    }
    flagged = [-1] if flag is None else [-1, flag]
    if np.any(np.isin(clean, flagged)) or np.any(np.isin(poisoned, flagged)) or flag is not None:
        row["poisoned_flagged"] = 100.0 * float(np.mean(np.isin(poisoned, flagged)))
        row["clean_flagged"] = 100.0 * float(np.mean(np.isin(clean, flagged)))
    return row


def _detection(ctx: _Context, is_clean: np.ndarray) -> dict:
    poison = ctx.data.is_poison_train
    flagged = np.asarray(is_clean) == 0
    return {
        "poison_detection_tpr": 100.0 * float(np.mean(flagged[poison])),
        "poison_detection_fpr": 100.0 * float(np.mean(flagged[~poison])),
    }


def _predict(classifier, x: np.ndarray) -> np.ndarray:
    return _labels(classifier.predict(x, batch_size=512))


# --------------------------------------------------------------------------------------------------- defences


def _no_defence(ctx: _Context) -> list[dict]:
    data = ctx.data
    return [
        _test_row(
            "no defence", ctx, _predict(ctx.classifier, data.x_test), _predict(ctx.classifier, data.x_test_poisoned)
        )
    ]


def _goodnet_rows(name: str, ctx: _Context, goodnet, with_bprime: bool = True) -> list[dict]:
    data = ctx.data
    bad_clean, pruned_clean = goodnet.predict_labels(data.x_test, 512)
    bad_poisoned, pruned_poisoned = goodnet.predict_labels(data.x_test_poisoned, 512)
    train_bad, train_pruned = goodnet.predict_labels(data.x_train, 512)
    detection = _detection(ctx, (train_bad == train_pruned).astype(int))
    n = goodnet.n_classes
    rows = []
    if with_bprime:
        rows.append({**_test_row(name, ctx, pruned_clean, pruned_poisoned), **detection})
    goodnet_clean = np.where(bad_clean == pruned_clean, bad_clean, n)
    goodnet_poisoned = np.where(bad_poisoned == pruned_poisoned, bad_poisoned, n)
    rows.append({**_test_row(f"{name} GoodNet", ctx, goodnet_clean, goodnet_poisoned, flag=n), **detection})
    return rows


def _pruning(ctx: _Context) -> list[dict]:
    data = ctx.data
    start = time.perf_counter()
    defence = FinePruning(ctx.classifier, accuracy_drops=(2, 4, 10), verbose=False)
    defence.fit(data.x_valid, data.y_valid)
    fit_seconds = time.perf_counter() - start
    rows = []
    for drop in (2, 4, 10):
        start = time.perf_counter()
        new = _goodnet_rows(f"pruning X={drop}", ctx, defence(ctx.classifier, accuracy_drop=drop))
        for row in new:
            row["seconds"] = fit_seconds + time.perf_counter() - start
        rows += new
    return rows


def _fine_pruning(ctx: _Context, strategy: str = "activation") -> list[dict]:
    data = ctx.data
    defence = FinePruning(
        ctx.classifier,
        strategy=strategy,
        accuracy_drops=(4,),
        fine_tune_epochs=RECOMMENDED_FINE_TUNE_EPOCHS,
        seed=ctx.config.seed,
        # The attack-aware strategy holds one layer's activations on clean and triggered data in memory: on MNIST,
        # conv_1's come to 0.8 GiB, above the 512 MiB default.
        max_cache_bytes=ATTACK_AWARE_CACHE_BYTES,
        verbose=False,
    )
    if strategy == "attack_aware":
        defence.fit(data.x_valid, data.y_valid, poisoned_x=data.x_valid_poisoned, poisoned_target=data.target)
        rows = _goodnet_rows("attack-aware pruning X=4", ctx, defence(ctx.classifier, accuracy_drop=4))
        return rows + _goodnet_rows("attack-aware fine-pruning", ctx, defence(ctx.classifier))
    defence.fit(data.x_valid, data.y_valid)
    return _goodnet_rows("fine-pruning", ctx, defence(ctx.classifier))


def _filter_and_retrain(name: str, ctx: _Context, detect: Callable[[], list[int]]) -> list[dict]:
    data = ctx.data
    is_clean = np.asarray(detect())
    keep = is_clean == 1
    logger.info("%s kept %d of %d training samples; retraining.", name, int(keep.sum()), len(keep))
    retrained = _train_cnn(data.x_train[keep], data.y_train[keep], ctx)
    row = _test_row(name, ctx, _predict(retrained, data.x_test), _predict(retrained, data.x_test_poisoned))
    return [{**row, **_detection(ctx, is_clean)}]


def _activation_clustering(ctx: _Context) -> list[dict]:
    from art.defences.detector.poison import ActivationDefence

    data = ctx.data
    onehot = np.eye(data.n_classes)[data.y_train]

    def detect() -> list[int]:
        defence = ActivationDefence(ctx.classifier, data.x_train, onehot)
        return defence.detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA")[1]

    return _filter_and_retrain("activation clustering", ctx, detect)


def _spectral_signatures(ctx: _Context) -> list[dict]:
    from art.defences.detector.poison import SpectralSignatureDefense

    data = ctx.data
    onehot = np.eye(data.n_classes)[data.y_train]

    def detect() -> list[int]:
        defence = SpectralSignatureDefense(
            ctx.classifier,
            data.x_train,
            onehot,
            batch_size=128,
            eps_multiplier=1.5,
            expected_pp_poison=ctx.config.poison_rate,
        )
        return defence.detect_poison()[1]

    return _filter_and_retrain("spectral signatures", ctx, detect)


def _neural_cleanse(ctx: _Context) -> list[dict]:
    import keras
    from art.defences.transformer.poisoning import NeuralCleanse
    from art.estimators.classification import KerasClassifier

    data = ctx.data
    x_val = data.x_valid[: ctx.config.neural_cleanse_samples]
    onehot = np.eye(data.n_classes)[data.y_valid[: ctx.config.neural_cleanse_samples]]
    rows = []
    examples = None
    for mitigation in ("filtering", "unlearning", "pruning"):
        start = time.perf_counter()
        # Mitigations change the model in place: each one starts from its own copy of B.
        model = keras.models.clone_model(ctx.classifier.model)
        model.set_weights(ctx.classifier.model.get_weights())
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        copy = KerasClassifier(model, clip_values=(0.0, 1.0))
        cleanse = NeuralCleanse(copy)(copy, steps=ctx.config.neural_cleanse_steps, batch_size=64)
        if examples is None:
            examples = cleanse.backdoor_examples(x_val, onehot)
            ctx.shared["nc_seconds"] = time.perf_counter() - start
            start = time.perf_counter()
        cleanse.backdoor_examples = lambda x, y, cached=examples: cached  # reverse-engineer the triggers once
        cleanse.mitigate(x_val, onehot, mitigation_types=[mitigation])
        row = _test_row(
            f"neural cleanse ({mitigation})",
            ctx,
            _predict(cleanse, data.x_test),
            _predict(cleanse, data.x_test_poisoned),
        )
        row["seconds"] = ctx.shared["nc_seconds"] + time.perf_counter() - start
        row["backdoors_found"] = len(examples[1])
        rows.append(row)
    return rows


def _strip(ctx: _Context) -> list[dict]:
    from art.defences.transformer.poisoning import STRIP

    data = ctx.data
    strip = STRIP(ctx.classifier)(num_samples=ctx.config.strip_samples)
    strip.mitigate(data.x_valid)
    return [_test_row("STRIP", ctx, _labels(strip.predict(data.x_test)), _labels(strip.predict(data.x_test_poisoned)))]


#: The defences by name, in table order.
DEFENCES: dict[str, Callable[[_Context], list[dict]]] = {
    "none": _no_defence,
    "pruning": _pruning,
    "fine-pruning": _fine_pruning,
    "attack-aware": lambda ctx: _fine_pruning(ctx, strategy="attack_aware"),
    "activation-clustering": _activation_clustering,
    "spectral-signatures": _spectral_signatures,
    "neural-cleanse": _neural_cleanse,
    "strip": _strip,
}


def run_benchmark(config: BenchmarkConfig, verbose: bool = True) -> list[dict]:
    """
    :param config: What to run.
    :param verbose: Show a progress bar over the defences.
    :return: One row per defence (see the module docstring).
    """
    from art_pruning_defense.keras import seed_everything

    names = list(DEFENCES) if config.defences is None else list(config.defences)
    unknown = [n for n in names if n not in DEFENCES]
    if unknown:
        raise ValueError(f"Unknown defences {unknown}; expected some of: {', '.join(DEFENCES)}.")
    digits = config.data == "digits"
    if digits:
        data = digits_badnet_data(config.poison_rate, config.target, config.trigger, config.seed)
        if config.n_valid is not None and config.n_valid != 300:
            logger.warning("The digits split keeps 300 validation images; n_valid=%d is ignored.", config.n_valid)
    else:
        x_train, y_train, x_test, y_test = load_npz_images(config.data)
        data = make_badnet_data(
            x_train,
            y_train,
            x_test,
            y_test,
            n_valid=config.n_valid or 5000,
            poison_rate=config.poison_rate,
            target=config.target,
            trigger=config.trigger,
            seed=config.seed,
        )
    epochs = config.epochs or (30 if digits else 3)
    seed_everything(config.seed)
    start = time.perf_counter()
    ctx = _Context(config=config, data=data, classifier=None, epochs=epochs, batch_size=32 if digits else 64)
    ctx.classifier = _train_cnn(data.x_train, data.y_train, ctx)
    logger.info("Trained the BadNet in %.1f s.", time.perf_counter() - start)

    rows: list[dict] = []
    for name in tqdm(names, desc="Defences", unit="defence", disable=not verbose):
        seed_everything(config.seed)
        start = time.perf_counter()
        try:
            new = DEFENCES[name](ctx)
        except Exception as error:  # an ART defence failing must not sink the whole table
            logger.warning("%s failed: %s", name, error)
            new = [
                {
                    "defence": name,
                    "clean_accuracy": None,
                    "attack_success_rate": None,
                    "poison_detection_tpr": None,
                    "poison_detection_fpr": None,
                    "poisoned_flagged": None,
                    "clean_flagged": None,
                    "error": f"{type(error).__name__}: {error}",
                }
            ]
        for row in new:
            row.setdefault("seconds", time.perf_counter() - start)
        rows += new
    return rows


def write_benchmark(rows: list[dict], out_dir: str, command: str, title: str, overwrite: bool = False) -> None:
    """
    Write ``results.json``, ``results.md`` (the command above the table) and ``results.png`` into ``out_dir``,
    atomically.

    :param rows: The benchmark's rows.
    :param out_dir: Destination directory.
    :param command: The command line that produced the rows.
    :param title: What was benchmarked.
    :param overwrite: Replace an existing directory.
    """
    import os

    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        reports.write_json(os.path.join(tmp, "results.json"), rows)
        table = reports.markdown_table(rows, RESULT_COLUMNS)
        reports.write_text(os.path.join(tmp, "results.md"), f"# {title}\n\n`{command}`\n\n{table}\n")
        reports.plot_tradeoff(rows, os.path.join(tmp, "results.png"), title)
