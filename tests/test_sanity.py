"""Results that mean nothing: non-finite weights refused, meaningless figures warned about."""

from __future__ import annotations

import numpy as np
import pytest

from art_pruning_defense import _sanity
from art_pruning_defense._sanity import MeaninglessResultWarning


def _poisoned_weights(model, layer: str, value: float = np.nan):
    weights = model.get_layer(layer).get_weights()
    weights[0] = weights[0].copy()
    weights[0].flat[3] = value
    model.get_layer(layer).set_weights(weights)
    return model


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_naming_the_first_bad_layer(tiny_model, value):
    _poisoned_weights(tiny_model, "conv_2", value)
    _poisoned_weights(tiny_model, "output", value)
    with pytest.raises(ValueError, match=r"b.keras has non-finite weights \(NaN or infinity\), first in layer 'conv_2'") as info:
        _sanity.check_finite_weights(tiny_model, "--model b.keras")
    assert "\n" not in str(info.value)


def test_finite_weights_pass(tiny_model):
    _sanity.check_finite_weights(tiny_model)
    assert _sanity.first_non_finite_layer(tiny_model) is None


def test_nan_model_is_refused_by_repair(tiny_model, tmp_path, capsys):
    import h5py

    from art_pruning_defense.lab.cli import main

    path = tmp_path / "b.keras"
    _poisoned_weights(tiny_model, "conv_1").save(path)
    valid = tmp_path / "valid.h5"
    with h5py.File(valid, "w") as handle:
        handle["data"] = np.random.default_rng(0).integers(0, 255, (40, 10, 10, 3)).astype(np.float32)
        handle["label"] = (np.arange(40) % 4).astype(np.float32)
    assert main(["repair", "--model", str(path), "--valid", str(valid), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "non-finite weights (NaN or infinity), first in layer 'conv_1'" in err


def test_near_chance_and_large_drops_are_warned_about():
    with pytest.warns(MeaninglessResultWarning, match=r"B.s clean accuracy is 15.00 %, near chance \(10.00 % for 10"):
        _sanity.warn_if_near_chance(15.0, 10)
    with pytest.warns(MeaninglessResultWarning, match=r"accuracy drop X 40 exceeds B's accuracy above chance"):
        _sanity.warn_if_drop_exceeds_margin([2, 40], 60.0, 4)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _sanity.warn_if_near_chance(95.0, 10) is None
        assert _sanity.warn_if_drop_exceeds_margin([2, 4, 10], 95.0, 10) is None
        assert _sanity.warn_if_flags_most(3.0, "x") is None


def test_check_repair_warns_about_every_meaningless_figure():
    summary = [
        {"accuracy_drop": 2.0, "fraction_pruned": 0.5, "clean_flagged": 2.0},
        {"accuracy_drop": 30.0, "fraction_pruned": 1.0, "clean_flagged": 80.0},
    ]
    with pytest.warns(MeaninglessResultWarning) as caught:
        messages = _sanity.check_repair(summary, 40.0, 4, prune_until=20.0)
    assert len(messages) == len(caught) == 4
    assert any("prunes every channel at X = 30" in m for m in messages)
    assert any("GoodNet X=30 flags clean validation inputs: 80.00 %" in m for m in messages)
    assert any("prune_until 20 exceeds" in m for m in messages)
    assert any("accuracy drop X 30 exceeds" in m for m in messages)


def test_cli_prints_a_meaningless_result_warning_on_one_line(capsys):
    import warnings

    from art_pruning_defense.lab import cli

    shown = cli.functools.partial(cli._show_warning, warnings.showwarning)
    shown(MeaninglessResultWarning("B's clean accuracy\nis 20 %"), MeaninglessResultWarning, "f.py", 1)
    assert capsys.readouterr().err == "art-prune: warning: B's clean accuracy is 20 %\n"
