"""
The ``art-prune`` command line. Parsing, checking and printing only: the work is done by the package's modules.

Everything that can be checked without TensorFlow (argument ranges, input paths, ``--out``) is checked before
TensorFlow is imported, so that ``--help`` and every argument mistake answer at once (target: under a second), with
one line ``art-prune: error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import math
import os
import signal
import sys
import time
import warnings
from typing import Callable, Iterator, NoReturn, Sequence

from art_pruning_defense._defaults import (
    ARCH_NAMES,
    ATTACK_NAMES,
    DEFENCE_NAMES,
    RECOMMENDED_FINE_TUNE_EPOCHS,
    STRATEGY_NAMES,
    TRIGGER_NAMES,
)
from art_pruning_defense._io import check_output_dir, output_lock
from art_pruning_defense._params import FINE_TUNE_MODES
from art_pruning_defense.lab._quiet import quiet


def _make_h5(args: argparse.Namespace) -> int:
    from art_pruning_defense.lab.data import images_to_lab_h5

    n, shape = images_to_lab_h5(args.image_dir, args.out, labels_csv=args.labels, pattern=args.glob)
    source = f"labels from {args.labels}" if args.labels else "labels from the file names"
    args.written = f"{args.out} ({n} images of {shape[0]}×{shape[1]}×{shape[2]}, {source})"
    return 0


def _demo(args: argparse.Namespace) -> int:
    from art_pruning_defense.lab.demo import DEMO_COLUMNS, run_demo
    from art_pruning_defense.lab.output import markdown_table

    rows = run_demo(
        accuracy_drops=args.drops,
        epochs=args.epochs,
        fine_tune_epochs=args.fine_tune_epochs,
        seed=args.seed,
        verbose=not args.quiet,
    )
    print("Digits BadNet (ART PoisoningAttackBackdoor, pattern trigger, target 0), repaired by pruning conv_2:")
    print(markdown_table(rows, DEMO_COLUMNS))
    return 0


def _repair(args: argparse.Namespace) -> int:
    from art_pruning_defense.lab.output import SUMMARY_COLUMNS, markdown_table
    from art_pruning_defense.lab.workflow import repair

    result = repair(
        model_path=args.model,
        valid_path=args.valid,
        out_dir=args.out,
        arch=args.arch,
        poisoned_valid_path=args.poisoned_valid,
        target=args.target,
        force=args.force,
        safe_mode=not args.unsafe,
        false_positive_rate=args.fpr,
        accuracy_drops=args.drops,
        layer_name=args.layer,
        batch_size=args.batch_size,
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_mode=args.fine_tune_mode,
        strategy=args.strategy,
        verbose=not args.quiet,
    )
    print(markdown_table(result.summary, SUMMARY_COLUMNS))
    if result.fine_tune is not None:
        ft = result.fine_tune
        asr = "n/a" if ft["attack_success_rate"] is None else f"{ft['attack_success_rate']:.2f}%"
        print(
            f"fine-pruned: {ft['channels_pruned']} channels pruned, {ft['epochs']} epochs; on the validation data "
            f"(also its training data) clean accuracy {ft['clean_accuracy']:.2f}%, attack success rate {asr}"
        )
    if result.calibration is not None:
        calibration = result.calibration
        thresholds = ", ".join(f"{name} {value:.6g}" for name, value in calibration["thresholds"].items())
        print(
            f"calibrated at a false-positive rate of {calibration['false_positive_rate']:g} on the "
            f"{calibration['n_valid']} clean validation samples (flagged: score > threshold): {thresholds}"
        )
    args.written = f"{result.out_dir} ({', '.join(result.files)})"
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from art_pruning_defense.lab.output import markdown_table
    from art_pruning_defense.lab.workflow import evaluate

    rows = evaluate(
        args.goodnet,
        test_path=args.test,
        poisoned_test_path=args.poisoned_test,
        target=args.target,
        batch_size=args.batch_size,
        safe_mode=not args.unsafe,
    )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        goodnet = rows["GoodNet"]
        if goodnet.get("threshold") is not None:
            print(
                f"GoodNet flags score > threshold {goodnet['threshold']:.6g} (calibrated at a false-positive rate of "
                f"{goodnet['false_positive_rate']:g})"
            )
        else:
            print("GoodNet flags the inputs on which B and B' disagree (not calibrated)")
        table = [{"model": name, **row} for name, row in rows.items()]
        print(
            markdown_table(
                table,
                (
                    ("model", "model"),
                    ("clean_accuracy", "clean accuracy %"),
                    ("attack_success_rate", "attack success %"),
                    ("poisoned_flagged", "poisoned sent to class N %"),
                    ("clean_flagged", "clean sent to class N %"),
                ),
            )
        )
    return 0


def _eval_image(args: argparse.Namespace) -> int:
    from art_pruning_defense.lab.workflow import classify_image

    print(classify_image(args.goodnet, args.image, safe_mode=not args.unsafe))
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    import shlex

    from art_pruning_defense.benchmark import run_grid

    command = "art-prune " + " ".join(shlex.quote(a) for a in (args.argv or sys.argv[1:]))
    result = run_grid(
        args.grid_config,
        args.out,
        command,
        executor=args.executor,
        overwrite=args.force,
        ray_address=args.ray_address,
        cpus_per_cell=args.cpus_per_cell if args.cpus_per_cell is not None else 1,
        verbose=not args.quiet,
        model_cache=args.model_cache_dir,
    )
    with open(os.path.join(args.out, "results.md"), encoding="utf-8") as handle:
        print(handle.read().rstrip())
    print(f"cells: {len(result.ran)} run now, {len(result.skipped)} finished earlier, {len(result.failed)} unfinished")
    args.written = f"{args.out} (cells/, {', '.join(os.path.basename(f) for f in result.files)})"
    if result.failed:
        for key, error in result.failed.items():
            print(f"art-prune: cell {key} did not finish: {error}", file=sys.stderr)
        print("art-prune: rerun the same command to run the unfinished cells.", file=sys.stderr)
        return 1
    return 0


class _Parser(argparse.ArgumentParser):
    """
    argparse, with its errors on one line (``art-prune: error: ...``, exit code 2) and no usage text before them.
    """

    def error(self, message: str) -> NoReturn:
        """
        :param message: What is wrong with the arguments.
        """
        _print_error(message)
        sys.exit(2)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unsafe", action="store_true", help="allow model files that run code when loaded (Lambda)")
    parser.add_argument("--batch-size", type=int, default=256)


def build_parser() -> argparse.ArgumentParser:
    """
    :return: The argument parser of ``art-prune``.
    """
    parser = _Parser(prog="art-prune", description="Fine-pruning backdoor defence for ART.")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log progress messages (and TensorFlow's and other libraries' own)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    make_h5 = commands.add_parser(
        "make-h5",
        help="turn a directory of images into a lab-format HDF5 file (labels from 'label=N' in the names or a CSV)",
        description="Write the images of IMAGE_DIR (RGB, pixel values 0..255, all of one size, not resized) into OUT "
        "in the lab's HDF5 layout (data (N, 3, H, W), label (N,)). Labels come from 'label=N' in the file names "
        "(e.g. face_label=43.png), or from --labels. No TensorFlow needed.",
    )
    make_h5.add_argument("image_dir", help="directory of images (PNG, JPEG, BMP, TIFF)")
    make_h5.add_argument("out", metavar="OUT.h5", help="the HDF5 file to write (.h5 or .hdf5)")
    make_h5.add_argument("--labels", metavar="CSV", help="labels as rows 'filename,label' (default: from the names)")
    make_h5.add_argument(
        "--glob", metavar="PATTERN", help="only the files matching this shell pattern, e.g. 'cl_*' (quote it)"
    )
    make_h5.add_argument("--force", action="store_true", help="replace OUT if it exists")
    make_h5.set_defaults(func=_make_h5, needs_tensorflow=False)

    demo = commands.add_parser("demo", help="train a BadNet on scikit-learn's digits, repair it, print a table")
    demo.add_argument("--drops", type=float, nargs="+", default=[2.0, 4.0, 10.0], help="accuracy drops X (points)")
    demo.add_argument("--epochs", type=int, default=30, help="training epochs of the BadNet")
    demo.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=RECOMMENDED_FINE_TUNE_EPOCHS,
        help="fine-pruning epochs (0: pruning only)",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)

    repair = commands.add_parser(
        "repair", help="prune a BadNet on lab-format data; write B'(X), GoodNet(X), tables, plot"
    )
    repair.add_argument("--model", required=True, help=".keras, Keras 2 .h5 model, or weights .h5 with --arch")
    repair.add_argument("--arch", choices=["deepid"], help="architecture of a weights-only .h5 file")
    repair.add_argument("--valid", required=True, help="clean validation data (lab HDF5: data, label)")
    repair.add_argument("--poisoned-valid", help="triggered validation data (lab HDF5), for attack success rates")
    repair.add_argument("--target", type=int, help="attack target (default: the labels in --poisoned-valid)")
    repair.add_argument("--drops", type=float, nargs="+", default=[2.0, 4.0, 10.0], help="accuracy drops X (points)")
    repair.add_argument("--layer", help="layer to prune (default: the last Conv2D)")
    repair.add_argument(
        "--strategy",
        choices=STRATEGY_NAMES,
        default="activation",
        help="activation: the seeds' sweep at one layer; attack_aware: needs --poisoned-valid; lipschitz: CLP, "
        "every conv channel, data-free ranking; adversarial: ANP, every conv channel, masks learnt on --valid",
    )
    repair.add_argument("--fine-tune-epochs", type=int, default=0, help="fine-pruning epochs (0: pruning only)")
    repair.add_argument(
        "--fine-tune-mode",
        choices=FINE_TUNE_MODES,
        default=FINE_TUNE_MODES[0],
        help="plain: retrain on the clean data; feature-shift: FST (head re-initialised and pushed away from B's)",
    )
    repair.add_argument(
        "--fpr",
        type=float,
        help="calibrate every GoodNet written on --valid so that at most this share of clean inputs is flagged, "
        "in (0, 1), e.g. 0.01 (default: flag where B and B' disagree)",
    )
    repair.add_argument("--out", required=True, help="output directory (created; see --force)")
    repair.add_argument(
        "--force", action="store_true", help="replace an existing output directory that an earlier art-prune run wrote"
    )
    repair.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_model_options(repair)
    repair.set_defaults(func=_repair)

    evaluate = commands.add_parser("evaluate", help="clean accuracy, attack success and flags of B, B' and GoodNet")
    evaluate.add_argument("--goodnet", required=True, help="a saved GoodNet directory")
    evaluate.add_argument("--test", help="clean test data (lab HDF5)")
    evaluate.add_argument("--poisoned-test", help="triggered test data (lab HDF5)")
    evaluate.add_argument("--target", type=int, help="attack target (default: the labels in --poisoned-test)")
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    _add_model_options(evaluate)
    evaluate.set_defaults(func=_evaluate)

    classify = commands.add_parser("eval", help="the lab's interface: print the class of one image, N = poisoned")
    classify.add_argument("goodnet", help="a saved GoodNet directory")
    classify.add_argument("image", help="a PNG or JPEG image of the model's input size")
    _add_model_options(classify)
    classify.set_defaults(func=_eval_image)

    bench = commands.add_parser(
        "benchmark",
        help="a grid of BadNets (attacks × archs × poison rates × seeds); fine-pruning against ART's defences",
    )
    bench.add_argument(
        "--grid", help="a grid file (.toml, .yaml or .yml) with any of the keys below (options given here win)"
    )
    bench.add_argument("--data", help="'digits' (bundled; default) or an npz with x_train, y_train, x_test, y_test")
    bench.add_argument("--attacks", nargs="+", choices=ATTACK_NAMES, help="attacks (default: badnets)")
    bench.add_argument(
        "--archs", "--arch", nargs="+", choices=ARCH_NAMES, help="the BadNet's architectures (default: small-cnn)"
    )
    bench.add_argument("--model", help="instead of --archs: a .keras model whose architecture is trained from scratch")
    bench.add_argument(
        "--poison-rates",
        "--poison-rate",
        nargs="+",
        type=float,
        help="shares poisoned, in (0, 1) (of the target class for sig and clean-label; default 0.1)",
    )
    bench.add_argument("--seeds", "--seed", nargs="+", type=int, help="seeds (default: 0); figures are mean ± std")
    bench.add_argument("--trigger", choices=TRIGGER_NAMES, help="the badnets trigger (default: pattern)")
    bench.add_argument("--target", type=int, help="the attack's target class (default 0)")
    bench.add_argument("--n-valid", type=int, help="defender's clean split (default 300 for digits, else 5000)")
    bench.add_argument(
        "--epochs", type=int, help="training epochs (default: 30 on digits, else the architecture's: 3 or 25)"
    )
    bench.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train on random crops (4-pixel padding) and flips (default: on for colour images)",
    )
    bench.add_argument("--no-flip", action="store_true", default=None, help="no horizontal flips when augmenting")
    bench.add_argument("--defences", nargs="+", choices=DEFENCE_NAMES, help="a subset of the defences (default: all)")
    bench.add_argument(
        "--executor", choices=["local", "ray"], default="local", help="run cells here, one by one, or as Ray tasks"
    )
    bench.add_argument("--ray-address", help="with --executor ray: join this Ray cluster (default: start a local one)")
    bench.add_argument("--cpus-per-cell", type=float, help="with --executor ray: CPUs reserved per cell (default 1)")
    bench.add_argument(
        "--max-cells", type=int, default=None, help="refuse a grid of more cells than this (default 10000)"
    )
    bench.add_argument(
        "--out", required=True, help="output directory: created, or resumed where it holds this grid's cells"
    )
    bench.add_argument(
        "--force", action="store_true", help="replace an existing output directory that an earlier art-prune run wrote"
    )
    cache = bench.add_mutually_exclusive_group()
    cache.add_argument(
        "--model-cache",
        metavar="DIR",
        help="reuse each trained BadNet from this directory, and store new ones there "
        "(default: $XDG_CACHE_HOME/art_pruning_defense/models, else ~/.cache/art_pruning_defense/models)",
    )
    cache.add_argument("--no-model-cache", action="store_true", help="train every BadNet; read and write no cache")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.set_defaults(func=_benchmark)
    return parser


# ---------------------------------------------------------------------------------------------------------------------
# Checks made before anything heavy is imported.
# ---------------------------------------------------------------------------------------------------------------------


def _check_drops(values: Sequence[float]) -> None:
    for value in values:
        if not (math.isfinite(value) and 0.0 < value <= 100.0):
            raise ValueError(f"--drops: each accuracy drop must be in (0, 100] percentage points, got {value:g}.")


def _check_int(value: int | None, option: str, minimum: int, name: str | None = None) -> None:
    if value is not None and value < minimum:
        what = "a positive integer" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{option}: {name or option.lstrip('-').replace('-', '_')} must be {what}, got {value}.")


def _check_input(path: str | None, option: str, what: str) -> None:
    if path is None:
        return
    if os.path.isdir(path):
        raise IsADirectoryError(f"{option}: {what} {path} is a directory; expected a file.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{option}: {what} {path} does not exist.")
    if not os.path.isfile(path):
        raise ValueError(f"{option}: {what} {path} is not a regular file (a FIFO, socket or device?).")


def _check_goodnet_dir(path: str) -> None:
    if not os.path.isdir(path):
        state = "does not exist" if not os.path.exists(path) else "is not a directory"
        raise FileNotFoundError(f"{path} is not a saved GoodNet: it {state}.")
    from art_pruning_defense import goodnet_format

    if os.path.isfile(os.path.join(path, goodnet_format.METADATA_FILE)):
        goodnet_format.verify(path)  # before TensorFlow: a mismatch is refused at once (load checks it again)


def _check_output_file(path: str, force: bool) -> None:
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
        _check_output_file(args.out, args.force)
    if command in ("demo", "repair"):
        _check_drops(args.drops)
        _check_int(args.fine_tune_epochs, "--fine-tune-epochs", 0)
    if command == "demo":
        _check_int(args.epochs, "--epochs", 1)
    if command in ("repair", "evaluate", "eval"):
        _check_int(args.batch_size, "--batch-size", 1)
    if command == "repair":
        _check_int(args.target, "--target", 0, "poisoned_target")
        if args.fpr is not None and not (math.isfinite(args.fpr) and 0.0 < args.fpr < 1.0):
            raise ValueError(f"--fpr must be in (0, 1) (a share of clean inputs, 0.01 for 1 %), got {args.fpr:g}.")
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
        _check_goodnet_dir(args.goodnet)
        _check_input(args.test, "--test", "lab HDF5 file")
        _check_input(args.poisoned_test, "--poisoned-test", "lab HDF5 file")
    elif command == "eval":
        _check_goodnet_dir(args.goodnet)
        _check_input(args.image, "image", "image")
    elif command == "benchmark":
        _check_benchmark(args)


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
}


def _check_benchmark(args: argparse.Namespace) -> None:
    """
    Make the grid (from ``--grid`` and the options, which win) and check it and ``--out``, without TensorFlow; the
    grid is kept in ``args.grid_config``.
    """
    import importlib.util

    from art_pruning_defense.benchmark.config import load_grid_file, make_grid
    from art_pruning_defense.benchmark.store import check_grid_output

    for rate in args.poison_rates or ():
        if not (math.isfinite(rate) and 0.0 < rate < 1.0):
            raise ValueError(f"--poison-rates: each poison rate must be in (0, 1), got {rate:g}.")
    for seed in args.seeds or ():
        _check_int(seed, "--seeds", 0, "seed")
        if seed > 2**32 - 1:
            raise ValueError(f"--seeds: seed must be in [0, 4294967295], got {seed}.")
    _check_int(args.n_valid, "--n-valid", 1)
    _check_int(args.epochs, "--epochs", 1)
    _check_int(args.target, "--target", 0)
    if args.cpus_per_cell is not None and not (math.isfinite(args.cpus_per_cell) and args.cpus_per_cell > 0):
        raise ValueError(f"--cpus-per-cell must be a positive number, got {args.cpus_per_cell:g}.")
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
    from art_pruning_defense.benchmark.config import check_target

    check_target(args.grid_config.cells()[0])  # the labels alone: a target outside the classes is refused now


def _release_tensorflow_memory() -> None:
    """
    Let TensorFlow hand freed tensors back to the system (the benchmark's memory: see
    :func:`art_pruning_defense.benchmark._memory.use_system_allocator`). Called before TensorFlow is imported.
    """
    from art_pruning_defense.benchmark._memory import use_system_allocator

    if not use_system_allocator():
        logging.getLogger(__name__).debug("TensorFlow was imported already: its memory pool stays as it is.")


def _print_done(args: argparse.Namespace, seconds: float) -> None:
    """
    The closing line of a successful command, on stderr (stdout stays the command's result: a table, JSON, a class):
    what was written, if anything, and the wall time.
    """
    line = f"wrote {args.written} in {seconds:.1f} s" if args.written else f"done in {seconds:.1f} s (nothing written)"
    sys.stdout.flush()
    print(f"art-prune: {line}", file=sys.stderr, flush=True)


def _print_error(message: object) -> None:
    text = " ".join(str(message).split())
    print(f"art-prune: error: {text}", file=sys.stderr)


@contextlib.contextmanager
def _locked_out(args: argparse.Namespace) -> Iterator[None]:
    """
    Hold the lock on ``--out`` for the whole run, so that a second run to the same directory fails at once.
    """
    out = getattr(args, "out", None)
    if out is None:
        yield
    else:
        with output_lock(out):
            yield


def main(argv: Sequence[str] | None = None) -> int:
    """
    :param argv: Arguments (default: ``sys.argv[1:]``).
    :return: Exit code: 0 on success, 2 on bad input, 130 when interrupted.
    """
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else None
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    # SIGTERM ends the run like Ctrl-C, so that temporary artefacts are removed on the way out.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    start = time.monotonic()
    args.written = None
    shown = warnings.showwarning
    warnings.showwarning = functools.partial(_show_warning, shown)
    try:
        check_arguments(args)
        with _locked_out(args):  # before TensorFlow is imported: a second run on --out fails at once
            if args.command == "benchmark":
                _release_tensorflow_memory()
            if getattr(args, "needs_tensorflow", True) and not args.verbose:
                quiet()
            code = int(args.func(args))
        _print_done(args, time.monotonic() - start)
        return code
    except (ValueError, TypeError, OSError) as error:
        _print_error(getattr(error, "cli_message", error))
        return 2
    except RecursionError:
        _print_error("an input file nests too deeply to be read; refused.")
        return 2
    except KeyboardInterrupt:
        print("art-prune: interrupted; nothing was left half-written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        warnings.showwarning = shown


def _show_warning(
    previous: Callable, message: object, category: type, filename: str, lineno: int, file=None, line=None
) -> None:
    """
    This package's warnings on one line of stderr, ``art-prune: warning: ...``; others as ``previous`` shows them.
    """
    if not category.__module__.startswith("art_pruning_defense"):
        previous(message, category, filename, lineno, file, line)
        return
    print(f"art-prune: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
