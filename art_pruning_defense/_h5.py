"""
Checks of HDF5 files before anything is read from them: numpy and h5py only, nothing here imports TensorFlow.

An HDF5 file can make its reader read other files: a dataset with external raw storage reads its bytes from any path
(``/etc/passwd``, a FIFO that never answers), an external link opens another HDF5 file, a virtual dataset maps other
files' datasets (and reads zeros where they are missing), and a soft link can point anywhere in the file under
another name. :func:`open_checked_h5` refuses all of these before any data is read, for every HDF5 file the package
opens (lab data, legacy Keras models, weight files).
"""

from __future__ import annotations

import logging
import os

import h5py

logger = logging.getLogger(__name__)

#: Most links a file may hold; the lab's data files hold 2 and a Keras 2 model a few dozen.
MAX_LINKS = 100_000
#: What h5py raises on a damaged or truncated file (its errors map onto these builtin exceptions).
H5_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError)

_LINK_KINDS = {
    h5py.h5l.TYPE_SOFT: "a soft link",
    h5py.h5l.TYPE_EXTERNAL: "an external link (to another HDF5 file)",
}


def damaged_h5(path: str, error: BaseException) -> ValueError:
    """
    :param path: The file.
    :param error: What h5py raised.
    :return: The error for an HDF5 file that h5py cannot read.
    """
    return ValueError(
        f"{path} is a damaged or truncated HDF5 file; h5py cannot read it ({type(error).__name__}: {error})."
    )


def _name(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def check_h5_file(f: h5py.File, path: str, max_bytes: int | None = None) -> int:
    """
    Walk every link of an open HDF5 file, without following any, and refuse what would read outside the file.

    :param f: The file, open for reading.
    :param path: Its path, for the messages.
    :param max_bytes: Most bytes all datasets together may declare (shape × item size), or ``None`` for no bound.
    :return: The bytes all datasets together declare.
    :raises ValueError: If the file holds a link that is not a hard link (soft, external or user-defined), a dataset
                        with external raw storage, a virtual dataset, more than :data:`MAX_LINKS` links, or datasets
                        declaring more than ``max_bytes`` bytes; or if h5py cannot read its structure.
    """
    links: list[tuple[str, int]] = []

    def collect(name: bytes, info: h5py.h5l.LinkInfo) -> int | None:
        links.append((_name(name), info.type))
        return 1 if len(links) > MAX_LINKS else None  # a non-None value stops the walk

    try:
        f.id.links.visit(collect, info=True)
        if len(links) > MAX_LINKS:
            raise ValueError(f"{path} holds more than {MAX_LINKS} HDF5 links; refused.")
        declared = 0
        for name, kind in links:
            if kind != h5py.h5l.TYPE_HARD:
                what = _LINK_KINDS.get(kind, f"a user-defined link (type {kind})")
                raise ValueError(
                    f"{path}: '{name}' is {what}; links that are not hard links can read other objects or files and "
                    f"are refused."
                )
            obj = f[name]
            if not isinstance(obj, h5py.Dataset):
                continue
            plist = obj.id.get_create_plist()
            if plist.get_external_count() > 0 or obj.external:
                files = ", ".join(_name(entry[0]) for entry in obj.external or [])
                raise ValueError(
                    f"{path}: dataset '{name}' stores its data in external file(s) ({files or 'unnamed'}), which "
                    f"would be read as its values; refused."
                )
            if plist.get_layout() == h5py.h5d.VIRTUAL or obj.is_virtual:
                raise ValueError(
                    f"{path}: dataset '{name}' is a virtual dataset (its values come from other datasets or files); "
                    f"refused."
                )
            if obj.shape is not None:
                count = 1
                for size in obj.shape:
                    count *= int(size)
                declared += count * int(obj.dtype.itemsize)
    except ValueError as error:
        if _ours(error):
            raise
        raise damaged_h5(path, error) from None
    except H5_ERRORS as error:
        raise damaged_h5(path, error) from None
    if max_bytes is not None and declared > max_bytes:
        raise ValueError(
            f"{path}: its datasets declare {declared:,} bytes of values, more than the {max_bytes:,} accepted for a "
            f"file of its size; refused."
        )
    logger.debug("%s: %d HDF5 links, all hard links to local data.", path, len(links))
    return declared


def _ours(error: ValueError) -> bool:
    """
    :return: Whether ``error`` was raised in this module (not by h5py).
    """
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback is not None and traceback.tb_frame.f_code.co_filename == __file__


def open_checked_h5(path: str, max_bytes: int | None = None) -> h5py.File:
    """
    Open an HDF5 file for reading and check it with :func:`check_h5_file` before returning it.

    :param path: An existing file.
    :param max_bytes: Most bytes all datasets together may declare, or ``None`` for no bound.
    :return: The file, open for reading; the caller closes it.
    :raises ValueError: If h5py cannot open it, or it fails the checks of :func:`check_h5_file`.
    """
    try:
        f = h5py.File(path, "r")
    except (PermissionError, FileNotFoundError, IsADirectoryError):
        raise
    except H5_ERRORS as error:
        raise damaged_h5(path, error) from error
    try:
        check_h5_file(f, path, max_bytes=max_bytes)
    except BaseException:
        f.close()
        raise
    return f


def unpacked_bound(path: str, ratio: int = 100, floor: int = 64 * 2**20) -> int:
    """
    :param path: A file.
    :param ratio: How many times its size its contents may unpack to.
    :param floor: Bytes always allowed, whatever its size.
    :return: The most bytes the file's contents may declare: ``max(ratio × size, floor)``.
    """
    return max(ratio * os.path.getsize(path), floor)
