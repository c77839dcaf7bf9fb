"""
The saved form of a GoodNet: a directory holding B and B' as Keras 3 ``.keras`` files (loadable without custom code)
and ``goodnet.json``, its metadata. Written atomically; every value that reaches the computation is checked when it
is read back.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from art_pruning_defense import _metrics
from art_pruning_defense._integrity import IntegrityError, has_manifest, verify_manifest, write_manifest
from art_pruning_defense._io import atomic_directory
from art_pruning_defense._limits import read_json_file
from art_pruning_defense._validation import check_float32
from art_pruning_defense._version import __version__

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

#: File names inside a saved GoodNet directory.
BAD_MODEL_FILE = "bad_model.keras"
PRUNED_MODEL_FILE = "pruned_model.keras"
METADATA_FILE = "goodnet.json"
FORMAT = "art_pruning_defense.goodnet"
FORMAT_VERSION = 1
#: The files a GoodNet directory's manifest (``MANIFEST.json``: their SHA-256) must cover.
FILES = (BAD_MODEL_FILE, PRUNED_MODEL_FILE, METADATA_FILE)


class UnverifiedGoodNetWarning(UserWarning):
    """
    A GoodNet directory without a manifest (written before manifests) was loaded: its files could not be verified.
    """


def verify(path: str) -> bool:
    """
    Verify a GoodNet directory's files against its manifest, before anything is loaded from it. Framework-free: the
    command line calls it before TensorFlow is imported.

    :param path: The directory.
    :return: ``True`` if the manifest was checked; ``False`` for an older directory without one (a
             :class:`UnverifiedGoodNetWarning` is issued; its two model files must still be regular files, not links,
             and not one file).
    :raises ValueError: If a file does not match the manifest, is missing, is a link, or B and B' are one file; one
            line naming the file.
    """
    if has_manifest(path):
        try:
            verify_manifest(path, required=FILES)
        except IntegrityError as error:
            raise ValueError(f"Saved GoodNet refused: {error}") from None
        return True
    for name in FILES:
        full = os.path.join(path, name)
        if os.path.islink(full) or (os.path.lexists(full) and not os.path.isfile(full)):
            raise ValueError(f"Saved GoodNet refused: {full} is a symbolic link or not a regular file.")
    bad, pruned = (os.path.join(path, name) for name in (BAD_MODEL_FILE, PRUNED_MODEL_FILE))
    if os.path.isfile(bad) and os.path.isfile(pruned) and os.path.samefile(bad, pruned):
        raise ValueError(f"Saved GoodNet refused: {bad} and {pruned} are one file (B would be B').")
    if os.path.realpath(path) in _WARNED:
        return False
    _WARNED.add(os.path.realpath(path))
    warnings.warn(
        f"{path} has no manifest (written by an older version of art_pruning_defense): its files are not verified. "
        "Save it again to add one.",
        UnverifiedGoodNetWarning,
        stacklevel=3,
    )
    return False


#: Directories without a manifest already warned about (once per process each).
_WARNED: set[str] = set()


class SavedGoodNet(NamedTuple):
    """
    What a GoodNet directory holds, checked.
    """

    bad_model: "keras.Model"
    pruned_model: "keras.Model"
    nb_classes: int
    abstain: bool
    clip_values: tuple | None
    preprocessing: tuple[np.ndarray, np.ndarray] | None
    metadata: dict
    threshold: float | None
    false_positive_rate: float | None


def write(path: str, bad_model: "keras.Model", pruned_model: "keras.Model", config: dict, overwrite: bool) -> None:
    """
    Write a GoodNet directory atomically.

    :param path: Directory to create.
    :param bad_model: B.
    :param pruned_model: B'.
    :param config: The GoodNet's settings (``nb_classes``, ``abstain``, ``clip_values``, ``preprocessing``,
           ``metadata``, ``threshold``, ``false_positive_rate``), JSON-serialisable.
    :param overwrite: Replace an existing directory that art-prune wrote.
    """
    from art_pruning_defense.keras import save_model

    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__}
    with atomic_directory(path, overwrite=overwrite, kind="goodnet") as tmp:
        save_model(bad_model, os.path.join(tmp, BAD_MODEL_FILE))
        save_model(pruned_model, os.path.join(tmp, PRUNED_MODEL_FILE))
        with open(os.path.join(tmp, METADATA_FILE), "w", encoding="utf-8") as handle:
            json.dump({**header, **config}, handle, indent=2)
        write_manifest(tmp, FILES, extra={"kind": FORMAT})  # last: it covers the files above


def read(path: str, safe_mode: bool = True) -> SavedGoodNet:
    """
    :param path: A directory written by :func:`write`.
    :param safe_mode: Refuse model files that would run code when loaded (Keras ``safe_mode``).
    :return: Its contents, checked.
    :raises FileNotFoundError: If it holds no GoodNet metadata.
    :raises ValueError: If its files do not match its manifest (see :func:`verify`), or the metadata is not a
            GoodNet's, is of another format version, or holds a bad value.
    """
    from art_pruning_defense.keras import load_model

    meta_path = os.path.join(path, METADATA_FILE)
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"{path} is not a saved GoodNet: {METADATA_FILE} is missing.")
    verify(path)
    config = read_json_file(meta_path)  # at most 1 MB, nested at most 32 levels
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{meta_path} does not describe a GoodNet (format {FORMAT!r} expected).")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{meta_path} has format version {config.get('format_version')}; this package reads {FORMAT_VERSION}."
        )
    preprocessing, clip = _checked_config(config, meta_path)
    threshold, false_positive_rate = _checked_calibration(config, meta_path)
    return SavedGoodNet(
        bad_model=load_model(os.path.join(path, BAD_MODEL_FILE), safe_mode=safe_mode),
        pruned_model=load_model(os.path.join(path, PRUNED_MODEL_FILE), safe_mode=safe_mode),
        nb_classes=config["nb_classes"],
        abstain=config.get("abstain", False),
        clip_values=clip,
        preprocessing=preprocessing,
        metadata=config.get("metadata") or {},
        threshold=threshold,
        false_positive_rate=false_positive_rate,
    )


def _checked_config(config: dict, meta_path: str) -> tuple[tuple[np.ndarray, np.ndarray] | None, tuple | None]:
    """
    Check the parts of a saved GoodNet's metadata that reach the computation.

    :return: ``(preprocessing, clip_values)`` ready for the constructor.
    :raises ValueError: If any of them is malformed or not finite.
    """

    def finite(value: object, what: str, std: bool = False) -> np.ndarray:
        if isinstance(value, (str, bool, dict)) or (isinstance(value, list) and not _all_numbers(value)):
            raise ValueError(f"{meta_path}: {what} must be numbers, got {value!r}.")
        try:
            return check_float32(value, what, std=std)  # checked in float32, the dtype they are used in
        except ValueError as error:
            raise ValueError(f"{meta_path}: {error}") from None

    if not isinstance(config.get("nb_classes"), int) or isinstance(config.get("nb_classes"), bool):
        raise ValueError(f"{meta_path}: nb_classes must be an integer, got {config.get('nb_classes')!r}.")
    if not isinstance(config.get("abstain", False), bool):
        raise ValueError(f"{meta_path}: abstain must be true or false, got {config.get('abstain')!r}.")
    if not isinstance(config.get("metadata", {}) or {}, dict):
        raise ValueError(f"{meta_path}: metadata must be an object.")
    preprocessing = config.get("preprocessing")
    if preprocessing is not None:
        if not isinstance(preprocessing, dict) or set(preprocessing) != {"mean", "std"}:
            raise ValueError(f"{meta_path}: preprocessing must be null or {{'mean': ..., 'std': ...}}.")
        mean = finite(preprocessing["mean"], "preprocessing mean")
        std = finite(preprocessing["std"], "preprocessing std", std=True)
        if mean.shape != std.shape:
            raise ValueError(f"{meta_path}: preprocessing mean and std must have the same shape.")
        preprocessing = (mean, std)
    clip = config.get("clip_values")
    if clip is not None:
        values = finite(clip, "clip_values")
        if values.shape != (2,) or values[0] >= values[1]:
            raise ValueError(f"{meta_path}: clip_values must be (min, max) with min < max in float32, got {clip!r}.")
        clip = tuple(clip)
    return preprocessing, clip


def checked_threshold(value: object, what: str) -> float:
    """
    :param value: A calibrated threshold.
    :param what: Where it comes from, for the message.
    :return: It as a float64.
    :raises ValueError: If it is not a finite number within the score's range [0, 2].
    """
    low, high = _metrics.SCORE_RANGE
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a number in [{low:g}, {high:g}] (or None), got {value!r}.")
    threshold = float(value)
    if not (np.isfinite(threshold) and low <= threshold <= high):
        raise ValueError(f"{what} must be a number in [{low:g}, {high:g}] (the score's range), got {threshold!r}.")
    return threshold


def _checked_calibration(config: dict, meta_path: str) -> tuple[float | None, float | None]:
    """
    :return: ``(threshold, false_positive_rate)`` of a saved GoodNet, float64, or ``(None, None)`` if uncalibrated.
    :raises ValueError: If only one is set, or either is not a number in its range.
    """
    threshold, rate = config.get("threshold"), config.get("false_positive_rate")
    if (threshold is None) != (rate is None):
        raise ValueError(
            f"{meta_path}: threshold and false_positive_rate must both be set (a calibrated GoodNet) or both be "
            f"null, got threshold={threshold!r}, false_positive_rate={rate!r}."
        )
    if threshold is None:
        return None, None
    if not isinstance(rate, (int, float)) or isinstance(rate, bool):
        raise ValueError(f"{meta_path}: false_positive_rate must be a number in (0, 1), got {rate!r}.")
    try:
        checked_rate = _metrics.check_false_positive_rate(rate)
        threshold_value = checked_threshold(threshold, "threshold")
    except (TypeError, ValueError) as error:
        raise ValueError(f"{meta_path}: {error}") from None
    return threshold_value, checked_rate


def _all_numbers(values: list) -> bool:
    """
    :return: Whether a JSON list holds only numbers (nested lists of numbers included), no strings or booleans.
    """
    pending = [values]
    while pending:
        for value in pending.pop():
            if isinstance(value, list):
                pending.append(value)
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                return False
    return True
