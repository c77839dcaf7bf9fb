"""
Calibrated detection on scikit-learn's digits (nothing to download): the fine-pruning GoodNet's continuous score,
its AUROC and TPR at 1 % FPR on clean vs triggered test digits, and a threshold calibrated at 1 % FPR on the
defender's 300 clean validation digits (which also fine-tuned B'), then on 150 clean digits B' never saw.

    python examples/calibrated_detection.py
"""

import numpy as np

from art_pruning_defense import FinePruning
from art_pruning_defense._metrics import detection_metrics
from art_pruning_defense.lab.digits import digits_badnet_data
from art_pruning_defense.lab.demo import train_digits_badnet
from art_pruning_defense.fine_pruning import RECOMMENDED_FINE_TUNE_EPOCHS

data = digits_badnet_data(poison_rate=0.1, target=0, trigger="pattern", seed=0)
classifier = train_digits_badnet(data, epochs=30, seed=0)
defence = FinePruning(classifier, fine_tune_epochs=RECOMMENDED_FINE_TUNE_EPOCHS, verbose=False)  # the defaults
defence.fit(data.x_valid, data.y_valid)
goodnet = defence(classifier)

x = np.concatenate([data.x_test, data.x_test_poisoned])
is_triggered = np.r_[np.zeros(len(data.x_test), int), np.ones(len(data.x_test_poisoned), int)]
bad, pruned, scores = goodnet.labels_and_scores(x)
continuous = detection_metrics(scores, is_triggered, false_positive_rate=0.01)
print(f"{len(data.x_test)} clean and {len(data.x_test_poisoned)} triggered test digits")
print(f"score: AUROC {continuous['auroc']:.4f}, TPR {continuous['tpr_at_fpr']:.2f}% at FPR {continuous['fpr']:.2f}%")
flagged = bad != pruned
print(
    f"label rule: {100 * flagged[is_triggered == 1].mean():.2f}% of triggered, "
    f"{100 * flagged[is_triggered == 0].mean():.2f}% of clean flagged"
)
threshold = goodnet.calibrate(data.x_valid, false_positive_rate=0.01)
flagged = scores > threshold
print(
    f"calibrated at 1% FPR on {len(data.x_valid)} validation digits (threshold {threshold:.4f}): "
    f"{100 * flagged[is_triggered == 1].mean():.2f}% of triggered, {100 * flagged[is_triggered == 0].mean():.2f}% "
    "of clean test digits flagged"
)

# B' was fine-tuned on the validation digits, so it is more confident on them than on unseen ones: calibrating on
# clean digits it never saw (the first 150 test digits; measured on the other 247 and the triggered ones) is fairer.
threshold = goodnet.calibrate(data.x_test[:150], false_positive_rate=0.01)
rest = np.r_[np.zeros(150, bool), np.ones(len(x) - 150, bool)]
flagged = scores > threshold
print(
    f"calibrated at 1% FPR on 150 unseen clean digits (threshold {threshold:.4f}): "
    f"{100 * flagged[rest & (is_triggered == 1)].mean():.2f}% of triggered, "
    f"{100 * flagged[rest & (is_triggered == 0)].mean():.2f}% of the other {len(data.x_test) - 150} clean flagged"
)
