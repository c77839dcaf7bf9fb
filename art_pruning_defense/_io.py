"""
Atomic writing of artefacts: everything is written under a temporary name next to its destination, then renamed
into place, so that an error or an interruption never leaves a half-written artefact behind. The standard library
only: the command line checks its ``--out`` with this module before it imports anything heavy.

Output directories (a repair's results, a saved GoodNet, a benchmark's results) follow these rules:

- each holds a marker file, :data:`MARKER_FILE`, that says art-prune wrote it;
- an existing directory is replaced (``overwrite=True``, ``--force``) only if it holds that marker, is not a
  symbolic link, is not (and does not contain) the current directory, and holds none of the run's input files;
- one run at a time writes a destination: an exclusive lock on ``.<name>.lock`` beside it, taken without waiting;
- temporary directories are named ``.<name>.tmp-<pid>-...``; a later run removes those whose process is gone;
- the new directory replaces the old one in a single atomic exchange (Linux ``renameat2``), so that there is no
  moment when neither exists; elsewhere, two renames in quick succession;
- files and directories get the permissions the user's umask gives, not the private ones of ``tempfile``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from typing import Iterator, Sequence

logger = logging.getLogger(__name__)

#: The file that marks a directory as written by art-prune (JSON: tool, version, kind).
MARKER_FILE = ".art-prune-output"
#: The tool named in the marker.
MARKER_TOOL = "art-prune"
#: Largest marker file read (bytes).
MAX_MARKER_BYTES = 4096

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2

#: Locks this process holds: lock file → [file descriptor, depth], so that a holder may take its lock again.
_HELD: dict[str, list[int]] = {}


# ---------------------------------------------------------------------------------------------------------------------
# Permissions.
# ---------------------------------------------------------------------------------------------------------------------


def current_umask() -> int:
    """
    :return: The process's umask (read from ``/proc`` where possible, so that it is never changed, even briefly).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _follow_umask(path: str, directory: bool) -> None:
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


# ---------------------------------------------------------------------------------------------------------------------
# Checks of an output directory.
# ---------------------------------------------------------------------------------------------------------------------


def check_input_file(path: str, what: str, option: str | None = None) -> str:
    """
    :param path: A path that must name an existing file.
    :param what: What the file is, for the message (``"image"``, ``"lab HDF5 file"``, ...).
    :param option: The command-line option that gave ``path`` (``"--valid"``), named first in the messages.
    :return: ``path``.
    :raises FileNotFoundError: If nothing exists at ``path``.
    :raises IsADirectoryError: If ``path`` is a directory.
    :raises ValueError: If ``path`` is something else than a regular file (a FIFO, a device, ...).
    """
    label = f"{option}: {what}" if option else what[0].upper() + what[1:]
    if os.path.isdir(path):
        raise IsADirectoryError(f"{label} {path} is a directory; expected a file.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{label} {path} does not exist.")
    if not os.path.isfile(path):
        raise ValueError(f"{label} {path} is not a regular file (a FIFO, socket or device?); expected a file.")
    return path


def has_marker(directory: str) -> bool:
    """
    :param directory: A directory.
    :return: Whether it holds a valid art-prune marker (a regular file, not a link, naming art-prune).
    """
    marker = os.path.join(directory, MARKER_FILE)
    if os.path.islink(marker) or not os.path.isfile(marker) or os.path.getsize(marker) > MAX_MARKER_BYTES:
        return False
    try:
        with open(marker, encoding="utf-8") as handle:
            content = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and content.get("tool") == MARKER_TOOL


def write_marker(directory: str, kind: str) -> None:
    """
    Mark ``directory`` as written by art-prune.

    :param directory: The directory.
    :param kind: What it holds (``"repair"``, ``"goodnet"``, ``"benchmark"``, ...).
    """
    from art_pruning_defense._version import __version__

    with open(os.path.join(directory, MARKER_FILE), "w", encoding="utf-8") as handle:
        json.dump({"tool": MARKER_TOOL, "version": __version__, "kind": kind}, handle)
        handle.write("\n")


