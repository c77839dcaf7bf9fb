"""
Atomic writing of artefacts: everything is written under a temporary name next to its destination, then renamed
into place, so that an error or an interruption never leaves a half-written artefact behind.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_directory(path: str, overwrite: bool = False) -> Iterator[str]:
    """
    Yield a temporary directory to fill; on success it replaces ``path``, on error it is removed.

    :param path: Destination directory.
    :param overwrite: Replace an existing destination (only once the new one is complete).
    :return: The temporary directory.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--force on the command line) to replace it.")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"The parent directory of {path} does not exist.")
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        yield tmp
        if os.path.exists(path):
            old = tmp + ".old"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[str]:
    """
    Yield a temporary file name to write; on success it replaces ``path``, on error it is removed.

    :param path: Destination file.
    :return: The temporary file name (same suffix as ``path``).
    """
    path = os.path.abspath(path)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", suffix=suffix, dir=os.path.dirname(path))
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
