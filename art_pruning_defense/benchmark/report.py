"""
The benchmark's report: markdown tables, JSON and plots of result rows.
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Any, Sequence

from art_pruning_defense._io import atomic_directory, atomic_file
from art_pruning_defense.lab.output import escape_markdown, markdown_table, plot_tradeoff, write_json, write_text

logger = logging.getLogger(__name__)

#: Keys of every row, in order. ``note`` and ``error`` are ``None`` unless there is something to say;
#: ``peak_rss_mib`` is the peak resident memory of the process while the row's defence ran (set by the runner).
ROW_KEYS = (
    "defence",
    "clean_accuracy",
    "attack_success_rate",
    "poison_detection_tpr",
    "poison_detection_fpr",
    "poisoned_flagged",
    "clean_flagged",
    "auroc",
    "tpr_at_1pct_fpr",
    "poison_detection_auroc",
    "seconds",
    "note",
    "error",
    "roc",
    "peak_rss_mib",
)

#: Columns of ``results.md``: (key, header).
BENCHMARK_COLUMNS = (
    ("defence", "defence"),
    ("clean_accuracy", "clean accuracy %"),
    ("attack_success_rate", "attack success %"),
    ("poison_detection_tpr", "poison detection TPR %"),
    ("poison_detection_fpr", "poison detection FPR %"),
    ("poisoned_flagged", "triggered test flagged %"),
    ("clean_flagged", "clean test flagged %"),
    ("auroc", "detection AUROC"),
    ("tpr_at_1pct_fpr", "TPR % at 1 % FPR"),
    ("poison_detection_auroc", "poison detection AUROC"),
    ("seconds", "seconds"),
    ("peak_rss_mib", "peak MiB"),
    ("notes", "notes"),
)

#: Figures shown with four decimals (areas under a curve, 0–1).
FOUR_DECIMALS = ("auroc", "poison_detection_auroc")

#: Printed under the table of ``results.md``.
LEGEND = (
    "Percentages are of the test set (clean accuracy; attack success on triggered images of the other classes; "
    "test inputs flagged or abstained on) or of the training set (poison detection TPR: poisoned samples flagged; "
    "FPR: clean samples flagged); – where a figure does not apply. Detection AUROC and TPR at 1 % FPR: of the "
    "test-time detector's continuous score (GoodNet: how far B' moves from B's answer; STRIP: entropy over blends), "
    "clean vs triggered test images, the threshold read from the test ROC; poison detection AUROC: of the GoodNet "
    "score on the training set (activation clustering and spectral signatures expose no comparable per-sample "
    "score). Seconds: wall time of the defence alone, from the trained BadNet to its figures (work shared by the "
    "rows of one defence counted in each). Peak MiB: the process's peak resident memory while the defence ran (the "
    "data and the BadNet included)."
)

#: File names written by :func:`write_benchmark`.
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RESULTS_PNG = "results.png"
ROC_PNG = "roc.png"
#: A cell key as the store writes it: shown as code in ``results.md``, anything else escaped.
_SAFE_KEY = re.compile(r"[A-Za-z0-9.+_-]{1,250}")
#: Title of the grid's ``results.md``.
GRID_TITLE = "Backdoor defences"


def markdown_rows(rows: Sequence[dict]) -> list[dict]:
    """
    :return: The rows for the markdown table: ``notes`` holds the error (if any) or the note, with ``|`` escaped.
    """
    shown = []
    for row in rows:
        text = f"error: {row['error']}" if row.get("error") else row.get("note") or ""
        text = " ".join(str(text).split())  # escaped by markdown_table
        four = {key: f"{row[key]:.4f}" for key in FOUR_DECIMALS if row.get(key) is not None}
        shown.append({**row, **four, "notes": text or None})
    return shown


def write_benchmark(
    rows: Sequence[dict], out_dir: str, command: str, overwrite: bool = False, title: str = "Backdoor defences"
) -> list[str]:
    """
    Write ``results.json`` (the rows), ``results.md`` (the command line that produced them, then the table),
    ``results.png`` (clean accuracy against attack success rate, one point per defence) and, where some row has a
    ROC curve, ``roc.png`` (one curve per test-time detector) into ``out_dir``, atomically: the directory appears
    complete or not at all.

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
            markdown_table(markdown_rows(rows), _with_retune_columns(retune_metrics(rows))),
            "",
            LEGEND + (" " + RETUNE_LEGEND if retune_metrics(rows) else ""),
            "",
        ]
    )
    with atomic_directory(out_dir, overwrite=overwrite, kind="benchmark") as tmp:
        write_json(os.path.join(tmp, RESULTS_JSON), rows)
        write_text(os.path.join(tmp, RESULTS_MD), markdown)
        plot_tradeoff(rows, os.path.join(tmp, RESULTS_PNG), title=title)
        names = [RESULTS_JSON, RESULTS_MD, RESULTS_PNG]
        curves = [(row["defence"], row["roc"]) for row in rows if row.get("roc")]
        if curves:
            plot_roc(curves, os.path.join(tmp, ROC_PNG), title=title)
            names.append(ROC_PNG)
    written = [os.path.join(os.path.abspath(out_dir), name) for name in names]
    logger.info("Wrote %s.", ", ".join(written))
    return written


