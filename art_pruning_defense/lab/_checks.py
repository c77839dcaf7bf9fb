"""
The checks of ``art-prune``'s arguments made before anything heavy is imported: ranges (with the core's checks in
:mod:`art_pruning_defense._validation`, the option named first), input paths, ``--out``, and the benchmark's grid.
TensorFlow is not imported here, so that every argument mistake is answered at once.
"""

from __future__ import annotations

import argparse
import os

from art_pruning_defense._holdout import check_calibration_fraction
from art_pruning_defense._io import check_input_file, check_output_dir
from art_pruning_defense._validation import MAX_SEED, check_drop, check_int, check_number


def _check_int(
    value: int | None, option: str, minimum: int, maximum: int | None = None, name: str | None = None
) -> None:
    """
    :param value: The option's value (``None``: not given, nothing to check).
    :param option: The option (``"--epochs"``), named first in the message.
    :param name: The parameter's name in the message (default: the option's, ``epochs``).
    """
    if value is not None:
        check_int(value, f"{option}: {name or option.lstrip('-').replace('-', '_')}", minimum, maximum)


def _check_input(path: str | None, option: str, what: str) -> None:
    """
    :param path: An input file given by ``option`` (``None``: not given, nothing to check).
    """
    if path is not None:
        check_input_file(path, what, option)


def check_goodnet_dir(path: str) -> None:
    """
    Check that ``path`` is a saved GoodNet directory and, where it has a manifest, that its files match it.

    :raises FileNotFoundError: If ``path`` does not exist or is not a directory.
    """
    if not os.path.isdir(path):
        state = "does not exist" if not os.path.exists(path) else "is not a directory"
        raise FileNotFoundError(f"{path} is not a saved GoodNet: it {state}.")
    from art_pruning_defense import goodnet_format

    if os.path.isfile(os.path.join(path, goodnet_format.METADATA_FILE)):
        goodnet_format.verify(path)  # before TensorFlow: a mismatch is refused at once (load checks it again)


def check_output_file(path: str, force: bool) -> None:
    """
    Check that ``path`` may be written as an HDF5 output file (created, or replaced with ``--force``).
    """
    if not path.endswith((".h5", ".hdf5")):
        raise ValueError(f"OUT.h5: the output file must end in .h5 or .hdf5, got {path}.")
    absolute = os.path.abspath(path)
    parent = os.path.dirname(absolute)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"The parent directory {parent} of the output file {path} does not exist.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"The parent directory {parent} of the output file {path} is not writable.")
    if os.path.islink(absolute):
        raise ValueError(f"The output file {path} is a symbolic link; refused (a link is never written through).")
    if os.path.isdir(absolute):
        raise IsADirectoryError(f"The output file {path} is a directory; expected a file name.")
    if os.path.lexists(absolute):
        if not os.path.isfile(absolute):
            raise ValueError(f"The output file {path} exists and is not a regular file; refused.")
        if not force:
            raise FileExistsError(f"{path} exists; pass --force to replace it.")


def check_arguments(args: argparse.Namespace) -> None:
    """
    Check what can be checked without TensorFlow: ranges, input files, the output directory.

    :param args: The parsed arguments.
    :raises ValueError: If a value is out of range or ``--out`` may not be written.
    :raises FileNotFoundError: If an input file does not exist.
    :raises IsADirectoryError: If a directory is given where a file is expected.
    """
    command = args.command
    if command == "make-h5":
        if not os.path.isdir(args.image_dir):
            state = "does not exist" if not os.path.exists(args.image_dir) else "is not a directory"
            raise FileNotFoundError(f"IMAGE_DIR: {args.image_dir} {state}; expected a directory of images.")
        _check_input(args.labels, "--labels", "labels CSV file")
        check_output_file(args.out, args.force)
    if command in ("demo", "repair"):
        for drop in args.drops:
            check_drop(drop, "--drops: each accuracy drop")
        _check_int(args.fine_tune_epochs, "--fine-tune-epochs", 0)
    if command == "demo":
        _check_int(args.epochs, "--epochs", 1)
    if command in ("repair", "evaluate", "eval"):
        _check_int(args.batch_size, "--batch-size", 1)
    if command == "repair":
        _check_int(args.target, "--target", 0, name="poisoned_target")
        if args.fpr is not None:
            check_number(args.fpr, "--fpr", 0.0, 1.0, hint=" (a share of clean inputs, 0.01 for 1 %)")
            check_calibration_fraction(args.calibration_fraction, "--calibration-fraction")
        if args.target is not None and args.poisoned_valid is None:
            raise ValueError("--target needs --poisoned-valid.")
        if args.strategy == "attack_aware" and args.poisoned_valid is None:
            raise ValueError("--strategy attack_aware needs triggered validation data: give --poisoned-valid.")
        _check_input(args.model, "--model", "model file")
        _check_input(args.valid, "--valid", "lab HDF5 file")
        _check_input(args.poisoned_valid, "--poisoned-valid", "lab HDF5 file")
        check_output_dir(args.out, overwrite=args.force, inputs=[args.model, args.valid, args.poisoned_valid])
    elif command == "evaluate":
        if args.test is None and args.poisoned_test is None:
            raise ValueError("Nothing to evaluate: give --test, --poisoned-test, or both.")
        if args.target is not None and args.poisoned_test is None:
            raise ValueError("--target needs --poisoned-test.")
        check_goodnet_dir(args.goodnet)
        _check_input(args.test, "--test", "lab HDF5 file")
        _check_input(args.poisoned_test, "--poisoned-test", "lab HDF5 file")
    elif command == "eval":
        check_goodnet_dir(args.goodnet)
        _check_input(args.image, "image", "image")
    elif command == "benchmark":
        check_benchmark(args)


