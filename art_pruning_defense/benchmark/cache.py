"""
The backdoored-model cache: each trained BadNet B, with the indices of its poisoned training samples, stored under
the content hash of everything its training depends on (:func:`model_identity`: the data's content, the architecture
or the model file's content and the recipe, the attack and its options, the seed, the package's
:data:`TRAINING_VERSION` and TensorFlow's and Keras's versions). Another run (other defences, another output) loads
B instead of training it again; the figures are those of a run without the cache.

An entry is a directory ``<cache>/<key>/`` holding ``model.keras``, ``poisoned.npy``, ``entry.json`` and
``MANIFEST.json`` (their SHA-256, written last), made with :func:`art_pruning_defense._io.atomic_directory`: it
appears complete or not at all. On every read the manifest, the key and the poisoned indices are checked; an entry
that fails is never trusted: B is trained again and the entry rebuilt, with a :class:`ModelCacheWarning`.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from art_pruning_defense._integrity import IntegrityError, strict_json_loads, value_sha256, verify_manifest
from art_pruning_defense.benchmark.config import BenchmarkConfig, json_ready

if TYPE_CHECKING:
    from art.estimators.classification import KerasClassifier

logger = logging.getLogger(__name__)

#: Version of how the benchmark trains B (the recipe, the seeding, the poisoning): raise it when any of them changes,
#: so that older entries are no longer used.
TRAINING_VERSION = 1
#: The files of an entry.
MODEL_FILE = "model.keras"
POISONED_FILE = "poisoned.npy"
ENTRY_FILE = "entry.json"
ENTRY_FILES = (MODEL_FILE, POISONED_FILE, ENTRY_FILE)
#: What the entry directory's marker says it holds.
ENTRY_KIND = "model-cache-entry"
#: Largest ``entry.json`` read (bytes).
MAX_ENTRY_BYTES = 1 << 16


class ModelCacheWarning(UserWarning):
    """
    A model cache entry was not used (changed, half-written or of another configuration) or could not be written.
    """


def default_cache_dir() -> str:
    """
    :return: ``$XDG_CACHE_HOME/art_pruning_defense/models``, or ``~/.cache/art_pruning_defense/models`` where
             ``XDG_CACHE_HOME`` is not set (or not an absolute path, as the XDG specification asks).
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "art_pruning_defense", "models")


