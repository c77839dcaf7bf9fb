"""
The grid's output directory: ``grid.json`` (the grid's configuration), ``cells/<key>.json`` (one file per finished
cell, written atomically as the cell finishes), and the report beside them.

A run on an existing output resumes it: finished cells are skipped. It is refused, before any work, where the output
holds a grid of another configuration (other settings: data, defences, epochs, ...; the axes may differ, so that a
grid can be extended with more seeds, attacks, ...). ``overwrite`` (``--force``) replaces the whole output under the
rules of :mod:`art_pruning_defense._io`. Framework-free: the command line checks ``--out`` with this module before
TensorFlow is imported.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Sequence

from art_pruning_defense._io import atomic_directory, check_output_dir, has_marker
from art_pruning_defense.benchmark.config import BenchmarkConfig, GridConfig, json_ready
from art_pruning_defense.lab.output import write_json

logger = logging.getLogger(__name__)

#: The grid's configuration, in the output directory.
GRID_JSON = "grid.json"
#: The directory of the cell files.
CELLS_DIR = "cells"
#: What the output directory's marker says it holds.
GRID_KIND = "benchmark-grid"
#: Largest cell or grid file read (bytes).
MAX_RECORD_BYTES = 16 << 20


#: Version of what a cell's hash covers: raise it when that changes, so that older cells are run again.
CELL_FORMAT = 1
#: Version of the methods a cell runs (attacks, training, defences, measurements): raise it with any change that
#: alters the figures a cell gives for the same configuration, so that a resumed ``--out`` runs its older cells
#: again instead of mixing their figures with new ones. 2: the benchmark's fine-pruning held a calibration split out;
#: 3: it fits on the whole split again, and a second fit holds the split out for the calibrated GoodNet rows.
METHODS_VERSION = 3
#: Longest readable label in a cell file's name (the name is the label, ``--`` and the 64-digit hash: 221 bytes
#: at most with ``.json``, within the 255 of common file systems), and longest part of it.
MAX_LABEL_CHARS = 150
MAX_LABEL_PART_CHARS = 40
_HASH_LENGTH = 64


def _label_part(text: str) -> str:
    part = re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip(".-")[:MAX_LABEL_PART_CHARS].strip(".-")
    return part or "x"


def cell_label(config: BenchmarkConfig) -> str:
    """
    :param config: One cell.
    :return: A readable slug of its axes, e.g. ``digits__small-cnn__badnets__0.1__seed0``: a label only (two cells
             may share it; the hash of :func:`cell_key` tells them apart). Poison rates are written in their
             shortest exact form (``0.1000001``, not ``0.1``). ASCII, at most :data:`MAX_LABEL_CHARS` characters.
    """
    data = os.path.splitext(os.path.basename(config.data))[0]
    arch = config.arch if config.model is None else "model-" + os.path.splitext(os.path.basename(config.model))[0]
    parts = [data, arch, config.attack, repr(float(config.poison_rate)), f"seed{config.seed}"]
    return "__".join(_label_part(part) for part in parts)[:MAX_LABEL_CHARS]


def input_hashes(config: BenchmarkConfig) -> dict[str, str | None]:
    """
    :param config: One cell.
    :return: ``data_sha256`` and ``model_sha256``: the content hashes of the ``.npz`` data file and of the ``.keras``
             model (``None`` for the embedded digits and for a built-in architecture).
    """
    from art_pruning_defense._integrity import file_sha256

    return {
        "data_sha256": None if config.is_digits else file_sha256(config.data),
        "model_sha256": None if config.model is None else file_sha256(config.model),
    }


def identity(resolved: dict, inputs: dict) -> dict:
    """
    :param resolved: A cell's resolved configuration (:meth:`BenchmarkConfig.resolved`, as a dict).
    :param inputs: Its :func:`input_hashes`.
    :return: What the cell's hash covers: the format, the methods' version, the resolved configuration with the paths
             of the data and the model replaced by their content hashes (a file moved keeps its cells; a file
             replaced at the same path does not).
    """
    configuration = dict(resolved)
    configuration["data"] = "digits" if inputs.get("data_sha256") is None else "npz"
    configuration["model"] = None if inputs.get("model_sha256") is None else "keras"
    return {"format": CELL_FORMAT, "methods": METHODS_VERSION, "config": configuration, "inputs": dict(inputs)}


def cell_hash(config: BenchmarkConfig, inputs: dict | None = None) -> str:
    """
    :param config: One cell.
    :param inputs: Its :func:`input_hashes` (computed if not given).
    :return: The SHA-256 of its canonical resolved configuration and inputs (:func:`identity`).
    """
    from art_pruning_defense._integrity import value_sha256

    inputs = input_hashes(config) if inputs is None else inputs
    return value_sha256(identity(json_ready(config.resolved().as_dict()), inputs))


def cell_key(config: BenchmarkConfig, inputs: dict | None = None) -> str:
    """
    :param config: One cell.
    :param inputs: Its :func:`input_hashes` (computed if not given).
    :return: The name of its file without ``.json``: :func:`cell_label`, ``--``, :func:`cell_hash`. The hash is the
             cell's identity; the label is there for people.
    """
    return f"{cell_label(config)}--{cell_hash(config, inputs)}"


def key_hash(key: str) -> str:
    """
    :return: The hash part of a cell key (what follows the last ``--``).
    """
    return key.rsplit("--", 1)[-1]


def _read_json(path: str) -> Any:
    if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) > MAX_RECORD_BYTES:
        raise ValueError(f"{path} is not a regular file of at most {MAX_RECORD_BYTES} bytes.")
    from art_pruning_defense._integrity import strict_json_loads
    from art_pruning_defense._limits import json_depth

    with open(path, "rb") as handle:
        raw = handle.read(MAX_RECORD_BYTES + 1)
    if json_depth(raw) > MAX_RECORD_DEPTH:
        raise ValueError(f"{path} nests deeper than {MAX_RECORD_DEPTH} levels.")
    try:
        return strict_json_loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({' '.join(str(error).split())[:200]}).") from None


#: Deepest nesting of a cell or grid file.
MAX_RECORD_DEPTH = 32


def _differences(stored: dict, current: dict) -> list[str]:
    keys = sorted(set(stored) | set(current))
    changed = [key for key in keys if stored.get(key) != current.get(key)]
    return [f"{key} {stored.get(key)!r} → {current.get(key)!r}" for key in changed]


def check_grid_output(path: str, grid: GridConfig, overwrite: bool = False, inputs: Sequence[object] = ()) -> str:
    """
    Check, before any work, that ``path`` may take the grid.

    :param path: The output directory.
    :param grid: The grid.
    :param overwrite: Replace an existing output (only one that art-prune wrote).
    :param inputs: The run's input files (never inside a replaced output).
    :return: ``"new"`` (to be created), ``"resume"`` (it holds this grid's configuration) or ``"replace"``.
    :raises ValueError: If it holds another grid's cells, or something art-prune did not write.
    """
    absolute = check_output_dir(path, overwrite=True, inputs=inputs if overwrite else ())
    if not os.path.lexists(absolute):
        return "new"
    if overwrite:
        return "replace"
    if not os.path.isdir(absolute) or not has_marker(absolute):
        raise ValueError(
            f"{path} exists but is not an art-prune benchmark output; choose a new output directory (or --force to "
            "replace one that art-prune wrote)."
        )
    stored_path = os.path.join(absolute, GRID_JSON)
    if not os.path.exists(stored_path):
        raise ValueError(f"{path} holds no benchmark grid ({GRID_JSON}); give --force to replace it, or a new --out.")
    try:
        stored = _read_json(stored_path)["settings"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: {GRID_JSON} cannot be read ({error}); give --force to replace the output.") from None
    differences = _differences(stored, grid.settings_dict())
    if differences:
        raise ValueError(
            f"{path} holds the cells of a grid of another configuration ({'; '.join(differences)}); give a new --out, "
            "or --force to replace it."
        )
    return "resume"


def prepare_output(path: str, grid: GridConfig, overwrite: bool = False, inputs: Sequence[object] = ()) -> str:
    """
    Create (or replace, or resume) the output directory and write ``grid.json``.

    :return: What :func:`check_grid_output` said: ``"new"``, ``"resume"`` or ``"replace"``.
    """
    mode = check_grid_output(path, grid, overwrite=overwrite, inputs=inputs)
    if mode == "resume":
        write_json(os.path.join(path, GRID_JSON), grid.as_dict())
        os.makedirs(os.path.join(path, CELLS_DIR), exist_ok=True)
        return mode
    with atomic_directory(path, overwrite=mode == "replace", kind=GRID_KIND, inputs=inputs) as tmp:
        os.mkdir(os.path.join(tmp, CELLS_DIR))
        write_json(os.path.join(tmp, GRID_JSON), grid.as_dict())
    return mode


def cell_path(out: str, key: str) -> str:
    """
    :return: The file of the cell ``key`` in the output ``out``.
    """
    return os.path.join(out, CELLS_DIR, f"{key}.json")


def check_record(record: Any, path: str, key: str | None = None) -> dict:
    """
    Check a cell record against its schema (:mod:`~art_pruning_defense.benchmark.schema`) and its identity: the hash
    of its own resolved configuration and inputs must be the hash in its file name (``key``), and its ``key`` the
    file name.

    :param record: The parsed record.
    :param path: Its file, for the messages.
    :param key: Its file name without ``.json`` (default: from ``path``).
    :return: The record.
    :raises ValueError: If it does not hold, in one line naming ``path``.
    """
    from art_pruning_defense._integrity import value_sha256
    from art_pruning_defense.benchmark.schema import validate

    from art_pruning_defense._integrity import canonical_json

    key = os.path.splitext(os.path.basename(path))[0] if key is None else key
    validate(record, "record", path)
    try:
        canonical_json(record)
    except ValueError:
        raise ValueError(f"{path}: the record holds NaN or an infinity.") from None
    if record["key"] != key:
        raise ValueError(f"{path}: its key {record['key'][:120]!r} is not its file name.")
    try:
        computed = value_sha256(identity(record["resolved"], record["inputs"]))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: its configuration cannot be hashed ({error}).") from None
    if computed != key_hash(key) or record["hash"] != computed:
        raise ValueError(f"{path}: the hash of its configuration does not match its file name.")
    return record


def read_cell(out: str, config: BenchmarkConfig, key: str | None = None) -> dict | None:
    """
    :param out: The output directory.
    :param config: One cell of the grid.
    :param key: Its :func:`cell_key` (computed if not given).
    :return: The finished cell's record, or ``None`` where the cell has not finished: no file, or a file that fails
             :func:`check_record` or holds another configuration, which is then run again (with a one-line warning
             naming the file).
    """
    key = cell_key(config) if key is None else key
    path = cell_path(out, key)
    if not os.path.lexists(path):
        return None
    try:
        record = check_record(_read_json(path), path, key)
        if record["config"] != json_ready(config.as_dict()):
            raise ValueError(f"{path} holds another configuration")
    except (OSError, ValueError, RecursionError) as error:
        logger.warning("Cell file %s is not used (%s); the cell is run again.", path, " ".join(str(error).split()))
        return None
    return record


def write_cell(out: str, record: dict) -> str:
    """
    :param out: The output directory.
    :param record: The cell's record (``key``, ``config``, ``versions``, ``rows``, ...), checked as it will be
           read back (:func:`check_record`).
    :return: The file written (atomically).
    :raises ValueError: If the record fails the check (it is then not written).
    """
    path = cell_path(out, record["key"])
    check_record(record, path)
    write_json(path, record)
    return path
