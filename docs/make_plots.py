"""
Draw the benchmark's result plots for docs/benchmark.md from the tables on that page, with the plotting function of
``art-prune benchmark`` (clean accuracy against attack success, one point per defence, error bars over the seeds):

    python docs/make_plots.py

writes ``docs/images/results_<data>_<attack>.png``. Rerun it when a results table of the page changes.
"""

from __future__ import annotations

import re
from pathlib import Path

from art_pruning_defense.benchmark.report import plot_grid

DOCS = Path(__file__).resolve().parent
#: (heading of the table's section on the page, image name, attack).
PLOTS = (
    ("### MNIST, small CNN, BadNets 10 %\n", "results_mnist_badnets.png", "badnets"),
    ("### CIFAR-10, ResNet-20, BadNets 10 %, three seeds (beside STRIP)\n", "results_cifar10_badnets.png", "badnets"),
    ("### CIFAR-10, ResNet-20, Blended 10 %, three seeds (beside STRIP)\n", "results_cifar10_blended.png", "blended"),
)
_VALUE = re.compile(r"^\**(-?\d+(?:\.\d+)?)\**(?: ± (\d+(?:\.\d+)?))?\**$")


def table_rows(page: str, heading: str) -> list[dict]:
    """The rows of the first table after ``heading``: defence, clean accuracy and attack success (mean, std)."""
    lines = page[page.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    table = []
    for line in lines[start:]:
        if not line.startswith("| "):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, rows = table[0], []
    for cells in table[2:]:
        cell = dict(zip(header, cells))
        clean, attack = _VALUE.match(cell["clean accuracy %"]), _VALUE.match(cell["attack success %"])
        rows.append(
            {
                "defence": cell["defence"].replace("**", ""),
                "clean_accuracy_mean": float(clean.group(1)),
                "clean_accuracy_std": float(clean.group(2)) if clean.group(2) else None,
                "attack_success_rate_mean": float(attack.group(1)),
                "attack_success_rate_std": float(attack.group(2)) if attack.group(2) else None,
            }
        )
    return rows


def main() -> None:
    page = (DOCS / "benchmark.md").read_text(encoding="utf-8")
    for heading, name, attack in PLOTS:
        rows = table_rows(page, heading)
        plot_grid([{"attack": attack, "rows": rows}], attack, str(DOCS / "images" / name))
        print(f"wrote docs/images/{name} ({len(rows)} defences)")


if __name__ == "__main__":
    main()
