"""The re-tuning attack (RA) and the pruning-aware attack in the benchmark: the re-tuning set, the control row and its
cache key, the report's columns and plot, low poisoning rates, bad input, and the pruning-aware attack's decoys."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import conv_block_model

from art_pruning_defense.benchmark.config import (
    BenchmarkConfig,
    check_retune_against_poisoned,
    make_grid,
)
from art_pruning_defense.lab.cli import main
from art_pruning_defense.lab.digits import BadNetData


def _tiny_data(n_poison: int = 6) -> BadNetData:
    rng = np.random.default_rng(0)
    x = rng.random((60, 10, 10, 3), dtype=np.float32)
    y = (np.arange(60) % 4).astype(np.int64)
    is_poison = np.zeros(60, dtype=bool)
    is_poison[np.arange(1, 60, 60 // n_poison)[:n_poison]] = True
    x[is_poison, -3:, -3:, :] = 1.0
    y[is_poison] = 0
    test = rng.random((20, 10, 10, 3), dtype=np.float32)
    triggered = test.copy()
    triggered[:, -3:, -3:, :] = 1.0
    return BadNetData(
        x_train=x,
        y_train=y,
        is_poison_train=is_poison,
        x_valid=x[~is_poison][:16],
        y_valid=y[~is_poison][:16],
        x_valid_poisoned=triggered[:4],
        x_test=test,
        y_test=(np.arange(20) % 4).astype(np.int64),
        x_test_poisoned=triggered,
        target=0,
        n_classes=4,
    )


def test_retune_trains_a_copy_on_the_clean_split_plus_k_poisoned_images(monkeypatch):
    from art_pruning_defense.benchmark import retune
    from art_pruning_defense.keras import weights_equal

    data = _tiny_data()
    model = conv_block_model()
    before = keras.models.clone_model(model)
    before.set_weights(model.get_weights())
    seen = {}
    real_fit = keras.Model.fit

    def fit(self, x, y, **kwargs):
        seen.update(x=np.asarray(x), y=np.asarray(y), **kwargs)
        return real_fit(self, x, y, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", fit)
    figures = retune.retune_columns(model, data, [3], seed=1, predict_batch_size=8)
    assert set(figures) == {"asr_after_retune_k3", "clean_after_retune_k3", "retune_seconds"}
    assert all(0.0 <= figures[key] <= 100.0 for key in ("asr_after_retune_k3", "clean_after_retune_k3"))
    rows = retune.poisoned_rows(data, 3, seed=1)
    assert len(set(rows)) == 3 and data.is_poison_train[rows].all()
    assert len(seen["x"]) == len(data.x_valid) + 3 and seen["epochs"] == retune.RETUNE_EPOCHS
    assert np.array_equal(seen["x"][-3:], data.x_train[rows]) and np.all(seen["y"][-3:] == data.target)
    assert np.array_equal(seen["x"][:-3], data.x_valid)
    assert weights_equal(model, before)  # the repaired model itself is never trained
    with pytest.raises(ValueError, match="7 poisoned images asked for, but the training set holds 6"):
        retune.poisoned_rows(data, 7, seed=1)


def test_control_model_key_leaves_the_attack_out():
    from art_pruning_defense._integrity import value_sha256
    from art_pruning_defense.benchmark.cache import clean_model_identity, model_identity

    inputs = {"data_sha256": None, "model_sha256": None}

    def key(**values):
        return value_sha256(clean_model_identity(BenchmarkConfig(**values), inputs))

    assert key() == key(attack="blended") == key(poison_rate=0.01) == key(attack="pruning-aware", trigger="pixel")
    assert key() != key(seed=1) and key() != key(epochs=5)
    assert key() != value_sha256(model_identity(BenchmarkConfig(), inputs))


def test_configs_without_retuning_keep_their_identity():
    values = BenchmarkConfig().as_dict()
    assert "retune_poisons" not in values  # the hash of every earlier cell is unchanged
    assert BenchmarkConfig(retune_poisons=[5, 50]).as_dict()["retune_poisons"] == [5, 50]
    assert "retune_poisons" not in make_grid({}).settings_dict()


@pytest.mark.parametrize(
    "value, error, match",
    [
        ([-1], ValueError, "each number of poisoned images"),
        ([2.5], TypeError, "must be an integer"),
        ([5, 5], ValueError, "distinct"),
        (5, TypeError, "list of integers"),
    ],
)
def test_bad_retune_poisons_in_a_config(value, error, match):
    with pytest.raises(error, match=match):
        BenchmarkConfig(retune_poisons=value)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--retune-poisons", "-1"], "--retune-poisons: each number of poisoned images"),
        (["--retune-poisons", "500"], "--retune-poisons 500 is more than the 110 poisoned training images"),
        (["--poison-rates", "0.005", "--retune-poisons", "7"], "more than the 6 poisoned training images"),
    ],
)
def test_bad_retune_poisons_on_the_command_line_fail_at_once(argv, message, capsys, tmp_path):
    out = tmp_path / "out"
    assert main(["benchmark", "--out", str(out), "--no-model-cache", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()  # refused before any training or output


def test_non_integer_retune_poisons_is_refused_by_the_parser(capsys, tmp_path):
    with pytest.raises(SystemExit, match="2"):
        main(["benchmark", "--out", str(tmp_path / "o"), "--retune-poisons", "2.5"])
    assert "invalid int value: '2.5'" in capsys.readouterr().err


def test_low_poison_rates_make_cells_with_poisoned_images():
    grid = make_grid({"poison_rates": [0.005, 0.01], "attacks": ["badnets", "blended"], "retune_poisons": [5]})
    for cell in grid.cells():
        check_retune_against_poisoned(cell)  # 1,100 digits training images: 6 and 11 poisoned, k = 5 fits


def test_pruning_aware_options_are_checked():
    from art_pruning_defense.benchmark.attacks import make_attack

    with pytest.raises(ValueError, match="Unknown option.*bogus.*expected: base, base_options, prune_fraction"):
        make_attack("pruning-aware", bogus=1)
    with pytest.raises(ValueError, match="unknown base attack 'pruning-aware'; expected one of: badnets"):
        make_attack("pruning-aware", base="pruning-aware")
    attack = make_attack("pruning-aware", base="blended", base_options={"alpha": 0.3})
    assert attack.params()["base_options"]["alpha"] == 0.3
    assert BenchmarkConfig(attack="pruning-aware", trigger="pixel").make_attack().params()["base_options"] == {
        "trigger": "pixel"
    }
    with pytest.raises(ValueError, match="not as a base option"):
        BenchmarkConfig(attack="pruning-aware", attack_options={"pruning-aware": {"base_options": {"trigger": "x"}}})


def test_pruning_aware_needs_a_bias_to_make_decoys():
    from art_pruning_defense.benchmark.attacks.pruning_aware import _offset_layer

    assert _offset_layer(conv_block_model(), "conv_2").name == "conv_2"
    assert _offset_layer(conv_block_model(use_bias=False, batch_norm=True), "conv_2").name == "bn"
    with pytest.raises(ValueError, match="no bias, nor a BatchNormalization offset"):
        _offset_layer(conv_block_model(use_bias=False), "conv_2")


@pytest.fixture(scope="module")
def pruning_aware_run():
    """The pruning-aware attack on digits (badnets poison), and FinePruning's sweep of the result."""
    from art_pruning_defense.benchmark.data import load_benchmark_data
    from art_pruning_defense.benchmark.defences.base import Run
    from art_pruning_defense.benchmark.training import train_badnet

    config = BenchmarkConfig(attack="pruning-aware", epochs=12, defences=("pruning",)).resolved()
    data = load_benchmark_data(config)
    attack = config.make_attack()
    classifier = attack.train_model(data, config, train_badnet)
    run = Run(config=config, data=data, classifier=classifier, verbose=False)
    defence = run.fine_pruning(fine_tune_epochs=0)
    defence.fit(data.x_valid, data.y_valid)
    return run, defence, attack


