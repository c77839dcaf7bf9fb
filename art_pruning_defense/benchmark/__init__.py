"""
The comparative benchmark: BadNets made by an attack, the pruning defence and ART's backdoor defences side by side.

| Paper link: https://arxiv.org/abs/1805.12185

The modules, in the order of the flow:

1. :mod:`~art_pruning_defense.benchmark.config`: what to run: one cell (data, architecture, attack, poison rate,
   seed, defences) and a grid of cells (lists of architectures, attacks, poison rates, seeds; a TOML grid file).
2. :mod:`~art_pruning_defense.benchmark.attacks`: one module per attack, a registry by name.
3. :mod:`~art_pruning_defense.benchmark.data`: the images (scikit-learn's digits, or an ``.npz`` file), the
   defender's clean validation split, the poisoned training set and the triggered test set.
4. :mod:`~art_pruning_defense.benchmark.training`: the BadNet B, trained from the seed with its architecture's recipe.
5. :mod:`~art_pruning_defense.benchmark.defences`: one module per defence, a registry by name; every selected defence
   runs on the same B (each from the same seed); clean accuracy and attack success rate on the test data, detection
   rates on the poisoned training set for training-set filters, shares flagged for test-time filters.
6. :mod:`~art_pruning_defense.benchmark.runner`: one cell, and the grid's executors (local, Ray).
7. :mod:`~art_pruning_defense.benchmark.store`: the grid's output directory (``grid.json``, ``cells/<key>.json``,
   resuming).
8. :mod:`~art_pruning_defense.benchmark.report`: ``results.json``, ``results.md``, plots (mean ± std over seeds).

The package imports its modules lazily: ``art_pruning_defense.benchmark.config`` does not load TensorFlow, so that the
command line checks a configuration at once.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Name → the module that defines it (imported on first use).
_EXPORTS = {
    "BenchmarkConfig": "config",
    "GridConfig": "config",
    "GRID_KEYS": "config",
    "make_grid": "config",
    "load_grid_file": "config",
    "DIGITS": "config",
    "ATTACKS": "attacks",
    "Attack": "attacks",
    "attack_names": "attacks",
    "make_attack": "attacks",
    "cell_key": "store",
    "check_grid_output": "store",
    "load_npz_images": "data",
    "load_benchmark_data": "data",
    "train_badnet": "training",
    "DEFENCES": "defences",
    "Defence": "defences",
    "defence_names": "defences",
    "ABSTAIN": "defences.base",
    "ROW_KEYS": "report",
    "_NeuralCleanse": "defences.neural_cleanse",
    "_sequential_copy": "defences.neural_cleanse",
    "run_benchmark": "runner",
    "run_cell": "runner",
    "run_grid": "runner",
    "GridResult": "runner",
    "BENCHMARK_COLUMNS": "report",
    "LEGEND": "report",
    "RESULTS_JSON": "report",
    "RESULTS_MD": "report",
    "RESULTS_PNG": "report",
    "markdown_rows": "report",
    "write_benchmark": "report",
    "write_grid_report": "report",
}

__all__ = [name for name in _EXPORTS if not name.startswith("_")]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
