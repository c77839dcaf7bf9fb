"""The benchmark as a grid: configuration and grid files, cell files, resuming, refusals, the report, executors."""

from __future__ import annotations

import json
import os

import pytest

from art_pruning_defense.benchmark import config as grid_config
from art_pruning_defense.benchmark import store
from art_pruning_defense.lab.cli import main

#: The tiny grid of these tests: two seeds on digits, two defences, two epochs.
TINY = ["--epochs", "2", "--defences", "none", "pruning", "--seeds", "0", "1", "--quiet"]
#: Figures that must not depend on the executor (everything but the wall time).
FIGURES = ("clean_accuracy", "attack_success_rate", "poison_detection_tpr", "poison_detection_fpr", "poisoned_flagged")


def _figures(records: list[dict]) -> dict:
    return {
        record["key"]: [(row["defence"], *(row[key] for key in FIGURES)) for row in record["rows"]]
        for record in records
    }


def _cells(out) -> dict:
    """The cell files by label (the file name without its hash), in seed order."""
    records = [json.loads(path.read_text()) for path in (out / "cells").glob("*.json")]
    return {record["label"]: record for record in sorted(records, key=lambda r: r["config"]["seed"])}


def test_grid_cells_keys_and_settings():
    grid = grid_config.make_grid(
        {"attacks": ["badnets", "sig"], "poison_rates": [0.1, 0.005], "seeds": [0, 2], "epochs": 3}
    )
    cells = grid.cells()
    assert len(cells) == 8 and all(cell.epochs == 3 for cell in cells)
    labels = [store.cell_label(cell) for cell in cells]
    assert labels[0] == "digits__small-cnn__badnets__0.1__seed0"
    assert labels[-1] == "digits__small-cnn__sig__0.005__seed2"
    keys = [store.cell_key(cell) for cell in cells]
    assert all(key == f"{label}--{store.cell_hash(cell)}" for key, label, cell in zip(keys, labels, cells))
    assert len(set(keys)) == 8
    assert grid.settings_dict()["epochs"] == 3 and "seed" not in grid.settings_dict()
    json.dumps(grid.as_dict())  # plain JSON


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        ("colour = 'red'\n", ValueError, r"unknown key\(s\) colour; expected some of: archs"),
        ("seeds = 0\n", ValueError, r"seeds: expected array, got 0"),
        ("seeds = [0, 0]\n", ValueError, "seeds must be distinct"),
        ("epochs = '3'\n", ValueError, "epochs: expected integer, got '3'"),
        ("poison_rates = [0.1, 1.5]\n", ValueError, r"poison_rates/1: expected less than 1, got 1.5"),
        ("attacks = ['magic']\n", ValueError, "Unknown attack 'magic'"),
        ("archs = ['resnet99']\n", ValueError, "Unknown arch 'resnet99'"),
        ("defences = 'none'\n", ValueError, "defences: expected array, got 'none'"),
        ("defences = ['none', 'nope']\n", ValueError, r"Unknown defence\(s\) 'nope'"),
        ("[attack_options.blended]\nbeta = 2\n", ValueError, "Unknown option.* beta for attack 'blended'"),
        ("[attack_options.wanet]\nk = 'four'\n", TypeError, "k must be an integer, got str"),
        ("seeds = [0\n", ValueError, "is not valid TOML"),
    ],
)
def test_grid_file_errors(tmp_path, text, error, match):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    with pytest.raises(error, match=match) as caught:
        grid_config.make_grid(grid_config.load_grid_file(str(path)), source=str(path))
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_grid_file_from_the_command_line_is_checked_at_once(tmp_path, capsys):
    path = tmp_path / "grid.toml"
    path.write_text("attacks = ['blended']\nseeds = 'all'\n")
    assert main(["benchmark", "--grid", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seeds: expected array, got 'all'" in err and str(path) in err
    assert not (tmp_path / "out").exists()


def test_executor_ray_without_ray_names_the_extra(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert main(["benchmark", "--executor", "ray", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "art-pruning-defense[distributed]" in err


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory):
    """The tiny grid run with the local executor, its second cell failing once (as a dying worker would)."""
    from art_pruning_defense.benchmark import runner

    out = tmp_path_factory.mktemp("grid") / "out"
    real = runner.run_cell

    def failing(config, *args, **kwargs):
        if config.seed == 1:
            raise RuntimeError("worker lost")
        return real(config, *args, **kwargs)

    runner.run_cell = failing
    try:
        first = main(["benchmark", *TINY, "--out", str(out)])
    finally:
        runner.run_cell = real
    snapshot = {"code": first, "cells": _cells(out), "markdown": (out / "results.md").read_text()}
    second = main(["benchmark", *TINY, "--out", str(out)])  # the rerun finishes the grid
    return out, snapshot, second


def test_failed_cell_is_reported_and_redone(local_grid):
    out, first, second = local_grid
    assert first["code"] == 1 and list(first["cells"]) == ["digits__small-cnn__badnets__0.1__seed0"]
    assert "## Unfinished cells" in first["markdown"]
    assert "- `digits__small-cnn__badnets__0.1__seed1--" in first["markdown"]
    assert second == 0
    cells = _cells(out)
    assert list(cells) == ["digits__small-cnn__badnets__0.1__seed0", "digits__small-cnn__badnets__0.1__seed1"]
    assert cells["digits__small-cnn__badnets__0.1__seed0"] == first["cells"]["digits__small-cnn__badnets__0.1__seed0"]


def test_cell_files_and_report(local_grid):
    out, _, _ = local_grid
    assert sorted(os.listdir(out)) == [
        ".art-prune-output",
        "cells",
        "grid.json",
        "results.json",
        "results.md",
        "results_badnets.png",
        "roc_badnets.png",
    ]
    for key, record in _cells(out).items():
        assert record["label"] == key and record["config"]["seed"] == int(key[-1])
        assert record["key"] == f"{key}--{record['hash']}" and len(record["hash"]) == 64
        assert record["config"]["defences"] == ["none", "pruning"] and record["resolved"]["epochs"] == 2
        assert set(record["versions"]) >= {"art_pruning_defense", "adversarial-robustness-toolbox", "tensorflow"}
        assert record["data"]["poisoned"] == round(0.1 * record["data"]["train"])
        assert [row["defence"] for row in record["rows"]][0] == "no defence"
        # Peak resident memory, per defence row and per stage (MiB; TensorFlow alone takes hundreds).
        assert all(row["peak_rss_mib"] > 100.0 for row in record["rows"])
        assert sorted(record["peak_rss_mib"]) == ["data", "defences", "training"]
        assert all(value > 100.0 for value in record["peak_rss_mib"].values())
    results = json.loads((out / "results.json").read_text())
    (group,) = results["groups"]
    assert group["seeds"] == [0, 1] and results["unfinished"] == []
    row = group["rows"][0]
    values = [cell["rows"][0]["clean_accuracy"] for cell in results["cells"]]
    assert row["clean_accuracy_mean"] == pytest.approx(sum(values) / 2)
    assert row["clean_accuracy_std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    markdown = (out / "results.md").read_text()
    assert "## badnets on digits, small-cnn, poison rate 0.1 (seeds 0, 1)" in markdown
    assert f"| no defence | {row['clean_accuracy_mean']:.2f} ± {row['clean_accuracy_std']:.2f} |" in markdown
    assert "art-prune benchmark --epochs 2" in markdown
    assert "| seconds | peak MiB | notes |" in markdown and row["peak_rss_mib_mean"] > 100.0
    assert (out / "results_badnets.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "roc_badnets.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_finished_cells(local_grid, capsys):
    out, _, _ = local_grid
    before = {path.name: path.stat().st_mtime_ns for path in (out / "cells").iterdir()}
    assert main(["benchmark", *TINY, "--out", str(out)]) == 0
    assert "cells: 0 run now, 2 finished earlier, 0 unfinished" in capsys.readouterr().out
    assert {path.name: path.stat().st_mtime_ns for path in (out / "cells").iterdir()} == before


def test_out_of_another_configuration_is_refused_before_any_work(local_grid, capsys):
    import time

    out, _, _ = local_grid
    before = sorted(os.listdir(out / "cells"))
    other = ["--epochs", "3", "--defences", "none", "pruning", "--seeds", "0", "1", "--quiet"]
    start = time.monotonic()
    assert main(["benchmark", *other, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds the cells of a grid of another configuration (epochs 2 → 3)" in err
    assert time.monotonic() - start < 2.0
    assert main(["benchmark", "--defences", "none", "--out", str(out)]) == 2
    assert "defences ['none', 'pruning'] → ['none']" in capsys.readouterr().err
    assert sorted(os.listdir(out / "cells")) == before


def test_ray_executor_gives_the_local_figures(local_grid, tmp_path):
    """The same two cells as Ray tasks on a local Ray instance (2 CPUs): identical figures."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'art-pruning-defense[distributed]')")
    from art_pruning_defense.benchmark import make_grid, run_grid

    out, _, _ = local_grid
    grid = make_grid({"epochs": 2, "defences": ["none", "pruning"], "seeds": [0, 1]})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_grid(grid, str(tmp_path / "ray"), "test", executor="ray", verbose=False)
    finally:
        ray.shutdown()
    assert result.failed == {} and sorted(result.ran) == sorted(r["key"] for r in _cells(out).values())
    assert _figures(result.records) == _figures(list(_cells(out).values()))


def test_yaml_grid_file_equals_its_toml_twin(tmp_path):
    toml = tmp_path / "grid.toml"
    toml.write_text(
        'data = "digits"\nattacks = ["badnets", "blended"]\npoison_rates = [0.1, 0.05]\nseeds = [0, 1]\n'
        'defences = ["none", "fine-pruning"]\nepochs = 3\n[attack_options.blended]\nalpha = 0.2\n'
    )
    yaml = tmp_path / "grid.yml"
    yaml.write_text(
        "data: digits\nattacks: [badnets, blended]\npoison_rates: [0.1, 0.05]\nseeds: [0, 1]\n"
        "defences: [none, fine-pruning]\nepochs: 3\nattack_options:\n  blended: {alpha: 0.2}\n"
    )
    from_toml = grid_config.make_grid(grid_config.load_grid_file(str(toml)))
    from_yaml = grid_config.make_grid(grid_config.load_grid_file(str(yaml)))
    assert from_yaml.as_dict() == from_toml.as_dict() and len(from_yaml.cells()) == 8
    assert [cell.as_dict() for cell in from_yaml.cells()] == [cell.as_dict() for cell in from_toml.cells()]


@pytest.mark.parametrize(
    ("name", "text", "error", "match"),
    [
        ("grid.yaml", "colour: red\n", ValueError, r"unknown key\(s\) colour"),
        ("grid.yaml", "seeds: 0\n", ValueError, "seeds: expected array, got 0"),
        ("grid.yaml", "seeds: [0\n", ValueError, "is not valid YAML"),
        ("grid.yaml", "- seeds\n- 0\n", ValueError, "must hold a mapping of keys to values, got list"),
        ("grid.yaml", "seeds: !!python/object/apply:os.getcwd []\n", ValueError, "is not valid YAML"),
        ("grid.json", "{}", ValueError, r"expected a \.toml, \.yaml or \.yml file"),
    ],
)
def test_yaml_grid_file_errors(tmp_path, name, text, error, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(error, match=match) as caught:
        grid_config.make_grid(grid_config.load_grid_file(str(path)), source=str(path))
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def _record(seed: int, attack_success: float) -> dict:
    config = {"data": "d.npz", "arch": "small-cnn", "model": None, "attack": "sig", "poison_rate": 0.1, "seed": seed}
    rows = [
        {"defence": "no defence", "clean_accuracy": 98.0, "attack_success_rate": attack_success},
        {"defence": "fine-pruning", "clean_accuracy": 97.0, "attack_success_rate": 0.5},
    ]
    return {"config": config, "attack": {"name": "sig", "options": {}}, "rows": rows}


def test_report_says_where_the_backdoor_did_not_take_hold():
    from art_pruning_defense.benchmark.report import aggregate, grid_markdown

    strong = grid_markdown(aggregate([_record(0, 99.0), _record(1, 50.0)]), "art-prune benchmark")
    assert "did not take hold" not in strong
    groups = aggregate([_record(0, 99.0), _record(1, 0.14), _record(2, 49.9)])
    assert groups[0]["weak_backdoor"] == [(1, 0.14), (2, 49.9)]
    text = grid_markdown(groups, "art-prune benchmark")
    expected = "**The backdoor did not take hold** (seed 1: 0.14 %, seed 2: 49.90 % attack success without a defence"
    assert expected in text
    # The warning stands above the group's table, and the table keeps every defence's row.
    assert text.index("did not take hold") < text.index("| fine-pruning |")
