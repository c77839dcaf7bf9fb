"""Grids bounded before any work: YAML aliases, the cell count, quoted input, seeds, targets, attack options, Ray."""

from __future__ import annotations

import time

import numpy as np
import pytest

from art_pruning_defense.benchmark import config as grid_config
from art_pruning_defense.lab.cli import main


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("art-prune: error: "), err
    return err


def test_yaml_aliases_are_refused(tmp_path, capsys):
    lines = ["a: &a [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]" for i in range(8)]
    lines.append("seeds: *i")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 400
    with pytest.raises(ValueError, match=r"YAML aliases \(\*name\) are refused \(line 2\)") as info:
        grid_config.load_grid_file(str(path))
    assert len(str(info.value)) < 300
    assert main(["benchmark", "--grid", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "aliases" in _one_error_line(capsys) and not (tmp_path / "o").exists()


def test_cell_count_is_bounded_before_cells_are_made(tmp_path, capsys):
    start = time.monotonic()
    seeds = [str(s) for s in range(1000)]
    rates = [str(r / 1000) for r in range(1, 1000)]
    argv = ["benchmark", "--seeds", *seeds, "--poison-rates", *rates, "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = _one_error_line(capsys)
    assert "999,000 cells, more than the 10,000 accepted" in err and "--max-cells" in err and len(err) < 400
    assert time.monotonic() - start < 5.0
    with pytest.raises(ValueError, match="3 cells, more than the 2 accepted"):
        grid_config.make_grid({"seeds": [0, 1, 2]}, max_cells=2)
    assert len(grid_config.make_grid({"seeds": [0, 1, 2]}, max_cells=3).cells()) == 3


def test_error_messages_quote_little_of_the_input(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text("seeds = [" + ", ".join(["1"] * 5000) + "]\n")
    with pytest.raises(ValueError, match="seeds must be distinct") as info:
        grid_config.make_grid(grid_config.load_grid_file(str(path)), source=str(path))
    assert len(str(info.value)) <= 300 + len(str(path)) + 2
    path.write_text("seeds = [" + "0, " * 100_000 + "\n")
    with pytest.raises(ValueError, match="is not valid TOML") as info:
        grid_config.load_grid_file(str(path))
    assert len(str(info.value)) < 400 + len(str(path))


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--seeds", "4294967296"], r"--seeds: seed must be an integer in \[0, 4294967295\], got 4294967296"),
        (["--target", "10"], r"target must be one of the digits' classes 0..9, got 10"),
    ],
)
def test_options_out_of_range_are_refused_before_any_work(tmp_path, capsys, argv, match):
    assert main(["benchmark", *argv, "--out", str(tmp_path / "o")]) == 2
    import re

    assert re.search(match, _one_error_line(capsys)) and not (tmp_path / "o").exists()


def test_target_outside_an_npz_datas_classes_is_refused_after_reading_the_labels(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(
        data,
        x_train=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8),
        y_train=np.arange(40) % 3,
        x_test=rng.integers(0, 255, (10, 8, 8), dtype=np.uint8),
        y_test=np.arange(10) % 3,
    )
    assert main(["benchmark", "--data", str(data), "--target", "3", "--n-valid", "5", "--out", str(tmp_path / "o")]) == 2
    assert "target must be one of the data's classes 0..2, got 3" in _one_error_line(capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"wanet": {"k": 10**9}}, r"k must be an integer in \[2, 256\]"),
        ({"wanet": {"strength": 1e300}}, r"strength must be in \(0, 100\)"),
        ({"blended": {"trigger_seed": 2**40}}, r"trigger_seed must be an integer in \[0, 4294967295\]"),
        ({"badnets": {"patch_size": 10**12}}, r"patch_size must be an integer in \[1, 256\]"),
        ({"sig": {"frequency": 1e9}}, r"frequency must be in \(0, 1000\)"),
        ({"clean-label": {"max_iter": 10**9}}, r"max_iter must be an integer in \[1, 10000\]"),
    ],
)
def test_absurd_attack_options_are_refused_when_the_grid_is_made(tmp_path, options, match):
    path = tmp_path / "grid.toml"
    name, values = next(iter(options.items()))
    path.write_text(f'[attack_options."{name}"]\n' + "".join(f"{k} = {v!r}\n" for k, v in values.items()))
    with pytest.raises(ValueError, match=match):
        grid_config.make_grid(grid_config.load_grid_file(str(path)), source=str(path))


def test_ray_refuses_more_cpus_per_cell_than_the_cluster_has(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed")
    from art_pruning_defense.benchmark import make_grid, run_grid

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        start = time.monotonic()
        with pytest.raises(ValueError, match="--cpus-per-cell 1000 is more than the 2 CPUs of the Ray cluster"):
            run_grid(make_grid({"epochs": 1, "defences": ["none"]}), str(tmp_path / "o"), "t", executor="ray",
                     cpus_per_cell=1000, verbose=False)
        assert time.monotonic() - start < 60
    finally:
        ray.shutdown()
