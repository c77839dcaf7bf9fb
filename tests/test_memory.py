"""Resident memory of the benchmark: the peak sampler behind the rows' ``peak_rss_mib``."""

from __future__ import annotations

import time

import numpy as np

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
