"""
The commands of ``art-prune``: each runs one subcommand on its checked arguments (see
:func:`~art_pruning_defense.lab._checks.check_arguments`), prints its result on stdout and returns the exit code.
The package's modules do the work; they, and TensorFlow, are imported when a command runs.
"""

from __future__ import annotations

import argparse
import os
import sys


def run_make_h5(args: argparse.Namespace) -> int:
    from art_pruning_defense.lab.data import images_to_lab_h5

    n, shape = images_to_lab_h5(args.image_dir, args.out, labels_csv=args.labels, pattern=args.glob)
    source = f"labels from {args.labels}" if args.labels else "labels from the file names"
    args.written = f"{args.out} ({n} images of {shape[0]}×{shape[1]}×{shape[2]}, {source})"
    return 0


def run_demo(args: argparse.Namespace) -> int:
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


def run_repair(args: argparse.Namespace) -> int:
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
        **({"calibration_fraction": args.calibration_fraction} if args.fpr is not None else {}),
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
        low, high = calibration["band"]
        print(
            f"calibrated at a false-positive rate of {calibration['false_positive_rate']:g} on the "
            f"{calibration['n_calibration']} of the {calibration['n_valid']} clean validation samples held out of "
            f"pruning and fine-tuning (flagged: score > threshold; on fresh clean inputs the rate lies in "
            f"[{100 * low:.2f}, {100 * high:.2f}] % with 95 % probability): {thresholds}"
        )
    args.written = f"{result.out_dir} ({', '.join(result.files)})"
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
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


def run_eval(args: argparse.Namespace) -> int:
    from art_pruning_defense.lab.workflow import classify_image

    print(classify_image(args.goodnet, args.image, safe_mode=not args.unsafe))
    return 0


def run_benchmark(args: argparse.Namespace) -> int:
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
