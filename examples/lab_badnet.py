"""
The lab's pruning defence on the real YouTube-Face BadNet, for a user who has the lab's data files.

    python examples/lab_badnet.py --model bd_net.h5 --data-dir data/ [--out repaired/]

``--model`` is the lab's full Keras model (``bd_net.h5``) or its weights (``bd_weights.h5``, read with the DeepID
builder); ``--data-dir`` holds ``valid.h5``, ``test.h5``, ``bd_valid.h5`` and ``bd_test.h5`` (HDF5, ``data`` of
shape (N, 3, 55, 47), ``label``). Prints the lab's table: for X = 2, 4, 10 (and 20), the channels of ``conv_3``
pruned, and on the test sets the clean accuracy and attack success rate of B' and of GoodNet.
"""

import argparse
import os

from art_pruning_defense.lab.output import markdown_table
from art_pruning_defense.lab.workflow import drop_tag, evaluate, repair

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--model", required=True)
parser.add_argument("--data-dir", required=True)
parser.add_argument("--out", default="repaired")
parser.add_argument("--drops", type=float, nargs="+", default=[2, 4, 10, 20])
args = parser.parse_args()
path = lambda name: os.path.join(args.data_dir, name)  # noqa: E731

# Step 1: the sweep on the clean validation set (and the triggered one, for the curves), saving B'(X), GoodNet(X),
# sweep.csv, sweep.png and summary.md into args.out.
arch = None if "bd_net" in os.path.basename(args.model) else "deepid"
result = repair(
    args.model,
    path("valid.h5"),
    args.out,
    arch=arch,
    poisoned_valid_path=path("bd_valid.h5"),
    accuracy_drops=args.drops,
    force=True,
)

# Step 2: every GoodNet on the test sets, as in the lab's report.
rows = []
for row in result.summary:
    metrics = evaluate(
        os.path.join(args.out, f"goodnet_{drop_tag(row['accuracy_drop'])}"), path("test.h5"), path("bd_test.h5")
    )
    rows.append(
        {
            "X": row["accuracy_drop"],
            "channels": row["channels_pruned"],
            "bprime_clean": metrics["B'"]["clean_accuracy"],
            "bprime_asr": metrics["B'"]["attack_success_rate"],
            "goodnet_clean": metrics["GoodNet"]["clean_accuracy"],
            "goodnet_asr": metrics["GoodNet"]["attack_success_rate"],
        }
    )
print(
    markdown_table(
        rows,
        [
            ("X", "X (points)"),
            ("channels", "channels pruned"),
            ("bprime_clean", "B' clean %"),
            ("bprime_asr", "B' attack success %"),
            ("goodnet_clean", "GoodNet clean %"),
            ("goodnet_asr", "GoodNet attack success %"),
        ],
    )
)