# ---------------------------------------------------------------------------------------------------------------------
# The grid's report: mean ± std over seeds.
# ---------------------------------------------------------------------------------------------------------------------

#: The figures of a row that are averaged over seeds: every number of :data:`ROW_KEYS`.
METRICS = tuple(key for key in ROW_KEYS if key not in ("defence", "note", "error", "roc"))
#: The axes that make a group (one table): every cell of a group differs from the others by its seed only.
GROUP_AXES = ("data", "arch", "model", "attack", "poison_rate")

#: The row of the BadNet itself (the ``none`` defence).
UNDEFENDED = "no defence"
#: Below this attack success (percent) without a defence, a cell's backdoor has not taken hold: the report says so,
#: since the defences' attack-success figures then say little. A reporting rule, not a parameter of any defence.
IMPLANTED_ASR = 50.0
#: The plot of each attack: ``results_<attack>.png``.
PLOT_NAME = "results_{attack}.png"
#: The ROC plot of each attack: ``roc_<attack>.png``.
ROC_NAME = "roc_{attack}.png"
#: The re-tuning plot of each attack: ``retune_<attack>.png``.
RETUNE_PLOT_NAME = "retune_{attack}.png"
#: The re-tuning attack's figures of a row (:mod:`~art_pruning_defense.benchmark.retune`): one pair per k, and the
#: re-tuning's seconds; rows of runs without re-tuning have none of them.
RETUNE_KEY = re.compile(r"(asr|clean)_after_retune_k([0-9]+)")
RETUNE_SECONDS = "retune_seconds"
RETUNE_LEGEND = (
    "After re-tuning (k): the re-tuning attack of Min et al. (NeurIPS 2024) on the row's repaired model, a copy "
    "trained 5 epochs with plain SGD on the defender's clean split plus k poisoned training images; the control row "
    "re-tunes a model trained without poison the same way (what k poisoned images teach from scratch)."
)


def retune_metrics(rows: Sequence[dict]) -> list[str]:
    """
    :return: The re-tuning keys found in ``rows`` (attack success, then clean accuracy, by k; then the seconds).
    """
    ks = sorted({int(match.group(2)) for row in rows for key in row if (match := RETUNE_KEY.fullmatch(key))})
    keys = [key for k in ks for key in (f"asr_after_retune_k{k}", f"clean_after_retune_k{k}")]
    return keys + ([RETUNE_SECONDS] if keys else [])


