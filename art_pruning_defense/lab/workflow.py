"""
The lab workflow on files: repair a BadNet from lab-format data, evaluate a saved GoodNet, classify one image.
Loaders → FinePruning → reports; the command line (``art-prune``) only parses and prints.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from art_pruning_defense import _holdout, _metrics, _sanity
from art_pruning_defense._defaults import RECOMMENDED_CALIBRATION_FRACTION
from art_pruning_defense._params import DEFAULTS, PARAMS, check_params
from art_pruning_defense._sanity import check_finite_weights
from art_pruning_defense.lab import output
from art_pruning_defense._io import atomic_directory, check_output_dir, output_lock
from art_pruning_defense.lab.data import lab_h5_info, load_image, load_lab_h5
from art_pruning_defense.fine_pruning import FinePruning
from art_pruning_defense.goodnet import GoodNetClassifier

logger = logging.getLogger(__name__)

#: Pixel range of the lab's data (and of the PNG images read for it).
LAB_CLIP_VALUES = (0.0, 255.0)


def drop_tag(drop: float) -> str:
    """
    :param drop: An accuracy drop X.
    :return: Its tag in file names: ``x2``, ``x4``, ``x10``, ``x2.5``.
    """
    return f"x{drop:g}"


@dataclass
class RepairResult:
    """
    What ``repair`` wrote and measured.
    """

    out_dir: str
    summary: list[dict]
    files: list[str] = field(default_factory=list)
    fine_tune: dict | None = None
    #: With a false-positive rate: ``{"false_positive_rate": rate, "calibration_fraction": f, "n_valid": n,
    #: "n_calibration": m, "band": [low, high], "thresholds": {name: threshold}}``, each GoodNet written calibrated
    #: on the m of the n clean validation samples held out of the sweep and the fine-tuning (``band``: where the
    #: rate on fresh clean inputs lies with 95 % probability); else ``None``.
    calibration: dict | None = None


def _load_targets(labels: np.ndarray, target: int | None) -> np.ndarray | int:
    return labels if target is None else target


def repair(
    model_path: str,
    valid_path: str,
    out_dir: str,
    arch: str | None = None,
    poisoned_valid_path: str | None = None,
    target: int | None = None,
    force: bool = False,
    safe_mode: bool = True,
    false_positive_rate: float | None = None,
    **params: Any,
) -> RepairResult:
    """
    Run the pruning sweep on lab-format validation data and write, into ``out_dir``: B'(X) as
    ``pruned_x{X}.keras`` and GoodNet(X) as ``goodnet_x{X}/`` for every X, ``sweep.csv``, ``sweep.png``,
    ``summary.md`` and ``summary.json`` (and ``fine_pruned.keras`` with ``goodnet_fine_pruned/`` when fine-tuning).
    Everything is written into a temporary directory that replaces ``out_dir`` only when complete. With
    ``false_positive_rate``, a share ``calibration_fraction`` of the clean validation data (by default
    :data:`~art_pruning_defense._defaults.RECOMMENDED_CALIBRATION_FRACTION`) is held out of the sweep and the
    fine-tuning, and every GoodNet written is calibrated on it (a conformal threshold,
    :meth:`GoodNetClassifier.calibrate`): it flags ``score > threshold`` instead of where B and B' disagree.

    :param model_path: The BadNet: a ``.keras`` file, a full Keras 2 ``.h5`` model, or a weights file with ``arch``.
    :param valid_path: Clean validation data (lab HDF5: ``data`` (N, 3, H, W), ``label`` (N,)).
    :param out_dir: Output directory (must not exist unless ``force``).
    :param arch: Architecture for a weights-only file (``"deepid"``).
    :param poisoned_valid_path: Optional triggered validation data (lab HDF5), to record attack success rates.
    :param target: The attack's target; by default the labels stored in the poisoned file.
    :param force: Replace an existing ``out_dir``: only a directory that art-prune wrote (it holds the marker file
                  ``.art-prune-output``), never one holding the inputs or the current directory.
    :param safe_mode: Refuse model files that would run code.
    :param false_positive_rate: Calibrate each GoodNet so that a fresh clean input is flagged with probability at
           most this rate α (in (0, 1); ``None``: the label rule), on the held-out part, which must hold at least
           ``1/α − 1`` samples (99 for 1 %).
    :param params: :class:`~art_pruning_defense.FinePruning`'s parameters (``accuracy_drops``, ``layer_name``,
           ``strategy``, ``fine_tune_epochs``, ``fine_tune_mode``, ``batch_size``, ``verbose``, ...), checked by it
           before any file is read.
    :return: The summary, the files written and the calibration.
    :raises FileExistsError: If ``out_dir`` exists and ``force`` is false.
    :raises BlockingIOError: If another run is writing ``out_dir``.
    :raises ValueError: If ``out_dir`` may not be replaced, or an input is invalid.
    """
    from art.estimators.classification import KerasClassifier

    from art_pruning_defense.keras import load_keras_model, save_model

    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise TypeError(
            f"repair got unexpected parameter(s) {', '.join(map(repr, unknown))}; FinePruning's are: "
            f"{', '.join(PARAMS)}."
        )
    check_params({**DEFAULTS, **params})  # before any file is read
    if target is not None and poisoned_valid_path is None:
        raise ValueError("--target needs --poisoned-valid.")
    if false_positive_rate is not None:
        false_positive_rate = _metrics.check_false_positive_rate(false_positive_rate, "--fpr")
        if params.get("calibration_fraction") is None:
            params["calibration_fraction"] = RECOMMENDED_CALIBRATION_FRACTION
    inputs = [model_path, valid_path, poisoned_valid_path]
    check_output_dir(out_dir, overwrite=force, inputs=inputs)  # before the long work, not after it
    if false_positive_rate is not None:
        _holdout.check_holdout(
            lab_h5_info(valid_path)[0], params["calibration_fraction"], false_positive_rate, f"--valid {valid_path}"
        )
    with output_lock(out_dir):  # one run at a time on out_dir, from now until it is written
        model = load_keras_model(model_path, arch=arch, safe_mode=safe_mode)
        check_finite_weights(model, f"--model {model_path}")
        classifier = KerasClassifier(model, clip_values=LAB_CLIP_VALUES)
        defence = FinePruning(classifier, **params)
        x, y = load_lab_h5(valid_path)
        poisoned_x = poisoned_target = None
        if poisoned_valid_path is not None:
            poisoned_x, poisoned_labels = load_lab_h5(poisoned_valid_path)
            poisoned_target = _load_targets(poisoned_labels, target)
        defence.fit(x, y, poisoned_x=poisoned_x, poisoned_target=poisoned_target)

        summary = defence.summary()
        records = [r.as_dict() for r in defence.sweep_]
        title = f"Pruning {defence.prune_point.layer_name} ({os.path.basename(model_path)})"
        calibration = None
        if false_positive_rate is not None:
            n_calibration = len(defence.calibration_indices_)
            calibration = {
                "false_positive_rate": false_positive_rate,
                "calibration_fraction": defence.calibration_fraction,
                "n_valid": len(x),
                "n_calibration": n_calibration,
                "band": list(_metrics.conformal_band(n_calibration, false_positive_rate)),
                "thresholds": {},
            }

        def write_goodnet(goodnet: GoodNetClassifier, name: str) -> None:
            if calibration is not None:
                calibration["thresholds"][name] = goodnet.threshold_
            goodnet.save(os.path.join(tmp, name))

        with atomic_directory(out_dir, overwrite=force, kind="repair", inputs=inputs) as tmp:
            for drop in defence.accuracy_drops:
                tag = drop_tag(drop)
                save_model(defence.pruned_model(drop), os.path.join(tmp, f"pruned_{tag}.keras"))
                goodnet = defence(classifier, accuracy_drop=drop, false_positive_rate=false_positive_rate)
                write_goodnet(goodnet, f"goodnet_{tag}")
            if defence.fine_pruned_model_ is not None:
                save_model(defence.fine_pruned_model(), os.path.join(tmp, "fine_pruned.keras"))
                write_goodnet(defence(classifier, false_positive_rate=false_positive_rate), "goodnet_fine_pruned")
            output.write_csv(os.path.join(tmp, "sweep.csv"), records)
            output.plot_sweep(records, defence.steps_, os.path.join(tmp, "sweep.png"), title=title)
            table = output.markdown_table(summary, output.SUMMARY_COLUMNS)
            output.write_text(os.path.join(tmp, "summary.md"), f"# {title}\n\n{table}\n")
            output.write_json(
                os.path.join(tmp, "summary.json"),
                {
                    "summary": summary,
                    "fine_tune": defence.fine_tune_,
                    "prune_point": vars(defence.prune_point),
                    "calibration": calibration,
                },
            )
            files = sorted(os.listdir(tmp))
        return RepairResult(
            out_dir=out_dir, summary=summary, files=files, fine_tune=defence.fine_tune_, calibration=calibration
        )


def evaluate(
    goodnet_dir: str,
    test_path: str | None = None,
    poisoned_test_path: str | None = None,
    target: int | None = None,
    batch_size: int = 256,
    safe_mode: bool = True,
) -> dict[str, dict[str, float | None]]:
    """
    :param goodnet_dir: A saved GoodNet.
    :param test_path: Clean test data (lab HDF5).
    :param poisoned_test_path: Triggered test data (lab HDF5).
    :param target: The attack's target; by default the labels stored in the poisoned file.
    :param batch_size: Samples per forward pass.
    :param safe_mode: Refuse model files that would run code.
    :return: Metrics for B, B' and GoodNet; the GoodNet's row also holds ``threshold`` and ``false_positive_rate``
             (``None`` for the label rule), and its flags follow the threshold where one is set.
    """
    if test_path is None and poisoned_test_path is None:
        raise ValueError("Nothing to evaluate: give --test, --poisoned-test, or both.")
    if target is not None and poisoned_test_path is None:
        raise ValueError("--target needs --poisoned-test.")
    goodnet = GoodNetClassifier.load(goodnet_dir, safe_mode=safe_mode)
    check_finite_weights(goodnet.bad_model, f"B ({goodnet_dir})")
    check_finite_weights(goodnet.pruned_model, f"B' ({goodnet_dir})")
    x = y = poisoned_x = poisoned_target = None
    if test_path is not None:
        x, y = load_lab_h5(test_path)
    if poisoned_test_path is not None:
        poisoned_x, labels = load_lab_h5(poisoned_test_path)
        poisoned_target = _load_targets(labels, target)
    rows = goodnet.evaluate(x, y, poisoned_x, poisoned_target, batch_size=batch_size)
    if x is not None:
        n_classes = goodnet.n_classes
        _sanity.warn_if_near_chance(rows.get("B", {}).get("clean_accuracy"), n_classes, "B's clean accuracy on --test")
        _sanity.warn_if_flags_most(rows["GoodNet"].get("clean_flagged"), "GoodNet flags clean --test inputs")
    rows["GoodNet"]["threshold"] = goodnet.threshold_
    rows["GoodNet"]["false_positive_rate"] = goodnet.false_positive_rate_
    return rows


def classify_image(goodnet_dir: str, image_path: str, safe_mode: bool = True) -> int:
    """
    The lab's contest interface.

    :param goodnet_dir: A saved GoodNet.
    :param image_path: A PNG or JPEG image of the model's input size.
    :param safe_mode: Refuse model files that would run code.
    :return: The class in [0, N], N meaning "poisoned input".
    """
    goodnet = GoodNetClassifier.load(goodnet_dir, safe_mode=safe_mode)
    image = load_image(image_path, expected_shape=goodnet.input_shape)
    return int(goodnet.predict_classes(image)[0])
