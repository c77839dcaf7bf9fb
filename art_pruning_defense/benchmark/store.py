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

import json
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


def cell_key(config: BenchmarkConfig) -> str:
    """
    :param config: One cell.
    :return: A readable slug of its axes, e.g. ``digits__small-cnn__badnets__0.1__seed0``.
    """
    data = os.path.splitext(os.path.basename(config.data))[0]
    arch = config.arch if config.model is None else "model-" + os.path.splitext(os.path.basename(config.model))[0]
    parts = [data, arch, config.attack, f"{float(config.poison_rate):g}", f"seed{config.seed}"]
    return "__".join(re.sub(r"[^A-Za-z0-9.+-]+", "-", part) for part in parts)


def _read_json(path: str) -> Any:
    if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) > MAX_RECORD_BYTES:
        raise ValueError(f"{path} is not a regular file of at most {MAX_RECORD_BYTES} bytes.")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


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


def read_cell(out: str, config: BenchmarkConfig) -> dict | None:
    """
    :return: The finished cell's record, or ``None`` where the cell has not finished (no file, or a file that does
             not hold this cell's configuration, which is then redone).
    """
    path = cell_path(out, cell_key(config))
    if not os.path.exists(path):
        return None
    try:
        record = _read_json(path)
        same = record["config"] == json_ready(config.as_dict())
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("Cell file %s cannot be read (%s); the cell is run again.", path, error)
        return None
    if not same:
        logger.warning("Cell file %s holds another configuration; the cell is run again.", path)
        return None
    return record


def write_cell(out: str, record: dict) -> str:
    """
    :param out: The output directory.
    :param record: The cell's record (``key``, ``config``, ``versions``, ``rows``, ...).
    :return: The file written (atomically).
    """
    path = cell_path(out, record["key"])
    write_json(path, record)
    return path