def _inside(child: str, parent: str) -> bool:
    """
    :return: Whether ``child`` is ``parent`` or lies below it (both absolute, normalised).
    """
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def check_output_dir(path: object, overwrite: bool = False, inputs: Sequence[object] = ()) -> str:
    """
    Check that ``path`` may be written as an output directory (created, or replaced if ``overwrite``).

    :param path: The destination directory.
    :param overwrite: Whether an existing destination may be replaced (``--force``).
    :param inputs: The run's input files (models, data); a destination holding any of them is never replaced.
    :return: The destination as an absolute path.
    :raises TypeError: If ``path`` is not a str or os.PathLike.
    :raises FileNotFoundError: If its parent directory does not exist.
    :raises FileExistsError: If it exists and ``overwrite`` is false.
    :raises PermissionError: If its parent directory is not writable.
    :raises ValueError: If it is a symbolic link, its parent is not a directory, or it exists and may not be replaced
                        (not a directory, not written by art-prune, the current directory or above it, or holding one
                        of ``inputs``).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"The output directory must be a str or os.PathLike, got {type(path).__name__}.")
    shown = os.fspath(path)
    if not shown:
        raise ValueError("The output directory is an empty string; expected a directory path.")
    absolute = os.path.abspath(shown)
    if os.path.islink(absolute):
        state = "a dangling symbolic link" if not os.path.exists(absolute) else "a symbolic link"
        raise ValueError(
            f"The output directory {shown} is {state}; refused (a link is never written through or replaced). "
            f"Give a real directory path."
        )
    parent = os.path.dirname(absolute)
    if not os.path.exists(parent):
        raise FileNotFoundError(f"The parent directory {parent} of the output directory {shown} does not exist.")
    if not os.path.isdir(parent):
        raise ValueError(f"The parent {parent} of the output directory {shown} is not a directory.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"The parent directory {parent} of the output directory {shown} is not writable.")
    if not os.path.lexists(absolute):
        return absolute
    if not overwrite:
        raise FileExistsError(f"{shown} exists; pass overwrite=True (--force on the command line) to replace it.")
    if not os.path.isdir(absolute):
        raise ValueError(
            f"{shown} exists and is not a directory; --force replaces only a directory that art-prune wrote."
        )
    real, cwd = os.path.realpath(absolute), os.path.realpath(os.getcwd())
    if _inside(cwd, real):
        where = "is the current directory" if real == cwd else "contains the current directory"
        raise ValueError(f"{shown} {where}; --force never replaces it. Choose a new output directory.")
    for item in inputs:
        if item is None:
            continue
        item = os.fspath(item)  # type: ignore[arg-type]
        if any(_inside(p, real) for p in (os.path.abspath(item), os.path.realpath(item))):
            raise ValueError(
                f"{shown} holds the input {item}; --force never replaces a directory holding the run's inputs. "
                f"Choose a new output directory."
            )
    if not has_marker(absolute):
        raise ValueError(
            f"{shown} exists but was not written by art-prune (it has no {MARKER_FILE} marker); --force replaces only "
            f"art-prune's own output directories. Remove it yourself or choose a new output directory."
        )
    return absolute


# ---------------------------------------------------------------------------------------------------------------------
# Locks and leftovers.
# ---------------------------------------------------------------------------------------------------------------------


def _lock_path(absolute: str) -> str:
    parent, name = os.path.split(absolute)
    return os.path.join(parent, f".{name}.lock")


@contextlib.contextmanager
def output_lock(path: str) -> Iterator[None]:
    """
    Hold an exclusive lock on the destination ``path`` (on ``.<name>.lock`` beside it), taken without waiting. The
    process that holds it may take it again (nested writers of the same destination).

    :param path: The destination.
    :raises BlockingIOError: If another process holds it.
    """
    lock = _lock_path(os.path.abspath(os.fspath(path)))
    if lock in _HELD:
        _HELD[lock][1] += 1
        try:
            yield
        finally:
            _HELD[lock][1] -= 1
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        logger.debug("No fcntl: %s is written without a lock.", path)
        yield
        return
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BlockingIOError(
                f"Another art-prune run is writing {path} (it holds {lock}); wait for it to end or choose another "
                f"output directory."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file as we opened it: lock the new one
    _HELD[lock] = [fd, 1]
    try:
        yield
    finally:
        _HELD[lock][1] -= 1
        if _HELD[lock][1] == 0:
            del _HELD[lock]
            with contextlib.suppress(OSError):
                os.remove(lock)
            os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_leftovers(absolute: str) -> list[str]:
    """
    Remove the temporary directories of earlier runs on the destination ``absolute`` whose process has ended.

    :param absolute: The destination, absolute.
    :return: The paths removed.
    """
    parent, name = os.path.split(absolute)
    pattern = re.compile(rf"^\.{re.escape(name)}\.tmp-(\d+)-")
    removed = []
    for entry in os.listdir(parent):
        match = pattern.match(entry)
        if match is None or int(match.group(1)) == os.getpid() or _pid_alive(int(match.group(1))):
            continue
        leftover = os.path.join(parent, entry)
        if os.path.isdir(leftover) and not os.path.islink(leftover):
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(leftover)
        removed.append(leftover)
        logger.info("Removed %s, left by an earlier run that ended before finishing.", leftover)
    return removed


# ---------------------------------------------------------------------------------------------------------------------
# Renames.
# ---------------------------------------------------------------------------------------------------------------------


def _renameat2(source: str, target: str, flags: int) -> bool:
    """
    :return: Whether Linux's ``renameat2`` did it; ``False`` where it is not available (other systems, old kernels,
             file systems without support).
    :raises OSError: If it is available and fails for another reason.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    if function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), target)


