"""Content-addressed benchmark cells and validated cell records: collisions, forged or bad records, escaping."""

from __future__ import annotations

import json
import logging
import os

import pytest

from art_pruning_defense.benchmark import config as grid_config
from art_pruning_defense.benchmark import store
from art_pruning_defense.benchmark.config import json_ready


def _fake_record(config, accuracy: float = 90.0, defence: str = "no defence") -> dict:
    """A valid record of one cell, without training anything (the grid logic only)."""
    inputs = store.input_hashes(config)
    row = {
        "defence": defence,
        "clean_accuracy": accuracy + config.seed,
        "attack_success_rate": 100.0 * config.poison_rate,
        "poison_detection_tpr": None,
        "poison_detection_fpr": None,
        "poisoned_flagged": None,
        "clean_flagged": None,
        "auroc": None,
        "tpr_at_1pct_fpr": None,
        "poison_detection_auroc": None,
        "seconds": 0.5,
        "note": None,
        "error": None,
        "roc": None,
        "peak_rss_mib": 1.0,
    }
    return {
        "key": store.cell_key(config, inputs),
        "label": store.cell_label(config),
        "hash": store.cell_hash(config, inputs),
        "inputs": inputs,
        "config": json_ready(config.as_dict()),
        "resolved": json_ready(config.resolved().as_dict()),
        "attack": {"name": config.attack, "options": {}},
        "versions": {"art_pruning_defense": "test"},
        "data": {"train": 10},
        "rows": [row],
        "seconds": 1.0,
        "peak_rss_mib": {"data": 1.0, "training": 1.0, "defences": 1.0},
    }


@pytest.fixture
def fake_cells(monkeypatch):
    """run_cell replaced by :func:`_fake_record`; the configurations it was called with."""
    from art_pruning_defense.benchmark import runner

    calls = []

    def fake(config, verbose=False, stage=None, **kwargs):
        calls.append(config)
        return _fake_record(config)

    monkeypatch.setattr(runner, "run_cell", fake)
    return calls


def _run(values: dict, out) -> object:
    from art_pruning_defense.benchmark import run_grid

    return run_grid(grid_config.make_grid({"defences": ["none"], **values}), str(out), "test", verbose=False)


def test_close_poison_rates_are_two_cells(tmp_path, fake_cells):
    out = tmp_path / "out"
    result = _run({"poison_rates": [0.1, 0.1000001]}, out)
    assert result.failed == {} and len(result.ran) == 2 and len(os.listdir(out / "cells")) == 2
    markdown = (out / "results.md").read_text()
    assert "poison rate 0.1 (seeds 0)" in markdown and "poison rate 0.1000001 (seeds 0)" in markdown
    assert "± 0.00" not in markdown
    again = _run({"poison_rates": [0.1, 0.1000001]}, out)
    assert again.ran == [] and len(again.skipped) == 2 and len(fake_cells) == 2  # the grid finishes


def test_key_is_a_hash_of_the_resolved_configuration_and_the_input_files(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"first model")
    grid = grid_config.make_grid({"model": str(model), "epochs": 2})
    (cell,) = grid.cells()
    before = store.cell_key(cell)
    assert store.cell_key(grid_config.make_grid({"model": str(model), "epochs": 2}).cells()[0]) == before
    model.write_bytes(b"other model, same path")  # replaced in place: another cell
    after = store.cell_key(cell)
    assert after != before and after.startswith("digits__model-m__badnets__0.1__seed0--")
    # Resolved: epochs=None on digits is 30 epochs, the same cell as epochs=30.
    default, explicit = (grid_config.make_grid({"epochs": e}).cells()[0] for e in (None, 30))
    assert store.cell_key(default) == store.cell_key(explicit)



def test_cells_of_older_methods_are_run_again(tmp_path, fake_cells, monkeypatch):
    """A resumed ``--out`` whose cells an older version of the methods wrote runs them again, not mixing figures."""
    out = tmp_path / "out"
    first = _run({}, out)
    assert first.ran and len(fake_cells) == 1
    assert _run({}, out).ran == [] and len(fake_cells) == 1  # same methods: resumed
    monkeypatch.setattr(store, "METHODS_VERSION", store.METHODS_VERSION + 1)
    again = _run({}, out)
    assert len(again.ran) == 1 and len(fake_cells) == 2 and again.ran != first.ran
    assert [record["key"] for record in again.records] == again.ran

