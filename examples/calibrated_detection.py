"""
Calibrated detection on scikit-learn's digits (nothing to download): the fine-pruning GoodNet's continuous score,
its AUROC and TPR at 1 % FPR on clean vs triggered test digits, and a threshold calibrated at 5 % FPR, first (the
pitfall) on the defender's 300 clean validation digits that also fine-tuned B', then as the library does it: on the
90 validation digits held out of pruning and fine-tuning (``calibration_fraction=0.3``), which B' never saw.

    python examples/calibrated_detection.py
"""

import numpy as np

from art_pruning_defense import FinePruning
from art_pruning_defense._metrics import conformal_band, detection_metrics
from art_pruning_defense.lab.digits import digits_badnet_data
from art_pruning_defense.lab.demo import train_digits_badnet
from art_pruning_defense.fine_pruning import RECOMMENDED_FINE_TUNE_EPOCHS

RATE = 0.05
data = digits_badnet_data(poison_rate=0.1, target=0, trigger="pattern", seed=0)
classifier = train_digits_badnet(data, epochs=30, seed=0)
x = np.concatenate([data.x_test, data.x_test_poisoned])
is_triggered = np.r_[np.zeros(len(data.x_test), int), np.ones(len(data.x_test_poisoned), int)] == 1
print(f"{len(data.x_test)} clean and {len(data.x_test_poisoned)} triggered test digits")


def report(label: str, scores: np.ndarray, threshold: float) -> None:
    flagged = scores > threshold
    print(
        f"{label} (threshold {threshold:.4f}): {100 * flagged[is_triggered].mean():.2f}% of triggered, "
        f"{100 * flagged[~is_triggered].mean():.2f}% of clean test digits flagged"
    )


# The pitfall: B' fine-tuned on all 300 validation digits, the threshold chosen on the same digits.
defence = FinePruning(classifier, fine_tune_epochs=RECOMMENDED_FINE_TUNE_EPOCHS, verbose=False)
defence.fit(data.x_valid, data.y_valid)
goodnet = defence(classifier)
bad, pruned, scores = goodnet.labels_and_scores(x)
continuous = detection_metrics(scores, is_triggered.astype(int), false_positive_rate=0.01)
print(f"score: AUROC {continuous['auroc']:.4f}, TPR {continuous['tpr_at_fpr']:.2f}% at FPR {continuous['fpr']:.2f}%")
print(
    f"label rule: {100 * (bad != pruned)[is_triggered].mean():.2f}% of triggered, "
    f"{100 * (bad != pruned)[~is_triggered].mean():.2f}% of clean flagged"
)
report(f"calibrated at {RATE:.0%} on the 300 digits that fine-tuned B'", scores, goodnet.calibrate(data.x_valid, RATE))

# Held out: 210 digits prune and fine-tune B', the other 90 calibrate it.
defence = FinePruning(
    classifier, fine_tune_epochs=RECOMMENDED_FINE_TUNE_EPOCHS, calibration_fraction=0.3, verbose=False
)
defence.fit(data.x_valid, data.y_valid)
goodnet = defence(classifier, false_positive_rate=RATE)
n = len(defence.calibration_indices_)
low, high = conformal_band(n, RATE)
report(
    f"calibrated at {RATE:.0%} on {n} held-out digits (fresh-data rate in [{100 * low:.1f}, {100 * high:.1f}]%)",
    goodnet.score(x),
    goodnet.threshold_,
)
