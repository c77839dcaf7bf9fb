"""
The ``art-prune`` command line: :func:`main` parses the arguments (:mod:`~art_pruning_defense.lab._parser`), checks them
(:mod:`~art_pruning_defense.lab._checks`), runs the command (:mod:`~art_pruning_defense.lab._commands`) and prints
how it ended. The work is done by the package's modules.

Everything that can be checked without TensorFlow (argument ranges, input paths, ``--out``) is checked before
TensorFlow is imported, so that ``--help`` and every argument mistake answer at once (target: under a second), with
one line ``art-prune: error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import signal
import sys
import time
import warnings
from typing import Callable, Iterator, Sequence

from art_pruning_defense._io import output_lock
from art_pruning_defense.lab._checks import check_arguments
from art_pruning_defense.lab._parser import build_parser, print_error
from art_pruning_defense.lab._quiet import quiet

__all__ = ["build_parser", "check_arguments", "main"]


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
        print_error(getattr(error, "cli_message", error))
        return 2
    except RecursionError:
        print_error("an input file nests too deeply to be read; refused.")
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