def check_cache_dir(path: object) -> str:
    """
    :param path: The cache directory (created when first written).
    :return: It as an absolute path.
    :raises TypeError: If it is not a path.
    :raises ValueError: If it exists and is not a directory.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"model_cache must be the path of a directory, got {path!r}.")
    absolute = os.path.abspath(os.fspath(path))
    if os.path.lexists(absolute) and not os.path.isdir(absolute):
        raise ValueError(f"--model-cache {path} exists and is not a directory.")
    return absolute


def model_identity(config: BenchmarkConfig, inputs: dict[str, str | None]) -> dict[str, Any]:
    """
    :param config: One cell.
    :param inputs: Its :func:`~art_pruning_defense.benchmark.store.input_hashes`.
    :return: What B's training depends on, as plain JSON values (the defences and their settings are not in it).
    """
    import keras
    import tensorflow as tf

    resolved = config.resolved()
    return json_ready(
        {
            "training_version": TRAINING_VERSION,
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
            "data_sha256": inputs.get("data_sha256") or "digits",
            "model_sha256": inputs.get("model_sha256"),
            "arch": resolved.arch if resolved.model is None else None,
            "n_valid": resolved.n_valid,
            "epochs": resolved.epochs,
            "batch_size": resolved.batch_size,
            "augment": resolved.augment,
            "flip": resolved.flip,
            "attack": resolved.attack,
            "attack_options": resolved.make_attack().params(),
            "trigger": resolved.trigger,
            "poison_rate": float(resolved.poison_rate),
            "target": resolved.target,
            "seed": resolved.seed,
        }
    )


def clean_model_identity(config: BenchmarkConfig, inputs: dict[str, str | None]) -> dict[str, Any]:
    """
    :param config: One cell.
    :param inputs: Its :func:`~art_pruning_defense.benchmark.store.input_hashes`.
    :return: What the cell's clean model (same data, split, architecture, recipe and seed, no poison; the re-tuning
             attack's control) depends on: :func:`model_identity` without the attack, so that every attack and poison
             rate of a seed shares it.
    """
    identity = model_identity(config, inputs)
    identity.update({"attack": None, "attack_options": None, "trigger": None, "poison_rate": None, "clean": True})
    return identity


def model_key(config: BenchmarkConfig, inputs: dict[str, str | None]) -> str:
    """
    :return: The cache key of the cell's B: the SHA-256 of :func:`model_identity`.
    """
    return value_sha256(model_identity(config, inputs))


def _warn(message: str) -> None:
    logger.warning("%s", message)
    warnings.warn(message, ModelCacheWarning, stacklevel=3)


def _read_entry(entry: str, key: str, identity: dict, is_poison: np.ndarray, n_classes: int) -> "Any":
    """
    :return: B, loaded from a verified entry.
    :raises ValueError: If the entry fails any check (its manifest, key, identity or poisoned indices).
    """
    from art_pruning_defense.keras import load_model

    verify_manifest(entry, required=ENTRY_FILES)
    meta_path = os.path.join(entry, ENTRY_FILE)
    if os.path.getsize(meta_path) > MAX_ENTRY_BYTES:
        raise ValueError(f"{meta_path} is larger than {MAX_ENTRY_BYTES} bytes")
    with open(meta_path, encoding="utf-8") as handle:
        meta = strict_json_loads(handle.read())
    if not isinstance(meta, dict) or meta.get("key") != key or meta.get("identity") != identity:
        raise ValueError(f"{meta_path} is not the entry of this configuration")
    if value_sha256(meta["identity"]) != os.path.basename(entry):
        raise ValueError(f"the hash of {meta_path} does not match its directory's name")
    poisoned = np.load(os.path.join(entry, POISONED_FILE), allow_pickle=False)
    if poisoned.dtype != np.int64 or poisoned.ndim != 1 or not np.array_equal(poisoned, np.flatnonzero(is_poison)):
        raise ValueError(f"{os.path.join(entry, POISONED_FILE)} does not hold this poisoned split's indices")
    model = load_model(os.path.join(entry, MODEL_FILE))
    if model.outputs[0].shape[-1] != n_classes:
        raise ValueError(f"{os.path.join(entry, MODEL_FILE)} has {model.outputs[0].shape[-1]} outputs")
    return model


def _write_entry(entry: str, key: str, identity: dict, model: Any, is_poison: np.ndarray) -> None:
    import json

    from art_pruning_defense._integrity import write_manifest
    from art_pruning_defense._io import atomic_directory, has_marker
    from art_pruning_defense.keras import save_model

    os.makedirs(os.path.dirname(entry), mode=0o700, exist_ok=True)
    overwrite = os.path.lexists(entry)
    if overwrite and not (os.path.isdir(entry) and not os.path.islink(entry) and has_marker(entry)):
        raise ValueError(f"{entry} exists and was not written by art-prune; it is left as it is")
    with atomic_directory(entry, overwrite=overwrite, kind=ENTRY_KIND) as tmp:
        save_model(model, os.path.join(tmp, MODEL_FILE))
        np.save(os.path.join(tmp, POISONED_FILE), np.flatnonzero(is_poison).astype(np.int64), allow_pickle=False)
        with open(os.path.join(tmp, ENTRY_FILE), "w", encoding="utf-8") as handle:
            json.dump({"key": key, "identity": identity}, handle, indent=2, sort_keys=True)
        write_manifest(tmp, ENTRY_FILES, extra={"kind": ENTRY_KIND})  # last: it covers the files above


def _compiled(model: Any, config: BenchmarkConfig) -> Any:
    """
    :return: ``model`` compiled as :func:`~art_pruning_defense.keras.fit_classifier` leaves B (its loss; a fresh
             optimizer, which no defence uses: those that train compile their own copies).
    """
    from art_pruning_defense.keras import ARCHITECTURES
    from art_pruning_defense.keras._architectures import compile_classifier

    recipe = ARCHITECTURES[config.arch].recipe
    return compile_classifier(model, recipe.optimizer, recipe.learning_rate, 1)


def cached_badnet(
    data: Any,
    config: BenchmarkConfig,
    cache_dir: str | None,
    inputs: dict[str, str | None] | None = None,
    train: Any = None,
) -> tuple["KerasClassifier", dict | None]:
    """
    B for a cell: loaded from the cache where a verified entry exists, else trained
    (:func:`~art_pruning_defense.benchmark.training.train_badnet`) and stored.

    :param data: The cell's :class:`~art_pruning_defense.lab.digits.BadNetData` (poisoned training set).
    :param config: The cell.
    :param cache_dir: The cache directory; ``None``: no cache (B is trained).
    :param inputs: The cell's input hashes (computed if not given).
    :param train: What trains B (default :func:`~art_pruning_defense.benchmark.training.train_badnet`).
    :return: ``(B, info)``: B as an ART ``KerasClassifier`` with clip values (0, 1), and ``{"key": ..., "hit": ...}``
             (``None`` without a cache).
    """
    from art_pruning_defense.benchmark.training import train_backdoored

    def train_badnet(x: np.ndarray, y: np.ndarray, n_classes: int, cell: BenchmarkConfig) -> "KerasClassifier":
        return train_backdoored(data, cell)

    train_badnet = train or train_badnet  # called as train(x, y, n_classes, config)
    if cache_dir is None:
        return train_badnet(data.x_train, data.y_train, data.n_classes, config), None
    from art_pruning_defense.benchmark import store

    inputs = store.input_hashes(config) if inputs is None else inputs
    return _cached(
        cache_dir,
        model_identity(config, inputs),
        config,
        data.is_poison_train,
        data.n_classes,
        lambda: train_badnet(data.x_train, data.y_train, data.n_classes, config),
        "B",
    )


def cached_clean_model(
    config: BenchmarkConfig,
    n_classes: int,
    cache_dir: str | None,
    inputs: dict[str, str | None] | None = None,
    train: Any = None,
) -> tuple["KerasClassifier", dict | None]:
    """
    The cell's clean model (the re-tuning attack's control): trained like B on the cell's clean training split
    (:func:`~art_pruning_defense.benchmark.data.clean_split`, loaded only when it is trained), or loaded from the
    cache under :func:`clean_model_identity`.

    :param config: The cell.
    :param n_classes: The data's classes.
    :param cache_dir: The cache directory; ``None``: no cache (the model is trained).
    :param inputs: The cell's input hashes (computed if not given).
    :param train: What trains it (default :func:`~art_pruning_defense.benchmark.training.train_badnet`).
    :return: ``(model, info)`` as :func:`cached_badnet` returns them.
    """
    from art_pruning_defense.benchmark.data import clean_split
    from art_pruning_defense.benchmark.training import train_badnet

    train_badnet = train or train_badnet

    def train_now() -> "KerasClassifier":
        x_train, y_train = clean_split(config)[:2]
        return train_badnet(x_train, y_train, n_classes, config)

    if cache_dir is None:
        return train_now(), None
    from art_pruning_defense.benchmark import store

    inputs = store.input_hashes(config) if inputs is None else inputs
    no_poison = np.zeros(0, dtype=bool)
    identity = clean_model_identity(config, inputs)
    return _cached(cache_dir, identity, config, no_poison, n_classes, train_now, "the clean model")


def _cached(
    cache_dir: str,
    identity: dict,
    config: BenchmarkConfig,
    is_poison: np.ndarray,
    n_classes: int,
    train_now: Any,
    what: str,
) -> tuple["KerasClassifier", dict]:
    """
    :return: ``(model, {"key": ..., "hit": ...})``: the model of ``identity`` loaded from a verified entry, else
             ``train_now()``, stored.
    """
    from art.estimators.classification import KerasClassifier

    cache_dir = check_cache_dir(cache_dir)
    key = value_sha256(identity)
    entry = os.path.join(cache_dir, key)
    if os.path.lexists(entry):
        try:
            model = _read_entry(entry, key, identity, is_poison, n_classes)
        except (OSError, ValueError, IntegrityError, EOFError) as error:
            reason = " ".join(str(error).split())[:300]
            _warn(f"Model cache entry {entry} is not used ({reason}); {what} is trained again and the entry rebuilt.")
        else:
            logger.info("Loaded %s from the model cache (%s).", what, entry)
            return KerasClassifier(_compiled(model, config), clip_values=(0.0, 1.0)), {"key": key, "hit": True}
    classifier = train_now()
    try:
        _write_entry(entry, key, identity, classifier.model, is_poison)
    except (OSError, ValueError) as error:  # the cache is an optimisation: the run goes on without it
        _warn(f"Model cache entry {entry} could not be written ({' '.join(str(error).split())[:300]}).")
    else:
        logger.info("Stored %s in the model cache (%s).", what, entry)
    return classifier, {"key": key, "hit": False}
