"""
Reports: markdown tables, CSV and JSON files, plots. No computation happens here.
"""
from __future__ import annotations

import csv
import json
import math
from typing import Any, Sequence

from art_pruning_defense._io import atomic_file


def _cell(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]], digits: int = 2) -> str:
    """
    :param rows: One dict per row.
    :param columns: ``(key, header)`` pairs, in order.
    :param digits: Decimals for floats.
    :return: A GitHub-flavoured markdown table (``–`` where a value does not apply).
    """
    header = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "|" + "|".join(" --- " if i == 0 else " ---: " for i in range(len(columns))) + "|"
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
