"""
The ``art-prune`` command line. Parsing and printing only: the work is done by the package's modules.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from art_pruning_defense.fine_pruning import RECOMMENDED_FINE_TUNE_EPOCHS


def _demo(args: argparse.Namespace) -> int:
    from art_pruning_defense.demo import DEMO_COLUMNS, run_demo
    from art_pruning_defense.reports import markdown_table

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


def build_parser() -> argparse.ArgumentParser:
    """
    :return: The argument parser of ``art-prune``.
    """
    parser = argparse.ArgumentParser(prog="art-prune", description="Fine-pruning backdoor defence for ART.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    commands = parser.add_subparsers(dest="command", required=True)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    :param argv: Arguments (default: ``sys.argv[1:]``).
    :return: Exit code: 0 on success, 2 on bad input.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as error:
        print(f"art-prune: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
