"""
The benchmark's report: markdown tables, JSON and plots of result rows.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

from art_pruning_defense._io import atomic_directory
from art_pruning_defense.reports import markdown_table, plot_tradeoff, write_json, write_text

logger = logging.getLogger(__name__)

#: Columns of ``results.md``: (key, header).
BENCHMARK_COLUMNS = (
    ("defence", "defence"),
    ("clean_accuracy", "clean accuracy %"),
    ("attack_success_rate", "attack success %"),
    ("poison_detection_tpr", "poison detection TPR %"),
    ("poison_detection_fpr", "poison detection FPR %"),
    ("poisoned_flagged", "triggered test flagged %"),
    ("clean_flagged", "clean test flagged %"),
    ("seconds", "seconds"),
    ("notes", "notes"),
)

#: Printed under the table of ``results.md``.
LEGEND = (
    "Percentages are of the test set (clean accuracy; attack success on triggered images of the other classes; "
    "test inputs flagged or abstained on) or of the training set (poison detection TPR: poisoned samples flagged; "
    "FPR: clean samples flagged); – where a figure does not apply. Seconds: wall time of the defence alone, from the "
    "trained BadNet to its figures (work shared by the rows of one defence counted in each)."
)

#: File names written by :func:`write_benchmark`.
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RESULTS_PNG = "results.png"


def markdown_rows(rows: Sequence[dict]) -> list[dict]:
    """
    :return: The rows for the markdown table: ``notes`` holds the error (if any) or the note, with ``|`` escaped.
    """
    shown = []
    for row in rows:
        text = f"error: {row['error']}" if row.get("error") else row.get("note") or ""
        text = " ".join(str(text).split()).replace("|", "\\|")
        shown.append({**row, "notes": text or None})
    return shown


def write_benchmark(
    rows: Sequence[dict], out_dir: str, command: str, overwrite: bool = False, title: str = "Backdoor defences"
) -> list[str]:
    """
    Write ``results.json`` (the rows), ``results.md`` (the command line that produced them, then the table) and
    ``results.png`` (clean accuracy against attack success rate, one point per defence) into ``out_dir``,
    atomically: the directory appears complete or not at all.

    :param rows: Rows from :func:`run_benchmark`.
    :param out_dir: Directory to create.
    :param command: The command line that produced the rows (printed above the table).
    :param overwrite: Replace an existing directory (only one that art-prune wrote; only once the new one is
                      complete).
    :param title: Title of the table and of the plot.
    :return: The paths written.
    :raises FileExistsError: If ``out_dir`` exists and ``overwrite`` is false.
    """
    rows = list(rows)
    if not rows or not all(isinstance(row, dict) and "defence" in row for row in rows):
        raise ValueError("rows must be a non-empty list of result rows (dicts with a 'defence' key).")
    if not isinstance(command, str) or not command.strip():
        raise ValueError("command must be the (non-empty) command line that produced the rows.")
    markdown = "\n".join(
        [
            f"# {title}",
            "",
            "Produced by:",
            "",
            "```",
            command.strip(),
            "```",
            "",
            markdown_table(markdown_rows(rows), BENCHMARK_COLUMNS),
            "",
            LEGEND,
            "",
        ]
    )
    with atomic_directory(out_dir, overwrite=overwrite, kind="benchmark") as tmp:
        write_json(os.path.join(tmp, RESULTS_JSON), rows)
        write_text(os.path.join(tmp, RESULTS_MD), markdown)
        plot_tradeoff(rows, os.path.join(tmp, RESULTS_PNG), title=title)
    written = [os.path.join(os.path.abspath(out_dir), name) for name in (RESULTS_JSON, RESULTS_MD, RESULTS_PNG)]
    logger.info("Wrote %s.", ", ".join(written))
    return written
