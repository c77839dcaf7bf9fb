"""
Reports: markdown tables, CSV and JSON files, plots. No computation happens here.
"""

from __future__ import annotations

import csv
import json
import math
from typing import Any, Sequence

from art_pruning_defense._io import atomic_file

#: Columns of the lab's summary table: (key, header).
SUMMARY_COLUMNS = (
    ("accuracy_drop", "X (points)"),
    ("channels_pruned", "channels pruned"),
    ("fraction_pruned", "fraction pruned"),
    ("clean_accuracy", "clean accuracy %"),
    ("attack_success_rate", "attack success %"),
    ("poisoned_flagged", "poisoned flagged %"),
    ("clean_flagged", "clean flagged %"),
)


#: Characters escaped with a backslash in Markdown text (``<`` and ``>`` become entities: no HTML gets through).
_MARKDOWN_SPECIAL = "\\|`*_[]"


def escape_markdown(text: object) -> str:
    """
    :param text: Any text (a name, a note, an error message from a file).
    :return: It as one line of inert Markdown: every run of whitespace (newlines included) is one space, the
             characters of Markdown's syntax are escaped, ``<`` and ``>`` are entities. A ``|`` can no longer end a
             table cell, nor a newline add a row.
    """
    escaped = []
    for char in " ".join(str(text).split()):
        if char in _MARKDOWN_SPECIAL:
            escaped.append("\\" + char)
        elif char == "<":
            escaped.append("&lt;")
        elif char == ">":
            escaped.append("&gt;")
        elif ord(char) < 32 or ord(char) == 127:
            escaped.append(" ")
        else:
            escaped.append(char)
    return "".join(escaped)


def _cell(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape_markdown(value)


def _is_number(value: Any) -> bool:
    """
    :return: Whether ``value`` is a number, or text that shows one (``"0.8357"``, ``"79.82 ± 1.20"``).
    """
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        return True
    try:
        float(str(value).split(" ± ")[0])
    except ValueError:
        return False
    return True


def _is_text(rows: Sequence[dict], key: str) -> bool:
    """
    :return: Whether a column holds text: some row has a value there that is neither missing nor a number.
    """
    return any(row.get(key) is not None and not _is_number(row.get(key)) for row in rows)


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]], digits: int = 2) -> str:
    """
    :param rows: One dict per row.
    :param columns: ``(key, header)`` pairs, in order.
    :param digits: Decimals for floats.
    :return: A GitHub-flavoured markdown table (``–`` where a value does not apply): the first column and columns
             of text left-aligned, columns of numbers right-aligned.
    """
    header = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "|" + "|".join(" --- " if i == 0 or _is_text(rows, key) else " ---: " for i, (key, _) in enumerate(columns))
    rule += "|"
    body = ["| " + " | ".join(_cell(row.get(key), digits) for key, _ in columns) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def write_csv(path: str, rows: Sequence[dict]) -> None:
    """
    :param path: Destination (written atomically).
    :param rows: One dict per row; the first row's keys are the columns.
    """
    with atomic_file(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else [])
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})


def write_json(path: str, data: Any) -> None:
    """
    :param path: Destination (written atomically).
    :param data: JSON-serialisable data.
    """
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")


def write_text(path: str, text: str) -> None:
    """
    :param path: Destination (written atomically).
    :param text: Content.
    """
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)


def plot_sweep(records: Sequence[dict], steps: dict[float, int], path: str, title: str = "") -> None:
    """
    Clean accuracy and attack success rate against the fraction of channels pruned, with the step chosen for each X
    marked; written as a PNG, atomically.

    :param records: Sweep records as dicts (``fraction_pruned``, ``clean_accuracy``, ``attack_success_rate``).
    :param steps: ``{X: step}``.
    :param path: Destination PNG.
    :param title: Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fraction = [100.0 * r["fraction_pruned"] for r in records]
    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=120)
    axis.plot(fraction, [r["clean_accuracy"] for r in records], color="tab:blue", label="clean accuracy")
    if records and records[0].get("attack_success_rate") is not None:
        axis.plot(fraction, [r["attack_success_rate"] for r in records], color="tab:red", label="attack success rate")
    by_step: dict[int, list[float]] = {}
    for drop, step in sorted(steps.items()):
        by_step.setdefault(step, []).append(drop)
    for step, drops in by_step.items():  # one label per step: several X may stop at the same one
        axis.axvline(fraction[step], color="grey", linestyle=":", linewidth=1)
        label = "X=" + ", ".join(f"{drop:g}" for drop in drops)
        axis.annotate(label, (fraction[step], 2), rotation=90, fontsize=8, color="grey", ha="right")
    axis.set_xlabel("channels pruned (%)")
    axis.set_ylabel("%")
    axis.set_ylim(0, 101)
    axis.set_xlim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower left")
    axis.set_title(title)
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def plot_tradeoff(rows: Sequence[dict], path: str, title: str = "") -> None:
    """
    Clean accuracy against attack success rate, one labelled point per defence; written as a PNG, atomically.

    :param rows: Rows with ``defence``, ``clean_accuracy`` and ``attack_success_rate`` (rows without both are left
           out).
    :param path: Destination PNG.
    :param title: Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in rows if r.get("clean_accuracy") is not None and r.get("attack_success_rate") is not None]
    figure, axis = plt.subplots(figsize=(8, 6), dpi=120)
    markers = "osD^v<>phX*"
    colours = plt.get_cmap("tab20")
    for index, row in enumerate(points):
        axis.scatter(
            row["attack_success_rate"],
            row["clean_accuracy"],
            marker=markers[index % len(markers)],
            color=colours(index % 20),
            s=55,
            label=row["defence"],
        )
    axis.set_xlabel("attack success rate (%) — lower is better")
    axis.set_ylabel("clean accuracy (%) — higher is better")
    axis.set_xlim(-3, 103)
    if points:
        low = min(r["clean_accuracy"] for r in points)
        axis.set_ylim(max(0.0, low - 3), 100.5)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower left", ncol=2)
    axis.set_title(title)
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