@pytest.mark.parametrize("name", ["a" * 240 + ".npz", "données | 表" * 12 + ".npz", "..npz", "-\n.npz"])
def test_cell_file_names_stay_within_file_system_limits(tmp_path, name):
    data = tmp_path / name
    data.write_bytes(b"not read, only hashed")
    (cell,) = grid_config.make_grid({"data": str(data)}).cells()
    key = store.cell_key(cell)
    path = store.cell_path(str(tmp_path), key)
    assert len(os.path.basename(path).encode()) <= 255 and key.isascii() and not key.startswith((".", "-"))
    assert "/" not in key and "\n" not in key and "|" not in key


def test_forged_key_is_not_used_and_the_cell_is_run_again(tmp_path, fake_cells, caplog):
    out = tmp_path / "out"
    _run({"seeds": [0, 1]}, out)
    files = sorted((out / "cells").iterdir(), key=lambda p: json.loads(p.read_text())["config"]["seed"])
    seed0 = json.loads(files[0].read_text())
    files[1].write_text(json.dumps(seed0))  # seed 0's record under seed 1's file name
    with caplog.at_level(logging.WARNING):
        result = _run({"seeds": [0, 1]}, out)
    assert f"Cell file {files[1]} is not used" in caplog.text and "is run again" in caplog.text
    assert len(result.ran) == 1 and fake_cells[-1].seed == 1
    seeds = [record["config"]["seed"] for record in result.records]
    assert seeds == [0, 1] and result.records[0] != result.records[1]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda r: r["rows"][0].update(clean_accuracy=250.0), "rows/0/clean_accuracy: expected at most 100"),
        (lambda r: r["rows"][0].update(clean_accuracy=-40.0), "rows/0/clean_accuracy: expected at least 0"),
        (lambda r: r["rows"][0].update(auroc=1.5), "rows/0/auroc: expected at most 1"),
        (lambda r: r["rows"][0].update(clean_accuracy="90"), "rows/0/clean_accuracy"),
        (lambda r: r["rows"][0].update(colour="red"), r"rows/0: unknown key\(s\) 'colour'"),
        (lambda r: r.pop("rows"), r"missing key\(s\) rows"),
        (lambda r: r.update(rows="none"), "rows: expected array"),
        (lambda r: r["config"].update(seed=5), "the hash of its configuration|another configuration"),
        (lambda r: r["resolved"].update(seed=5), "the hash of its configuration does not match its file name"),
    ],
)
def test_bad_record_is_rerun_with_a_one_line_warning(tmp_path, fake_cells, caplog, change, match):
    out = tmp_path / "out"
    _run({}, out)
    (path,) = (out / "cells").iterdir()
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        result = _run({}, out)
    (message,) = [r.getMessage() for r in caplog.records if "is not used" in r.getMessage()]
    assert str(path) in message and "\n" not in message
    assert len(result.ran) == 1 and result.failed == {}
    assert "250" not in (out / "results.md").read_text()
    assert pytest.approx(90.0) == json.loads(path.read_text())["rows"][0]["clean_accuracy"]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_in_a_record_are_refused(tmp_path, fake_cells, caplog, token):
    out = tmp_path / "out"
    _run({}, out)
    (path,) = (out / "cells").iterdir()
    text = path.read_text().replace('"clean_accuracy": 90.0', f'"clean_accuracy": {token}')
    assert token in text
    path.write_text(text)
    with caplog.at_level(logging.WARNING):
        result = _run({}, out)
    assert f"Cell file {path} is not used" in caplog.text and len(result.ran) == 1
    markdown = (out / "results.md").read_text()
    assert "nan" not in markdown.lower() and "inf" not in markdown.lower()


def test_record_with_nan_is_never_written(tmp_path):
    (cell,) = grid_config.make_grid({}).cells()
    record = _fake_record(cell, accuracy=float("nan"))
    os.makedirs(tmp_path / "cells")
    with pytest.raises(ValueError, match="holds NaN or an infinity"):
        store.write_cell(str(tmp_path), record)
    assert os.listdir(tmp_path / "cells") == []


def test_defence_names_cannot_add_table_rows(tmp_path):
    from art_pruning_defense.benchmark.report import write_grid_report

    (cell,) = grid_config.make_grid({}).cells()
    record = _fake_record(cell, defence="evil | 100.00 |\n| fake row | 0.00 |")
    record["rows"][0]["note"] = "line one\n| injected | row |"
    write_grid_report(str(tmp_path), [record], "test")
    table = [line for line in (tmp_path / "results.md").read_text().splitlines() if line.startswith("|")]
    assert len(table) == 3  # header, rule, one row
    assert "evil \\| 100.00 \\| \\| fake row \\| 0.00 \\|" in table[2]
