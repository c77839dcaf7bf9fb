"""
Resident memory of this process: the current figure (``/proc/self/statm``) and the peak over a block of work
(:class:`PeakRSS`, a thread sampling every :data:`SAMPLE_SECONDS`), for the ``peak_rss_mib`` of the benchmark's rows.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import resource
import sys
import threading
from types import TracebackType

from art_pruning_defense._defaults import SYSTEM_ALLOCATOR_VARIABLE

#: Interval between two samples of the resident memory.
SAMPLE_SECONDS = 0.02

_STATM = "/proc/self/statm"
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int | None:
    """
    :return: The resident memory of this process now, in bytes (``None`` where ``/proc`` is missing).
    """
    try:
        with open(_STATM, "rb") as file:
            return int(file.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return None


def max_rss_bytes() -> int:
    """
    :return: The peak resident memory of this process since it started, in bytes (``getrusage``).
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


class PeakRSS:
    """
    The peak resident memory of this process while in the block: a daemon thread reads ``/proc/self/statm`` every
    :data:`SAMPLE_SECONDS`; where ``/proc`` is missing, the process's overall peak (``getrusage``) at the block's end.

    >>> with PeakRSS() as peak:
    ...     work()
    >>> peak.mib
    """

    def __init__(self, interval: float = SAMPLE_SECONDS) -> None:
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        value = rss_bytes()
        if value is not None and value > self.peak_bytes:
            self.peak_bytes = value

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PeakRSS":
        self._sample()
        if rss_bytes() is not None:
            self._thread = threading.Thread(target=self._loop, name="peak-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        if self.peak_bytes == 0:
            self.peak_bytes = max_rss_bytes()

    @property
    def mib(self) -> float:
        """
        :return: The peak so far, in MiB (2**20 bytes), rounded to 0.1.
        """
        return round(self.peak_bytes / 2**20, 1)


def release_memory() -> None:
    """
    Free what the last stage left behind: Python's cyclic garbage (Keras models and layers hold reference cycles,
    so a defence's networks outlive it until a collection) and, with glibc, the freed heap pages ``malloc_trim``
    can hand back to the system (TensorFlow's worker threads allocate in arenas of their own that otherwise keep
    them). Changes no figure: no random generator is touched.
    """
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def use_system_allocator() -> bool:
    """
    Make TensorFlow allocate its tensors from the C library (``TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1``) rather than from
    its oneDNN pool, a BFC allocator that keeps every block it ever reserved for the life of the process: with the
    pool, every stage's largest working set (a Keras ``fit``'s copy of the training data, an activation cache, a
    whole-set forward pass) stays resident after the stage, and the benchmark's peak is the sum of its worst
    moments. With the C library, freed tensors go back to the system as other memory does. Where the tensors live
    changes no computation: the figures are the same.

    Takes effect only if called before TensorFlow's first allocation (before it is imported); a value already in the
    environment is kept (``TF_ONEDNN_USE_SYSTEM_ALLOCATOR=0`` restores the pool). Processes started from this one
    inherit the setting.

    :return: Whether it can take effect in this process: ``False`` where TensorFlow is already imported.
    """
    os.environ.setdefault(SYSTEM_ALLOCATOR_VARIABLE, "1")
    return "tensorflow" not in sys.modules


def _libc() -> ctypes.CDLL | None:
    global _LIBC
    if _LIBC is False:
        name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
        try:
            _LIBC = ctypes.CDLL(name) if name else None
            if _LIBC is not None and not hasattr(_LIBC, "malloc_trim"):
                _LIBC = None
        except OSError:
            _LIBC = None
    return _LIBC


_LIBC: ctypes.CDLL | None | bool = False
