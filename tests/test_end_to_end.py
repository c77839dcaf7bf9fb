"""The embedded default end to end: a digits BadNet made with ART's backdoor attack, repaired."""

from __future__ import annotations

import numpy as np
import pytest

from art_pruning_defense import FinePruning
from art_pruning_defense.lab.cli import main


@pytest.fixture
def badnet(digits_badnet):
    return digits_badnet


def test_data_is_poisoned_as_asked(badnet):
    data, _ = badnet
    assert data.is_poison_train.sum() == 110 and len(data.x_train) == 1100
    assert np.all(data.y_train[data.is_poison_train] == 0)
    assert len(data.x_valid) == 300 and len(data.x_test) == 397
    # The trigger is ART's pattern in the bottom-right corner.
    assert np.all(data.x_test_poisoned[:, 14, 14, 0] == 1.0)


def test_badnet_is_backdoored_and_goodnet_x10_lowers_the_attack_success_rate(badnet):
    data, classifier = badnet
    defence = FinePruning(classifier, verbose=False)
    defence.fit(data.x_valid, data.y_valid, poisoned_x=data.x_valid_poisoned, poisoned_target=data.target)
    goodnet = defence(classifier, accuracy_drop=10)
    rows = goodnet.evaluate(data.x_test, data.y_test, data.x_test_poisoned, data.target)
    assert rows["B"]["clean_accuracy"] > 90 and rows["B"]["attack_success_rate"] > 90
    assert rows["GoodNet"]["attack_success_rate"] < rows["B"]["attack_success_rate"]
    assert rows["GoodNet"]["poisoned_flagged"] > 0
    # The sweep saw the same: B'(10) sits at least 10 points below B on the validation data.
    record = defence.sweep_[defence.steps_[10.0]]
    assert defence.sweep_[0].clean_accuracy - record.clean_accuracy >= 10 or record.fraction_pruned == 1.0


def test_cli_demo_prints_the_table(capsys):
    # The table's layout, not the figures (the BadNet itself is checked above): a short training and fine-tuning do.
    assert main(["demo", "--quiet", "--epochs", "3", "--fine-tune-epochs", "2", "--drops", "4", "10"]) == 0
    out = capsys.readouterr().out
    assert "| model | channels pruned | clean accuracy % | attack success % |" in out
    for name in ("B (BadNet)", "B'(X=4)", "GoodNet(X=4)", "GoodNet(X=10)", "B' fine-pruned", "GoodNet fine-pruned"):
        assert f"| {name} |" in out
