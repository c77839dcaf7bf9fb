"""Resident memory of the benchmark: the peak sampler behind the rows' ``peak_rss_mib``."""

from __future__ import annotations

import time

import numpy as np
import pytest

from art_pruning_defense.benchmark._memory import PeakRSS, max_rss_bytes, rss_bytes


def test_rss_is_read():
    now = rss_bytes()
    assert now is not None and now > 10 * 2**20
    assert max_rss_bytes() >= 0.9 * now  # getrusage and statm count pages slightly differently


def test_peak_sees_a_short_lived_allocation():
    """A 256 MiB array touched and freed inside the block raises the peak by about that much, and the peak stays."""
    before = rss_bytes()
    with PeakRSS() as peak:
        block = np.ones(256 * 2**20, dtype=np.uint8)  # touched: resident
        time.sleep(0.2)  # several samples while it lives
        del block
        time.sleep(0.1)
    after = rss_bytes()
    assert peak.peak_bytes - before >= 200 * 2**20, (before, peak.peak_bytes)
    assert peak.peak_bytes - after >= 200 * 2**20, (after, peak.peak_bytes)
    assert peak.mib == round(peak.peak_bytes / 2**20, 1)


def test_peak_of_an_idle_block_is_the_current_memory():
    with PeakRSS() as peak:
        time.sleep(0.05)
    now = rss_bytes()
    assert abs(peak.peak_bytes - now) < 64 * 2**20


def _uint8_npz(path, n_train=120, n_test=40, shape=(8, 8, 3)):
    rng = np.random.default_rng(1)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        y_train=rng.integers(0, 4, n_train),
        x_test=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        y_test=rng.integers(0, 4, n_test),
    )
    return str(path)


def test_npz_images_stay_8_bit_until_split(tmp_path):
    """The benchmark reads 8-bit images without a float copy of the whole file."""
    from art_pruning_defense.benchmark.data import _npz_arrays

    x_train, y_train, x_test, y_test, scaled = _npz_arrays(_uint8_npz(tmp_path / "u8.npz"))
    assert x_train.dtype == np.uint8 and x_test.dtype == np.uint8 and scaled
    assert x_train.shape == (120, 8, 8, 3) and y_train.dtype == np.int64


def test_split_of_8_bit_images_equals_the_float_first_path(tmp_path):
    """Splitting the 8-bit images, then converting, gives exactly the floats of converting the whole set first."""
    from art_pruning_defense.benchmark.config import BenchmarkConfig
    from art_pruning_defense.benchmark.data import clean_split

    path = _uint8_npz(tmp_path / "u8.npz")
    config = BenchmarkConfig(data=path, n_valid=30, seed=3)
    x_train, y_train, x_valid, y_valid, x_test, y_test = clean_split(config)
    with np.load(path) as raw:
        floats = raw["x_train"].astype(np.float32)
        floats /= 255.0
        test = raw["x_test"].astype(np.float32)
        test /= 255.0
        labels = raw["y_train"]
    order = np.random.default_rng(3).permutation(120)
    for got, want in ((x_train, floats[order[30:]]), (x_valid, floats[order[:30]]), (x_test, test)):
        assert got.dtype == np.float32 and np.array_equal(got, want)
    assert np.array_equal(y_train, labels[order[30:]]) and np.array_equal(y_valid, labels[order[:30]])


def test_release_memory_collects_cycles():
    """Keras networks hold reference cycles: release_memory frees them (a plain ``del`` does not)."""
    import gc
    import weakref

    from art_pruning_defense.benchmark._memory import release_memory

    class Node:
        pass

    gc.disable()
    try:
        node = Node()
        node.self = node
        alive = weakref.ref(node)
        del node
        assert alive() is not None
        release_memory()
        assert alive() is None
    finally:
        gc.enable()


def _python(code: str, env: dict[str, str]) -> str:
    import os
    import subprocess
    import sys

    environment = {k: v for k, v in os.environ.items() if k != "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"}
    environment.update(env)
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=300, check=True
    )
    return result.stdout.strip().splitlines()[-1]


def test_use_system_allocator_sets_the_variable_before_tensorflow():
    """Set where unset, an explicit value kept; TensorFlow imported already: reported as too late."""
    from art_pruning_defense.benchmark._memory import use_system_allocator

    code = (
        "import os, sys; from art_pruning_defense.benchmark._memory import use_system_allocator as u; "
        "print(u(), os.environ['TF_ONEDNN_USE_SYSTEM_ALLOCATOR'], 'tensorflow' in sys.modules)"
    )
    assert _python(code, {}) == "True 1 False"
    assert _python(code, {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "0"}) == "True 0 False"
    import tensorflow  # noqa: F401  (imported by the other tests anyway)

    assert use_system_allocator() is False


def test_system_allocator_hands_freed_tensors_back():
    """TensorFlow's oneDNN pool keeps a freed 256 MiB tensor resident; with the system allocator it goes back."""
    code = (
        "from art_pruning_defense.benchmark._memory import rss_bytes, release_memory; import tensorflow as tf; "
        "t = tf.ones((64, 2**20)); t.numpy(); before = rss_bytes(); del t; release_memory(); "
        "print((before - rss_bytes()) // 2**20)"
    )
    from concurrent.futures import ThreadPoolExecutor

    # The two interpreters side by side (each measures its own resident memory): TensorFlow imported once in the time.
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [pool.submit(_python, code, {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": value}) for value in ("0", "1")]
        pooled, returned = (int(run.result()) for run in runs)
    assert returned >= 200, returned
    if pooled >= 200:
        pytest.skip(f"TensorFlow's pool now hands freed memory back by itself ({pooled} MiB)")