def test_pruning_aware_attack_survives_pruning_and_its_decoys_go_first(pruning_aware_run):
    run, defence, attack = pruning_aware_run
    n_decoys = round(attack.prune_fraction * defence.prune_point.n_channels)
    assert attack.decoys_ is not None and len(attack.decoys_) == n_decoys
    pruned = defence.pruned_channels(10.0)
    assert np.isin(attack.decoys_, pruned).all()  # activation ranking prunes the decoys
    metrics = run.evaluate(defence(run.classifier, accuracy_drop=10.0))
    assert metrics["B"]["attack_success_rate"] >= 90.0
    assert metrics["B'"]["attack_success_rate"] >= 50.0  # pruning alone to X=10 leaves the backdoor


def test_grid_report_has_the_retuning_columns_control_row_and_plot(tmp_path):
    from art_pruning_defense.benchmark.retune import CONTROL_ROW
    from art_pruning_defense.benchmark.runner import run_grid

    grid = make_grid({"epochs": 2, "defences": ["none"], "retune_poisons": [2]})
    result = run_grid(grid, str(tmp_path / "out"), "test", verbose=False, model_cache=str(tmp_path / "cache"))
    assert not result.failed
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = {row["defence"]: row for row in report["groups"][0]["rows"]}
    assert set(rows) == {"no defence", CONTROL_ROW}
    for row in rows.values():
        assert row["asr_after_retune_k2_mean"] is not None and row["clean_after_retune_k2_mean"] is not None
    assert rows[CONTROL_ROW]["attack_success_rate_mean"] is not None and not rows[CONTROL_ROW]["errors"]
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "attack success % after re-tuning (k=2)" in markdown and CONTROL_ROW in markdown
    assert (tmp_path / "out" / "retune_badnets.png").stat().st_size > 0
    entries = [path.name for path in (tmp_path / "cache").iterdir()]
    assert len(entries) == 2  # B and the clean control model, each cached
