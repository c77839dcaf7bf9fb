"""
A 50,000-image 32x32 colour set for the benchmark's memory target, made from ../shared/data/cifar10.npz.

    python perf/colour_set.py --out PATH.npz

``x_train``: the 20,000 CIFAR-10 training images and 30,000 copies of them drawn at random (seed 0), each flipped
left-right with probability 1/2 and shifted by up to 3 pixels (wrapping around); ``x_test``: the 10,000 test
images; uint8, with their labels. Its size is that of CIFAR-10's training set; its accuracy figures are not CIFAR-10's
(the copies are near-duplicates), so it serves to measure memory and time, not to quote results.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10.npz"
N_TRAIN = 50_000


def colour_set(x: np.ndarray, y: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """
    :param x: Training images ``(m, height, width, 3)``.
    :param y: Their labels.
    :param n: Images wanted (at least ``m``): ``x`` itself, then ``n - m`` flipped and shifted copies.
    :param seed: Seed of the draws.
    :return: The images and their labels.
    """
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(x), n - len(x))
    copies = x[pick].copy()
    flip = rng.random(len(pick)) < 0.5
    copies[flip] = copies[flip][:, :, ::-1]
    for i, (dy, dx) in enumerate(rng.integers(-3, 4, size=(len(pick), 2))):
        copies[i] = np.roll(copies[i], (dy, dx), axis=(0, 1))
    return np.concatenate([x, copies]), np.concatenate([y, y[pick]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the .npz file to write (must not exist)")
    args = parser.parse_args(argv)
    if not args.out.endswith(".npz"):
        print(f"error: --out must name a .npz file, got {args.out}", file=sys.stderr)
        return 2
    if os.path.lexists(args.out):
        print(f"error: {args.out} exists; give a new path", file=sys.stderr)
        return 2
    if not SOURCE.is_file():
        print(f"error: {SOURCE} not found: this script needs ../shared", file=sys.stderr)
        return 2
    with np.load(SOURCE) as data:
        x, y = colour_set(data["x_train"], data["y_train"], N_TRAIN)
        x_test, y_test = data["x_test"], data["y_test"]
    partial = args.out[: -len(".npz")] + ".partial.npz"
    np.savez(partial, x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    os.replace(partial, args.out)  # never a half-written set under the given name
    print(f"wrote {args.out}: {len(x)} training and {len(x_test)} test images of shape {x.shape[1:]}")
    print(f"command: python perf/colour_set.py --out {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
