"""
The old names of :mod:`art_pruning_defense.benchmark.defences.base`, kept only for ``repairs.py`` until it imports
``make_row``, ``Run`` and ``without_flags`` from ``base``; remove this module then.
"""

from art_pruning_defense.benchmark.defences.base import Run as _Run
from art_pruning_defense.benchmark.defences.base import make_row as _row
from art_pruning_defense.benchmark.defences.base import without_flags as _without_flags

__all__ = ["_Run", "_row", "_without_flags"]
