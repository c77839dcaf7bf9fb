"""
The ``art-prune`` command line. Parsing and printing only: the work is done by the package's modules.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
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


def _repair(args: argparse.Namespace) -> int:
    from art_pruning_defense.reports import SUMMARY_COLUMNS, markdown_table
    from art_pruning_defense.workflow import repair

    result = repair(
        model_path=args.model,
        valid_path=args.valid,
        out_dir=args.out,
        arch=args.arch,
        poisoned_valid_path=args.poisoned_valid,
        target=args.target,
        drops=args.drops,
        layer_name=args.layer,
        batch_size=args.batch_size,
        fine_tune_epochs=args.fine_tune_epochs,
        strategy=args.strategy,
        force=args.force,
        safe_mode=not args.unsafe,
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
    print(f"wrote {result.out_dir}: {', '.join(result.files)}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from art_pruning_defense.reports import markdown_table
    from art_pruning_defense.workflow import evaluate

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
    from art_pruning_defense.workflow import classify_image

    print(classify_image(args.goodnet, args.image, safe_mode=not args.unsafe))
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    import shlex

    from art_pruning_defense.benchmark import (
        BENCHMARK_COLUMNS,
        BenchmarkConfig,
        markdown_rows,
        run_benchmark,
        write_benchmark,
    )
    from art_pruning_defense.reports import markdown_table

    options = {
        "data": args.data,
        "poison_rate": args.poison_rate,
        "trigger": args.trigger,
        "target": args.target,
        "seed": args.seed,
        "n_valid": args.n_valid,
        "epochs": args.epochs,
    }
    if args.defences:
        options["defences"] = args.defences
    config = BenchmarkConfig(**options)
    if os.path.exists(args.out) and not args.force:
        raise FileExistsError(f"{args.out} exists; pass --force to replace it.")
    rows = run_benchmark(config, verbose=not args.quiet)
    command = "art-prune " + " ".join(shlex.quote(a) for a in (args.argv or sys.argv[1:]))
    name = "digits" if args.data == "digits" else os.path.basename(args.data)
    title = f"BadNet on {name}: {args.poison_rate:g} poisoned, {args.trigger} trigger, target {args.target}"
    write_benchmark(rows, args.out, command, overwrite=args.force, title=title)
    print(title)
    print(f"command: {command}")
    print(markdown_table(markdown_rows(rows), BENCHMARK_COLUMNS))
    print(f"wrote {args.out}: results.json, results.md, results.png")
    return 0


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unsafe", action="store_true", help="allow model files that run code when loaded (Lambda)")
    parser.add_argument("--batch-size", type=int, default=256)


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
        choices=["activation", "attack_aware"],
        default="activation",
        help="attack_aware needs --poisoned-valid (the defender holds triggered samples)",
    )
    repair.add_argument("--fine-tune-epochs", type=int, default=0, help="fine-pruning epochs (0: pruning only)")
    repair.add_argument("--out", required=True, help="output directory (created; see --force)")
    repair.add_argument("--force", action="store_true", help="replace an existing output directory")
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

    bench = commands.add_parser("benchmark", help="one BadNet, fine-pruning against ART's own defences, one table")
    bench.add_argument("--data", default="digits", help="'digits' (bundled) or an npz with x_train, y_train, ...")
    bench.add_argument("--poison-rate", type=float, default=0.1)
    bench.add_argument("--trigger", choices=["pattern", "pixel"], default="pattern")
    bench.add_argument("--target", type=int, default=0)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--n-valid", type=int, help="defender's clean split (default 300 for digits, else 5000)")
    bench.add_argument("--epochs", type=int, help="training epochs (default 30 for digits, else 3)")
    bench.add_argument(
        "--defences",
        nargs="+",
        help="a subset of: none pruning fine-pruning attack-aware "
        "activation-clustering spectral-signatures neural-cleanse strip",
    )
    bench.add_argument("--out", required=True, help="output directory")
    bench.add_argument("--force", action="store_true", help="replace an existing output directory")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.set_defaults(func=_benchmark)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    :param argv: Arguments (default: ``sys.argv[1:]``).
    :return: Exit code: 0 on success, 2 on bad input.
    """
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else None
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    # SIGTERM ends the run like Ctrl-C, so that temporary artefacts are removed on the way out.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return int(args.func(args))
    except (ValueError, TypeError, OSError) as error:
        print(f"art-prune: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("art-prune: interrupted; nothing was left half-written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