#: ``art-prune benchmark`` options → grid keys (see :data:`art_pruning_defense.benchmark.config.GRID_KEYS`).
BENCHMARK_OPTIONS = {
    "data": "data",
    "archs": "archs",
    "model": "model",
    "attacks": "attacks",
    "poison_rates": "poison_rates",
    "seeds": "seeds",
    "trigger": "trigger",
    "target": "target",
    "n_valid": "n_valid",
    "epochs": "epochs",
    "augment": "augment",
    "defences": "defences",
    "retune_poisons": "retune_poisons",
}


def check_benchmark(args: argparse.Namespace) -> None:
    """
    Make the grid (from ``--grid`` and the options, which win) and check it and ``--out``, without TensorFlow; the
    grid is kept in ``args.grid_config``.
    """
    import importlib.util

    from art_pruning_defense.benchmark.config import load_grid_file, make_grid
    from art_pruning_defense.benchmark.store import check_grid_output

    for rate in args.poison_rates or ():
        check_number(rate, "--poison-rates: each poison rate", 0.0, 1.0)
    for seed in args.seeds or ():
        _check_int(seed, "--seeds", 0, MAX_SEED, name="seed")
    _check_int(args.n_valid, "--n-valid", 1)
    _check_int(args.epochs, "--epochs", 1)
    _check_int(args.target, "--target", 0)
    if args.retune_poisons is not None:
        from art_pruning_defense.benchmark.config import DEFAULT_RETUNE_POISONS, check_retune_poisons

        ks = args.retune_poisons or DEFAULT_RETUNE_POISONS  # the option alone: the default k
        args.retune_poisons = list(check_retune_poisons(ks, "--retune-poisons"))
    if args.cpus_per_cell is not None:
        check_number(args.cpus_per_cell, "--cpus-per-cell", 0.0)
    if args.executor != "ray" and (args.ray_address is not None or args.cpus_per_cell is not None):
        raise ValueError("--ray-address and --cpus-per-cell apply to --executor ray only.")
    if args.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ValueError(
            "--executor ray needs Ray, which is not installed: pip install 'art-pruning-defense[distributed]'."
        )
    _check_input(args.grid, "--grid", "grid file")
    values = load_grid_file(args.grid) if args.grid is not None else {}
    for option, key in BENCHMARK_OPTIONS.items():
        if getattr(args, option) is not None:
            values[key] = getattr(args, option)
    if args.no_flip:
        values["flip"] = False
    if args.model is not None and args.archs is not None:
        raise ValueError("Give --archs or --model, not both.")
    if args.model is not None:
        values.pop("archs", None)
    data = values.get("data", "digits")
    data = None if data == "digits" or not isinstance(data, str) else data
    _check_input(data, "--data", "npz data file")
    model = values.get("model")
    if isinstance(model, str):
        if not model.endswith(".keras"):
            raise ValueError(f"--model must be a .keras file, got {model}.")
        _check_input(model, "--model", "model file")
    _check_int(args.max_cells, "--max-cells", 1)
    from art_pruning_defense.benchmark.config import MAX_CELLS

    args.grid_config = make_grid(values, source=args.grid, max_cells=args.max_cells or MAX_CELLS)
    from art_pruning_defense.benchmark.cache import check_cache_dir, default_cache_dir

    args.model_cache_dir = None if args.no_model_cache else check_cache_dir(args.model_cache or default_cache_dir())
    check_grid_output(args.out, args.grid_config, overwrite=args.force, inputs=[data, model, args.grid])
    from art_pruning_defense.benchmark.config import check_retune_against_poisoned, check_target

    check_target(args.grid_config.cells()[0])  # the labels alone: a target outside the classes is refused now
    for cell in args.grid_config.cells():
        check_retune_against_poisoned(cell)  # the labels alone: more re-tuning poisons than poisoned images
