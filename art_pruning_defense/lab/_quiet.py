"""
Quiet scripts: keep the libraries' start-up messages off the terminal, as ``art-prune`` does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from typing import Iterator

#: Loggers of the libraries whose messages :func:`quiet` keeps to errors.
NOISY_LOGGERS = ("tensorflow", "absl", "keras", "art", "h5py", "matplotlib", "PIL", "numba", "jax")
#: Modules whose Python warnings :func:`quiet` hides.
NOISY_MODULES = ("tensorflow", "keras", "art", "absl", "h5py", "matplotlib", "google", "numpy")


def quiet() -> None:
    """
    Keep TensorFlow's, absl's, ART's and other libraries' messages (TensorFlow's C++ start-up lines, ART's "PyTorch
    not found", deprecation warnings) to errors, as ``art-prune`` does unless ``--verbose``. Call it at the top of a
    script, before TensorFlow or ART is imported; the package's own logging is left as it is.

    It sets ``TF_CPP_MIN_LOG_LEVEL=3``, raises the libraries' loggers to ``ERROR``, filters their warnings, and imports
    TensorFlow once with file descriptor 2 muted (TensorFlow's C++ side writes there while it is imported, before its
    log level applies). A TensorFlow that is imported already keeps the lines it has printed.
    """
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in NOISY_MODULES:
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")
    warnings.filterwarnings("ignore", message=".*PyTorch not found.*")
    if "tensorflow" not in sys.modules:
        with _stderr_muted():
            with contextlib.suppress(ImportError):
                import tensorflow  # noqa: F401
    with contextlib.suppress(ImportError):
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)


@contextlib.contextmanager
def _stderr_muted() -> Iterator[None]:
    """
    Send file descriptor 2 to the null device for the duration (Python's own ``sys.stderr`` is flushed first).
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to mute
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