def _exchange(new: str, destination: str) -> None:
    """
    Put the directory ``new`` at ``destination`` and the old destination at ``new``, atomically where possible.
    """
    if _renameat2(new, destination, _RENAME_EXCHANGE):
        return
    old = new + ".old"
    os.rename(destination, old)
    os.rename(new, destination)
    os.rename(old, new)


def _move_into_place(new: str, destination: str) -> None:
    """
    Rename ``new`` to ``destination``, which must not exist (refused, not replaced, if it appeared meanwhile).
    """
    try:
        if _renameat2(new, destination, _RENAME_NOREPLACE):
            return
    except FileExistsError:
        raise FileExistsError(f"{destination} appeared while this run was writing it; nothing was replaced.") from None
    if os.path.lexists(destination):
        raise FileExistsError(f"{destination} appeared while this run was writing it; nothing was replaced.")
    os.rename(new, destination)


# ---------------------------------------------------------------------------------------------------------------------
# Atomic writers.
# ---------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_directory(
    path: str, overwrite: bool = False, kind: str = "output", inputs: Sequence[object] = ()
) -> Iterator[str]:
    """
    Yield a temporary directory to fill; on success it is marked as art-prune's (:data:`MARKER_FILE`) and replaces
    ``path``; on error it is removed. See the module's docstring for the rules.

    :param path: Destination directory.
    :param overwrite: Replace an existing destination (only one that art-prune wrote; only once the new one is
                      complete).
    :param kind: What the directory holds, recorded in the marker.
    :param inputs: The run's input files; a destination holding any of them is never replaced.
    :return: The temporary directory.
    :raises FileExistsError: If ``path`` exists and ``overwrite`` is false.
    :raises BlockingIOError: If another run is writing ``path``.
    :raises ValueError: If ``path`` may not be replaced (see :func:`check_output_dir`).
    """
    absolute = check_output_dir(path, overwrite=overwrite, inputs=inputs)
    parent, name = os.path.split(absolute)
    with output_lock(absolute):
        remove_leftovers(absolute)
        tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-{os.getpid()}-", dir=parent)
        try:
            _follow_umask(tmp, directory=True)
            yield tmp
            write_marker(tmp, kind)
            _follow_umask(os.path.join(tmp, MARKER_FILE), directory=False)
            check_output_dir(absolute, overwrite=overwrite, inputs=inputs)  # unchanged while this run worked?
            if os.path.lexists(absolute):
                _exchange(tmp, absolute)
                shutil.rmtree(tmp, ignore_errors=True)  # the old output
            else:
                _move_into_place(tmp, absolute)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[str]:
    """
    Yield a temporary file name to write; on success it replaces ``path`` (with the permissions the umask gives), on
    error it is removed.

    :param path: Destination file.
    :return: The temporary file name (same suffix as ``path``).
    """
    path = os.path.abspath(path)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.tmp-{os.getpid()}-", suffix=suffix, dir=os.path.dirname(path)
    )
    os.close(fd)
    try:
        yield tmp
        _follow_umask(tmp, directory=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
