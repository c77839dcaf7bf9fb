"""
Running the benchmark: one cell is one BadNet (data, architecture, attack, poison rate, seed) and every selected
defence on it (:func:`run_benchmark`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from art_pruning_defense._sanity import check_finite_weights, warn_if_near_chance
from art_pruning_defense.benchmark._memory import SYSTEM_ALLOCATOR_VARIABLE, PeakRSS, release_memory
from art_pruning_defense.benchmark.cache import cached_badnet
from art_pruning_defense.benchmark.config import BenchmarkConfig, GridConfig, check_target, json_ready
from art_pruning_defense.benchmark.data import load_benchmark_data
from art_pruning_defense.benchmark.defences import DEFENCES
from art_pruning_defense.benchmark.defences.base import Run, make_row
from art_pruning_defense.benchmark.training import train_backdoored, train_badnet
from art_pruning_defense.keras import seed_everything

logger = logging.getLogger(__name__)


def run_benchmark(
    config: BenchmarkConfig,
    verbose: bool = True,
    stage: Callable[[str], None] | None = None,
    summary: dict | None = None,
    memory: dict | None = None,
    model_cache: str | None = None,
    cache_info: dict | None = None,
) -> list[dict]:
    """
    Poison the data, train the BadNet and measure every selected defence on it.

    A defence that raises does not end the benchmark: its rows keep ``None`` figures and an ``error`` message.

    :param config: What to run.
    :param verbose: Show a progress bar over the defences (and ART's own bars).
    :param stage: Called with the name of each stage as it starts (``"data"``, ``"training"``, a defence's name).
    :param summary: Filled with the data's sizes (training, poisoned, validation, test, triggered test).
    :param memory: Filled with the peak resident memory (MiB) of the ``"data"`` and ``"training"`` stages (B's
           training and its labels on the evaluation sets).
    :param model_cache: A model cache directory (:mod:`~art_pruning_defense.benchmark.cache`): B is loaded from it
           where it was trained before, else trained and stored; ``None``: B is trained.
    :param cache_info: Filled with the cache key of B and whether it was found (``key``, ``hit``).
    :return: One row per measured model, in registry order, with the keys of :data:`ROW_KEYS`: ``defence``;
             ``clean_accuracy`` and ``attack_success_rate`` on the test data (percent); ``poison_detection_tpr`` and
             ``poison_detection_fpr`` (percent of poisoned, resp. clean, training samples flagged; ``None`` for
             defences that do not filter the training set); ``poisoned_flagged`` and ``clean_flagged`` (percent of
             triggered, resp. clean, test inputs flagged or abstained on; ``None`` for defences that never flag);
             ``seconds`` (wall time of this defence alone, from the trained BadNet to its figures; work shared
             between rows of one defence is counted in each); ``note``; ``error``; ``peak_rss_mib`` (the peak
             resident memory of this process while the defence ran, MiB: the data, B and what the defence added).
    """
    if not isinstance(config, BenchmarkConfig):
        raise TypeError(f"config must be a BenchmarkConfig, got {type(config).__name__}.")
    if not isinstance(verbose, bool):
        raise TypeError(f"verbose must be a bool, got {type(verbose).__name__}.")
    config = config.resolved()
    stage = stage or (lambda name: None)
    started = time.perf_counter()
    stage("data")
    memory = {} if memory is None else memory
    with PeakRSS() as peak:
        data = load_benchmark_data(config)
    memory["data"] = peak.mib
    release_memory()
    sizes = {
        "train": len(data.x_train),
        "poisoned": int(np.count_nonzero(data.is_poison_train)),
        "valid": len(data.x_valid),
        "test": len(data.x_test),
        "test_triggered": len(data.x_test_poisoned),
    }
    if summary is not None:
        summary.update(sizes)
    too_many = [k for k in config.retune_poisons if k > sizes["poisoned"]]
    if too_many:  # before any training (the command line checks it from the labels, earlier still)
        raise ValueError(
            f"retune_poisons {max(too_many)} is more than the {sizes['poisoned']} poisoned training images; give at "
            f"most {sizes['poisoned']}."
        )
    logger.info(
        "Data: %d training images (%d poisoned by %s, target %d), %d clean validation, %d test.",
        sizes["train"],
        sizes["poisoned"],
        config.attack,
        data.target,
        sizes["valid"],
        sizes["test"],
    )
    stage("training")
    begin = time.perf_counter()
    with PeakRSS() as peak:
        classifier, info = cached_badnet(
            data, config, model_cache, train=lambda x, y, n_classes, cell: train_backdoored(data, cell, train_badnet)
        )
        check_finite_weights(classifier.model, "The trained BadNet B")
        if info is not None and cache_info is not None:
            cache_info.update(info)
        how = "Loaded the BadNet from the cache" if info and info["hit"] else f"Trained the BadNet ({config.epochs} epochs)"
        logger.info("%s in %.1f s.", how, time.perf_counter() - begin)
        run = Run(config=config, data=data, classifier=classifier, verbose=verbose)
        begin = time.perf_counter()
        for name in ("test", "test_poisoned", "train"):
            run.bad_labels(name)  # shared by the defences: counted in none of their rows
        logger.info("Predicted B's labels on the test and training sets in %.1f s.", time.perf_counter() - begin)
        accuracy = 100.0 * float(np.mean(run.bad_labels("test") == data.y_test))
        warn_if_near_chance(accuracy, data.n_classes, f"B's clean test accuracy ({config.attack}, seed {config.seed})")
    memory["training"] = peak.mib
    release_memory()

    rows: list[dict] = []
    selected = [DEFENCES[name] for name in DEFENCES if name in config.defences]
    progress = tqdm(selected, desc="Benchmark", unit="defence", disable=not verbose)
    with progress:
        for defence in progress:
            progress.set_postfix_str(defence.name)
            stage(defence.name)
            logger.info("Running %s: %s.", defence.name, defence.description)
            seed_everything(config.seed)
            begin = time.perf_counter()
            with PeakRSS() as peak:
                try:
                    new_rows = defence.run(run)
                except Exception as error:  # record the failure of one defence, go on with the others
                    logger.warning("%s failed: %s: %s", defence.name, type(error).__name__, error, exc_info=True)
                    seconds = time.perf_counter() - begin
                    message = f"{type(error).__name__}: {error}"
                    new_rows = [make_row(name, seconds, error=message) for name in defence.row_names(config)]
            for row in new_rows:
                row["peak_rss_mib"] = peak.mib
                logger.info(
                    "%s: clean accuracy %s, attack success rate %s%s.",
                    row["defence"],
                    _percent_text(row["clean_accuracy"]),
                    _percent_text(row["attack_success_rate"]),
                    f" (error: {row['error']})" if row["error"] else "",
                )
            rows.extend(new_rows)
            release_memory()  # the defence's networks and caches, before the next one (B and the data stay)
    if config.retune_poisons:
        rows.append(_control_row(run, stage, model_cache))
    logger.info("Benchmark finished in %.1f s.", time.perf_counter() - started)
    return rows


def _control_row(run: Run, stage: Callable[[str], None], model_cache: str | None) -> dict:
    """
    :return: The re-tuning attack's control row (:func:`~art_pruning_defense.benchmark.retune.control_row`), or its
             error row.
    """
    from art_pruning_defense.benchmark.retune import CONTROL_ROW, control_row

    stage("retune-control")
    seed_everything(run.config.seed)
    begin = time.perf_counter()
    with PeakRSS() as peak:
        try:
            row = control_row(run, model_cache)
        except Exception as error:  # as for a defence: recorded, the cell goes on
            logger.warning("The re-tuning control failed: %s: %s", type(error).__name__, error, exc_info=True)
            row = make_row(CONTROL_ROW, time.perf_counter() - begin, error=f"{type(error).__name__}: {error}")
    row["peak_rss_mib"] = peak.mib
    release_memory()
    return row


def _percent_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


# ---------------------------------------------------------------------------------------------------------------------
# One cell, and the grid.
# ---------------------------------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """
    :return: The versions of this package, ART, TensorFlow, Keras and numpy.
    """
    import art
    import keras
    import tensorflow as tf

    from art_pruning_defense._version import __version__

    return {
        "art_pruning_defense": __version__,
        "adversarial-robustness-toolbox": art.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def _deterministic() -> None:
    """
    Make TensorFlow's ops deterministic (a cell's figures then depend on its seed only, whichever process runs it).
    """
    import tensorflow as tf

    # The API call only: an environment variable would leak into every process started from this one.
    tf.config.experimental.enable_op_determinism()


def run_cell(
    config: BenchmarkConfig,
    verbose: bool = False,
    stage: Callable[[str], None] | None = None,
    model_cache: str | None = None,
) -> dict:
    """
    Run one cell: one BadNet and every selected defence on it, deterministically from the cell's seed.

    :param config: The cell.
    :param verbose: Show the defences' progress bar (and ART's).
    :param stage: Called with each stage's name as it starts.
    :param model_cache: The model cache directory (``None``: none); see :func:`run_benchmark`.
    :return: The cell's record: ``key``, ``config`` (as given), ``resolved`` (defaults filled in), ``attack`` (its
             options), ``versions``, ``data`` (sizes), ``rows`` (see :func:`run_benchmark`), ``seconds`` and
             ``peak_rss_mib`` (the peak resident memory, MiB, of the ``data`` and ``training`` stages and over the
             ``defences``).
    """
    from art_pruning_defense.benchmark import store

    _deterministic()
    start = time.perf_counter()
    inputs = store.input_hashes(config)
    summary: dict[str, Any] = {}
    memory: dict[str, float] = {}
    cache_info: dict = {}
    rows = run_benchmark(
        config, verbose=verbose, stage=stage, summary=summary, memory=memory, model_cache=model_cache,
        cache_info=cache_info,
    )
    record = {
        "key": store.cell_key(config, inputs),
        "label": store.cell_label(config),
        "hash": store.cell_hash(config, inputs),
        "inputs": inputs,
        "config": json_ready(config.as_dict()),
        "resolved": json_ready(config.resolved().as_dict()),
        "attack": {"name": config.attack, "options": config.make_attack().params()},
        "versions": versions(),
        "data": summary,
        "rows": rows,
        "seconds": round(time.perf_counter() - start, 2),
        "peak_rss_mib": {**memory, "defences": max((row["peak_rss_mib"] for row in rows), default=None)},
    }
    if cache_info:
        record["model_cache"] = cache_info
    return record


def _cell_task(config: BenchmarkConfig, model_cache: str | None = None) -> dict:
    """
    A cell run by a Ray worker: quiet, no progress bars.
    """
    for name in ("tensorflow", "absl", "keras", "art"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return run_cell(config, verbose=False, model_cache=model_cache)


@dataclass
class GridResult:
    """
    What :func:`run_grid` did.

    :param records: The records of the grid's finished cells (run now or earlier), in grid order.
    :param ran: Keys of the cells run now.
    :param skipped: Keys of the cells finished by an earlier run.
    :param failed: Key → error, for the cells that did not finish (a rerun redoes them).
    :param files: The report's files.
    """

    records: list[dict]
    ran: list[str]
    skipped: list[str]
    failed: dict[str, str]
    files: list[str] = field(default_factory=list)


#: The executors: local (sequential, in this process) and Ray.
EXECUTORS = ("local", "ray")


def run_grid(
    grid: GridConfig,
    out: str,
    command: str,
    executor: str = "local",
    overwrite: bool = False,
    ray_address: str | None = None,
    cpus_per_cell: float = 1,
    verbose: bool = True,
    model_cache: str | None = None,
) -> GridResult:
    """
    Run every unfinished cell of the grid; write each cell's record as it finishes (``OUT/cells/<key>.json``) and
    the report after each cell.

    :param grid: The grid.
    :param out: The output directory: created, resumed (same configuration: finished cells are skipped) or, with
           ``overwrite``, replaced; one of another configuration is refused before any work.
    :param command: The command line (printed in the report).
    :param executor: ``"local"`` (sequential, in this process) or ``"ray"`` (cells as Ray tasks).
    :param overwrite: Replace an existing output (``--force``).
    :param ray_address: The Ray cluster to join (default: a running instance if this process started one, else a
           new local instance).
    :param cpus_per_cell: CPUs Ray reserves for each cell.
    :param verbose: A progress bar over the cells.
    :param model_cache: A model cache directory (:mod:`~art_pruning_defense.benchmark.cache`): each cell's B is
           loaded from it where an earlier run trained it, else trained and stored; ``None`` (default): no cache.
    :return: What was run, skipped and failed, and the files written.
    """
    from art_pruning_defense._io import output_lock
    from art_pruning_defense.benchmark import report, store

    if not isinstance(grid, GridConfig):
        raise TypeError(f"grid must be a GridConfig, got {type(grid).__name__}.")
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}.")
    if isinstance(cpus_per_cell, bool) or not isinstance(cpus_per_cell, (int, float)) or not cpus_per_cell > 0:
        raise ValueError(f"cpus_per_cell must be a positive number, got {cpus_per_cell!r}.")
    if model_cache is not None:
        from art_pruning_defense.benchmark.cache import check_cache_dir

        model_cache = check_cache_dir(model_cache)
    if executor == "ray":
        ray = import_ray()
    cells = grid.cells()
    check_target(cells[0])  # the labels alone, before any output is written or network trained
    inputs = [cells[0].data if not cells[0].is_digits else None, grid.model]
    with output_lock(out):
        mode = store.prepare_output(out, grid, overwrite=overwrite, inputs=inputs)
        # The file name is a cell's only identity: keys are computed here, from the configuration and the content
        # of its input files, never read from a cell file.
        keys = [store.cell_key(config) for config in cells]
        key_of = {id(config): key for config, key in zip(cells, keys)}
        if len(set(keys)) != len(keys):
            raise ValueError("Two cells of the grid have the same configuration; give distinct axis values.")
        records: dict[str, dict] = {}
        pending = []
        for config, key in zip(cells, keys):
            record = store.read_cell(out, config, key)
            if record is None:
                pending.append(config)
            else:
                records[key] = record
        skipped = list(records)
        logger.info(
            "%s: %d cells, %d finished earlier (%s), %d to run.", out, len(cells), len(skipped), mode, len(pending)
        )
        result = GridResult(records=[], ran=[], skipped=skipped, failed={})

        def refresh() -> None:
            result.records = [records[k] for k in keys if k in records]
            unfinished = [k for k in keys if k not in records]
            result.files = report.write_grid_report(out, result.records, command, unfinished=unfinished)

        def finished(config: BenchmarkConfig, record: dict | None, error: str | None) -> None:
            key = key_of[id(config)]
            if record is not None and record.get("key") != key:
                record, error = None, "its input files changed while it ran (their content hash differs)"
            if record is not None:
                try:
                    store.write_cell(out, record)
                except ValueError as problem:  # a record that would not be read back is not written
                    record, error = None, f"its record is invalid: {' '.join(str(problem).split())[:300]}"
            if record is None:
                result.failed[key] = error or "unknown error"
                logger.warning("Cell %s did not finish: %s", key, error)
            else:
                records[key] = record
                result.ran.append(key)
            refresh()

        progress = tqdm(total=len(cells), initial=len(skipped), desc="Grid", unit="cell", disable=not verbose)
        with progress:
            if not pending:
                refresh()
            elif executor == "local":
                _run_local(pending, progress, finished, key_of, model_cache)
            else:
                _run_ray(ray, pending, progress, finished, ray_address, cpus_per_cell, key_of, model_cache)
    return result


def _run_local(
    pending: list[BenchmarkConfig], progress: tqdm, finished: Callable, key_of: dict, model_cache: str | None
) -> None:
    for config in pending:
        key = key_of[id(config)]

        def stage(name: str, key: str = key) -> None:
            progress.set_postfix_str(f"{key}: {name}")

        try:
            record = run_cell(config, verbose=False, stage=stage, model_cache=model_cache)
        except Exception as error:  # a cell that fails is reported, and the grid goes on
            logger.warning("Cell %s failed: %s: %s", key, type(error).__name__, error, exc_info=True)
            finished(config, None, f"{type(error).__name__}: {error}")
        else:
            finished(config, record, None)
        progress.update(1)


def import_ray() -> Any:
    """
    :return: The ``ray`` module.
    :raises ImportError: If Ray is not installed (with the extra to install).
    """
    try:
        import ray
    except ImportError:
        raise ImportError(
            "--executor ray needs Ray: pip install 'art-pruning-defense[distributed]' (or pip install ray)."
        ) from None
    return ray


def _run_ray(
    ray: Any,
    pending: list[BenchmarkConfig],
    progress: tqdm,
    finished: Callable,
    address: str | None,
    cpus_per_cell: float,
    key_of: dict,
    model_cache: str | None,
) -> None:
    started_here = not ray.is_initialized()
    if started_here:
        env = {
            "TF_DETERMINISTIC_OPS": "1",
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
            # Freed tensors go back to the system (see use_system_allocator), in the workers as here.
            SYSTEM_ALLOCATOR_VARIABLE: os.environ.get(SYSTEM_ALLOCATOR_VARIABLE, "1"),
        }
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
    try:
        cluster = float(ray.cluster_resources().get("CPU", 0))
        if cpus_per_cell > cluster:
            raise ValueError(
                f"--cpus-per-cell {cpus_per_cell:g} is more than the {cluster:g} CPUs of the Ray cluster: no cell could "
                "ever start; give at most that many."
            )
        task = ray.remote(num_cpus=cpus_per_cell, max_retries=0)(_cell_task)
        running = {task.remote(config, model_cache): config for config in pending}
        progress.set_postfix_str(f"{len(running)} cells queued on Ray")
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                config = running.pop(ref)
                try:
                    record = ray.get(ref)
                except Exception as error:  # the task raised, or its worker died: the cell stays unfinished
                    first_line = (str(error).splitlines() or [""])[0]
                    finished(config, None, f"{type(error).__name__}: {first_line}")
                else:
                    finished(config, record, None)
                progress.update(1)
                progress.set_postfix_str(f"{key_of[id(config)]} done; {len(running)} left")
    finally:
        if started_here:
            ray.shutdown()
