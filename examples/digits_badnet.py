"""
Fine-pruning a BadNet, step by step, on scikit-learn's bundled digits (nothing to download).

    python examples/digits_badnet.py
"""

from art.estimators.classification import KerasClassifier

from art_pruning_defense import FinePruning, FinePruningDetector
from art_pruning_defense.lab.digits import digits_badnet_data
from art_pruning_defense.keras import mnist_cnn, train

# 1. A BadNet: ART's PoisoningAttackBackdoor puts a pattern in the corner of 10 % of the training digits and
#    relabels them 0. The defender keeps 300 clean digits for validation.
data = digits_badnet_data(poison_rate=0.1, target=0, trigger="pattern", seed=0)
model = train(mnist_cnn(data.x_train.shape[1:], 10), data.x_train, data.y_train, epochs=30, batch_size=32)
classifier = KerasClassifier(model, clip_values=(0.0, 1.0))

# 2. The sweep: prune the last conv layer's channels, least active first, recording clean accuracy after each step.
#    Fine-tuning (20 epochs on the 300 clean digits) repairs the network pruned to a 20-point drop.
defence = FinePruning(classifier, accuracy_drops=(2, 4, 10), fine_tune_epochs=20)
defence.fit(data.x_valid, data.y_valid)
for row in defence.summary():
    print(
        f"X={row['accuracy_drop']:g}: {row['channels_pruned']} channels pruned, "
        f"validation accuracy {row['clean_accuracy']:.2f}%"
    )

# 3. GoodNets: N + 1 classes, class N meaning "poisoned input".
for name, goodnet in (("pruned, X=4", defence(classifier, accuracy_drop=4)), ("fine-pruned", defence(classifier))):
    metrics = goodnet.evaluate(data.x_test, data.y_test, data.x_test_poisoned, data.target)
    pruned, flags = metrics["B'"], metrics["GoodNet"]
    print(
        f"{name}: B' clean {pruned['clean_accuracy']:.2f}% / attack {pruned['attack_success_rate']:.2f}%; "
        f"GoodNet flags {flags['poisoned_flagged']:.2f}% of triggered and {flags['clean_flagged']:.2f}% of clean "
        "test digits"
    )

# 4. The same as a poison filter with ART's contract, scored against the ground truth.
detector = FinePruningDetector(classifier, data.x_train, data.y_train, data.x_valid, data.y_valid, verbose=False)
report, is_clean = detector.detect_poison()
print(
    f"flagged {report['n_flagged']} of {len(is_clean)} training images "
    f"({int(data.is_poison_train.sum())} were poisoned)"
)