def retune_columns(keys: Sequence[str]) -> list[tuple[str, str]]:
    """
    :return: The markdown columns (key, header) of the re-tuning keys.
    """
    columns = []
    for key in keys:
        match = RETUNE_KEY.fullmatch(key)
        if match is None:
            columns.append((key, "re-tuning seconds"))
        else:
            what = "attack success %" if match.group(1) == "asr" else "clean accuracy %"
            columns.append((key, f"{what} after re-tuning (k={match.group(2)})"))
    return columns


def _with_retune_columns(keys: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """
    :return: :data:`BENCHMARK_COLUMNS` with the re-tuning columns before ``seconds``.
    """
    at = [key for key, _ in BENCHMARK_COLUMNS].index("seconds")
    return BENCHMARK_COLUMNS[:at] + tuple(retune_columns(keys)) + BENCHMARK_COLUMNS[at:]


def plot_roc(curves: Sequence[tuple[str, dict]], path: str, title: str = "") -> None:
    """
    ROC curves, false-positive rate on a log axis (the low rates a deployed detector works at), one per detector (rows
    with the same curve, e.g. one score at two thresholds, share it); written as a PNG, atomically.

    :param curves: ``(label, {"fpr": [...], "tpr": [...]})`` pairs, shares (see
                   :func:`art_pruning_defense._metrics.roc_points`).
    :param path: Destination.
    :param title: Title of the plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 6), dpi=120)
    colours = plt.get_cmap("tab10")
    for index, (label, curve) in enumerate(_distinct_curves(curves)):
        fpr = [100.0 * v for v in curve["fpr"] if v > 0]
        tpr = [100.0 * t for v, t in zip(curve["fpr"], curve["tpr"]) if v > 0]
        axis.step(fpr, tpr, where="post", color=colours(index % 10), label=label)
    axis.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    axis.set_xscale("log")
    axis.set_xlim(0.01, 100)
    axis.set_ylim(-2, 102)
    axis.set_xlabel("clean test images flagged (FPR, %, log scale)")
    axis.set_ylabel("triggered test images flagged (TPR, %)")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=7, loc="lower right")
    axis.set_title(title or "ROC of the test-time detectors")
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def _distinct_curves(curves: Sequence[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """
    :return: ``curves`` with each curve once, its labels joined (rows of one score at two thresholds share a curve).
    """
    merged: list[tuple[str, dict]] = []
    for label, curve in curves:
        for index, (known_label, known) in enumerate(merged):
            if known == curve:
                merged[index] = (f"{known_label} / {label}", known)
                break
        else:
            merged.append((label, curve))
    return merged


def _mean_roc(curves: list[dict]) -> dict | None:
    """
    :return: The mean TPR over seeds at each FPR of the grid (``None`` without curves).
    """
    if not curves:
        return None
    tpr = [sum(values) / len(curves) for values in zip(*(curve["tpr"] for curve in curves))]
    return {"fpr": list(curves[0]["fpr"]), "tpr": [round(v, 6) for v in tpr]}


def _group_key(record: dict) -> tuple:
    config = record["config"]
    return tuple(config[axis] for axis in GROUP_AXES)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, None
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)  # the sample standard deviation
    return mean, math.sqrt(variance)


def aggregate(records: Sequence[dict]) -> list[dict]:
    """
    :param records: Cell records (see :func:`~art_pruning_defense.benchmark.runner.run_cell`).
    :return: One group per (data, architecture, attack, poison rate), in the records' order: its axes, ``seeds``, and
             ``rows``: per defence row, ``<figure>_mean`` and ``<figure>_std`` (the sample standard deviation over
             the seeds with a figure; ``None`` for a single seed) for each of :data:`METRICS`, ``roc`` (the mean ROC
             curve over the seeds, for test-time detectors), ``n`` (seeds with
             figures), ``errors`` (``seed: error`` of the seeds where the row failed) and ``notes`` (per seed).
    """
    groups: dict[tuple, dict] = {}
    for record in records:
        key = _group_key(record)
        config = record["config"]
        group = groups.setdefault(
            key, {**{axis: config[axis] for axis in GROUP_AXES}, "attack_options": record.get("attack"), "cells": []}
        )
        group["cells"].append(record)
    result = []
    for group in groups.values():
        cells = group.pop("cells")
        names: list[str] = []
        for record in cells:
            names += [row["defence"] for row in record["rows"] if row["defence"] not in names]
        rows = []
        metrics = METRICS + tuple(retune_metrics([row for record in cells for row in record["rows"]]))
        for name in names:
            per_seed = [
                (record["config"]["seed"], row) for record in cells for row in record["rows"] if row["defence"] == name
            ]
            row: dict[str, Any] = {"defence": name}
            for metric in metrics:
                values = [r[metric] for _, r in per_seed if r.get(metric) is not None and not r.get("error")]
                row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std(values)
            row["roc"] = _mean_roc([r["roc"] for _, r in per_seed if r.get("roc") and not r.get("error")])
            row["n"] = sum(1 for _, r in per_seed if not r.get("error"))
            row["errors"] = [f"seed {seed}: {r['error']}" for seed, r in per_seed if r.get("error")]
            row["notes"] = [f"seed {seed}: {r['note']}" for seed, r in per_seed if r.get("note")]
            rows.append(row)
        weak = [
            (record["config"]["seed"], row["attack_success_rate"])
            for record in cells
            for row in record["rows"]
            if row["defence"] == UNDEFENDED
            and row.get("attack_success_rate") is not None
            and row["attack_success_rate"] < IMPLANTED_ASR
        ]
        result.append(
            {**group, "seeds": [record["config"]["seed"] for record in cells], "rows": rows, "weak_backdoor": weak}
        )
    return result


def _weak_backdoor_text(weak: Sequence[tuple[int, float]]) -> str:
    """
    :param weak: ``(seed, attack success %)`` of the cells whose BadNet has an attack success below
           :data:`IMPLANTED_ASR` without a defence.
    :return: The report's warning about them.
    """
    seeds = ", ".join(f"seed {seed}: {asr:.2f} %" for seed, asr in weak)
    return (
        f"**The backdoor did not take hold** ({seeds} attack success without a defence, below {IMPLANTED_ASR:g} %): "
        "the defences' attack-success figures say little about this attack here."
    )


def _mean_std_text(mean: float | None, std: float | None, digits: int = 2) -> str | None:
    if mean is None:
        return None
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _group_title(group: dict) -> str:
    data = os.path.basename(group["data"])
    arch = group["arch"] if group["model"] is None else os.path.basename(group["model"])
    seeds = ", ".join(map(str, group["seeds"]))
    return f"{group['attack']} on {data}, {arch}, poison rate {float(group['poison_rate'])!r} (seeds {seeds})"


def grid_markdown(groups: Sequence[dict], command: str, unfinished: Sequence[str] = ()) -> str:
    """
    :return: ``results.md``: the command, then one table per group (defences × figures, mean ± std over seeds).
    """
    lines = [f"# {GRID_TITLE}", "", "Produced by:", "", "```", command.strip(), "```", ""]
    for group in groups:
        lines += [f"## {escape_markdown(_group_title(group))}", ""]
        options = (group.get("attack_options") or {}).get("options")
        if options:
            text = ", ".join(f"{k}={v}" for k, v in options.items())
            lines += ["Attack options: " + escape_markdown(text) + ".", ""]
        if group.get("weak_backdoor"):
            lines += [_weak_backdoor_text(group["weak_backdoor"]), ""]
        shown = []
        extra = retune_metrics([{key.removesuffix("_mean"): None for key in row} for row in group["rows"]])
        for row in group["rows"]:
            cells: dict[str, Any] = {"defence": row["defence"]}
            for metric in METRICS + tuple(extra):
                digits = 4 if metric in FOUR_DECIMALS else 2
                cells[metric] = _mean_std_text(row[f"{metric}_mean"], row[f"{metric}_std"], digits)
            single = len(group["seeds"]) == 1
            text = "; ".join(row["errors"]) if row["errors"] else ("; ".join(row["notes"]) if single else "")
            if single:
                text = text.removeprefix(f"seed {group['seeds'][0]}: ")
            cells["notes"] = " ".join(text.split()) or None  # escaped by markdown_table
            shown.append(cells)
        lines += [markdown_table(shown, _with_retune_columns(extra)), ""]
    several = any(len(group["seeds"]) > 1 for group in groups)
    spread = " With several seeds: mean ± sample standard deviation over the seeds." if several else ""
    retuned = any(
        key.endswith("_mean") and RETUNE_KEY.fullmatch(key[:-5]) for g in groups for r in g["rows"] for key in r
    )
    lines += [LEGEND + spread + (" " + RETUNE_LEGEND if retuned else ""), ""]
    if unfinished:
        lines += ["## Unfinished cells", "", "A rerun with the same --out runs them:", ""]
        lines += [f"- `{key}`" if _SAFE_KEY.fullmatch(key) else f"- {escape_markdown(key)}" for key in unfinished]
        lines += [""]
    return "\n".join(lines)


def plot_grid(groups: Sequence[dict], attack: str, path: str) -> None:
    """
    Clean accuracy against attack success rate for one attack, one point per defence (and group), with error bars
    of one standard deviation over the seeds; written as a PNG, atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [g for g in groups if g["attack"] == attack]
    figure, axis = plt.subplots(figsize=(8, 6), dpi=120)
    markers = "osD^v<>phX*"
    colours = plt.get_cmap("tab20")
    index = 0
    lows = []
    for group in chosen:
        suffix = "" if len(chosen) == 1 else f" ({_group_title(group).split(' on ', 1)[1].split(' (seeds')[0]})"
        for row in group["rows"]:
            x, y = row["attack_success_rate_mean"], row["clean_accuracy_mean"]
            if x is None or y is None:
                continue
            axis.errorbar(
                x,
                y,
                xerr=row["attack_success_rate_std"] or 0.0,
                yerr=row["clean_accuracy_std"] or 0.0,
                fmt=markers[index % len(markers)],
                color=colours(index % 20),
                capsize=3,
                label=row["defence"] + suffix,
            )
            lows.append(y - (row["clean_accuracy_std"] or 0.0))
            index += 1
    axis.set_xlabel("attack success rate (%) — lower is better")
    axis.set_ylabel("clean accuracy (%) — higher is better")
    axis.set_xlim(-3, 103)
    if lows:
        axis.set_ylim(max(0.0, min(lows) - 3), 100.5)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower left", ncol=2)
    axis.set_title(f"{attack}: mean ± std over seeds")
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def write_grid_report(out: str, records: Sequence[dict], command: str, unfinished: Sequence[str] = ()) -> list[str]:
    """
    Write (each file atomically) ``results.json`` (the groups' means and standard deviations, every cell's per-seed
    rows, the unfinished cells), ``results.md``, one ``results_<attack>.png`` per attack and, where some defence has
    a test-time score, one ``roc_<attack>.png`` into ``out``.

    :param out: The grid's output directory.
    :param records: The finished cells' records.
    :param command: The command line.
    :param unfinished: Keys of the grid's cells that have not finished.
    :return: The paths written.
    """
    groups = aggregate(records)
    written = [os.path.join(out, RESULTS_JSON), os.path.join(out, RESULTS_MD)]
    cells = [
        {
            key: record.get(key)
            for key in ("key", "label", "hash", "inputs", "config", "attack", "data", "versions", "seconds", "rows")
        }
        for record in records
    ]
    write_json(written[0], {"command": command, "groups": groups, "cells": cells, "unfinished": list(unfinished)})
    write_text(written[1], grid_markdown(groups, command, unfinished))
    for attack in dict.fromkeys(group["attack"] for group in groups):
        path = os.path.join(out, PLOT_NAME.format(attack=attack))
        plot_grid(groups, attack, path)
        written.append(path)
        chosen = [group for group in groups if group["attack"] == attack]
        curves = [
            (row["defence"] + ("" if len(chosen) == 1 else f", poison rate {float(group['poison_rate'])!r}"), row["roc"])
            for group in chosen
            for row in group["rows"]
            if row.get("roc")
        ]
        if curves:
            path = os.path.join(out, ROC_NAME.format(attack=attack))
            plot_roc(curves, path, title=f"{attack}: ROC of the test-time detectors (mean TPR over seeds)")
            written.append(path)
        if any(retune_plot_bars(group) for group in chosen):
            path = os.path.join(out, RETUNE_PLOT_NAME.format(attack=attack))
            plot_retune(chosen, attack, path)
            written.append(path)
    return [os.path.abspath(path) for path in written]


def retune_plot_bars(group: dict) -> tuple[int, list[tuple[str, float, float, float | None]]] | None:
    """
    :param group: One group of :func:`aggregate`.
    :return: ``(k, bars)`` for the group's smallest re-tuning k: per row with a figure after re-tuning, ``(name, ASR
             before repair, ASR after repair, ASR after re-tuning)`` (means over the seeds; the first is the "no
             defence" row's, ``None`` without it or for the control row); ``None`` where no row was re-tuned.
    """
    keys = [key for key in retune_metrics([{k.removesuffix("_mean"): None for k in row} for row in group["rows"]])]
    if not keys:
        return None
    asr_key = keys[0]
    k = int(RETUNE_KEY.fullmatch(asr_key).group(2))
    from art_pruning_defense.benchmark.retune import CONTROL_ROW

    before = next((row["attack_success_rate_mean"] for row in group["rows"] if row["defence"] == UNDEFENDED), None)
    bars = [
        (
            row["defence"],
            None if row["defence"] == CONTROL_ROW else before,  # the control was never backdoored
            row["attack_success_rate_mean"],
            row[f"{asr_key}_mean"],
        )
        for row in group["rows"]
        if row.get(f"{asr_key}_mean") is not None and row["attack_success_rate_mean"] is not None
    ]
    return (k, bars) if bars else None


def plot_retune(groups: Sequence[dict], attack: str, path: str) -> None:
    """
    Per defence row, grouped bars of the attack success rate before repair (B's), after repair and after the
    re-tuning attack (the smallest k), mean over seeds; one panel per group (poison rate, architecture) of the
    attack; written as a PNG, atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(group, bars) for group in groups if (bars := retune_plot_bars(group))]
    width = max(8.0, 0.6 * max(len(bars[1]) for _, bars in panels))
    figure, axes = plt.subplots(len(panels), 1, figsize=(width, 4.5 * len(panels)), dpi=120, squeeze=False)
    for axis, (group, (k, bars)) in zip(axes[:, 0], panels):
        positions = range(len(bars))
        series = (
            ("before repair (B)", 1, "tab:red"),
            ("after repair", 2, "tab:blue"),
            (f"after re-tuning (k={k})", 3, "tab:orange"),
        )
        for offset, (label, index, colour) in enumerate(series):
            values = [bar[index] if bar[index] is not None else 0.0 for bar in bars]
            axis.bar([p + (offset - 1) * 0.27 for p in positions], values, 0.27, label=label, color=colour)
        axis.set_xticks(list(positions))
        axis.set_xticklabels([bar[0] for bar in bars], rotation=30, ha="right", fontsize=7)
        axis.set_ylim(0, 105)
        axis.set_ylabel("attack success rate (%)")
        axis.grid(alpha=0.3, axis="y")
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        axis.set_title(_group_title(group), fontsize=9)
    figure.suptitle(f"{attack}: does the backdoor come back after re-tuning? (mean over seeds)")
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
