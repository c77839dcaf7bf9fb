"""
The argument parser of ``art-prune``: its options, and its errors on one line, ``art-prune: error: ...`` (exit code 2),
ending with the ``--help`` to read.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Sequence

from art_pruning_defense._defaults import (
    ARCH_NAMES,
    ATTACK_NAMES,
    DEFENCE_NAMES,
    RECOMMENDED_CALIBRATION_FRACTION,
    RECOMMENDED_FINE_TUNE_EPOCHS,
    STRATEGY_NAMES,
    TRIGGER_NAMES,
)
from art_pruning_defense._params import FINE_TUNE_MODES
from art_pruning_defense.lab._commands import (
    run_benchmark,
    run_demo,
    run_eval,
    run_evaluate,
    run_make_h5,
    run_repair,
)


def print_error(message: object) -> None:
    """
    :param message: What went wrong; printed as one line ``art-prune: error: ...`` on stderr.
    """
    text = " ".join(str(message).split())
    print(f"art-prune: error: {text}", file=sys.stderr)


class Parser(argparse.ArgumentParser):
    """
    argparse, with its errors on one line (``art-prune: error: ... (see art-prune COMMAND --help)``, exit code 2) and
    no usage text before them.
    """

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """
        As :meth:`argparse.ArgumentParser.parse_args`, with unrecognised arguments pointed at the help of the
        subcommand they were given to.
        """
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "command", None)
            self.fail(f"unrecognized arguments: {' '.join(extras)}", f"{self.prog} {command}" if command else self.prog)
        return parsed

    def error(self, message: str) -> NoReturn:
        """
        :param message: What is wrong with the arguments.
        """
        self.fail(message, self.prog)

    @staticmethod
    def fail(message: str, prog: str) -> NoReturn:
        """
        Print ``message`` with a pointer to ``prog --help`` as one error line and exit with code 2.

        :param message: What is wrong with the arguments.
        :param prog: The command whose ``--help`` tells the right arguments (``art-prune repair``).
        """
        print_error(f"{message.rstrip('.')} (see {prog} --help)")
        sys.exit(2)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unsafe", action="store_true", help="allow model files that run code when loaded (Lambda)")
    parser.add_argument("--batch-size", type=int, default=256)


def build_parser() -> argparse.ArgumentParser:
    """
    :return: The argument parser of ``art-prune``.
    """
    parser = Parser(prog="art-prune", description="Fine-pruning backdoor defence for ART.")
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
    make_h5.set_defaults(func=run_make_h5, needs_tensorflow=False)

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
    demo.set_defaults(func=run_demo)

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
        help="calibrate every GoodNet written so that a fresh clean input is flagged with at most this probability, "
        "in (0, 1), e.g. 0.01, on the part of --valid held out of pruning and fine-tuning (default: flag where B "
        "and B' disagree)",
    )
    repair.add_argument(
        "--calibration-fraction",
        type=float,
        default=RECOMMENDED_CALIBRATION_FRACTION,
        help="with --fpr: the share of --valid held out to calibrate, in (0, 1); it needs at least 1/FPR - 1 images "
        f"(default {RECOMMENDED_CALIBRATION_FRACTION:g})",
    )
    repair.add_argument("--out", required=True, help="output directory (created; see --force)")
    repair.add_argument(
        "--force", action="store_true", help="replace an existing output directory that an earlier art-prune run wrote"
    )
    repair.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_model_options(repair)
    repair.set_defaults(func=run_repair)

    evaluate = commands.add_parser("evaluate", help="clean accuracy, attack success and flags of B, B' and GoodNet")
    evaluate.add_argument("--goodnet", required=True, help="a saved GoodNet directory")
    evaluate.add_argument("--test", help="clean test data (lab HDF5)")
    evaluate.add_argument("--poisoned-test", help="triggered test data (lab HDF5)")
    evaluate.add_argument("--target", type=int, help="attack target (default: the labels in --poisoned-test)")
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    _add_model_options(evaluate)
    evaluate.set_defaults(func=run_evaluate)

    classify = commands.add_parser("eval", help="the lab's interface: print the class of one image, N = poisoned")
    classify.add_argument("goodnet", help="a saved GoodNet directory")
    classify.add_argument("image", help="a PNG or JPEG image of the model's input size")
    _add_model_options(classify)
    classify.set_defaults(func=run_eval)

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
        "--retune-poisons",
        nargs="*",
        type=int,
        metavar="K",
        help="re-tuning attack after each repair: 5 epochs of plain SGD on the clean split plus K poisoned training "
        "images, one run per K (no value: 5; default: no re-tuning), and a control row on a model trained without "
        "poison",
    )
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
    bench.set_defaults(func=run_benchmark)
    return parser
