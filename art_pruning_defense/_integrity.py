"""
Content hashes: of files (SHA-256, streamed), of JSON-like values (the SHA-256 of their canonical JSON text), and
manifests: a ``MANIFEST.json`` in a directory holding the SHA-256 of each of its files, written last, verified on read.

The standard library only; nothing here imports numpy or TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import stat
from typing import Any, Iterable

logger = logging.getLogger(__name__)

#: The manifest's file name, in a directory it covers.
MANIFEST_FILE = "MANIFEST.json"
#: What a manifest says it is.
MANIFEST_FORMAT = "art_pruning_defense.manifest"
MANIFEST_VERSION = 1
#: Largest manifest read (bytes).
MAX_MANIFEST_BYTES = 1 << 16
#: Bytes read at a time when hashing a file.
_CHUNK = 1 << 20

#: (real path, device, inode, size, mtime_ns) → SHA-256: a file is hashed once per process while it is unchanged.
_FILE_HASHES: dict[tuple, str] = {}


class IntegrityError(ValueError):
    """
    A directory's files do not match its manifest (or the manifest is missing or malformed).
    """


def file_sha256(path: str) -> str:
    """
    :param path: A regular file (a symbolic link is followed).
    :return: The SHA-256 of its content, as 64 hexadecimal digits; remembered while the file's size, modification
             time and inode stay the same.
    :raises FileNotFoundError: If it does not exist.
    :raises ValueError: If it is not a regular file.
    """
    path = os.fspath(path)
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is not a regular file; only the content of a regular file can be hashed.")
    memo = (os.path.realpath(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    known = _FILE_HASHES.get(memo)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    _FILE_HASHES[memo] = digest.hexdigest()
    return _FILE_HASHES[memo]


def canonical_json(value: Any) -> str:
    """
    :param value: Plain JSON values (dicts with string keys, lists or tuples, strings, finite numbers, booleans,
           ``None``).
    :return: Its canonical JSON text: keys sorted, no spaces, floats as their shortest round-trip form (so that
             0.1 and 0.1000001 differ), ASCII only.
    :raises ValueError: If it holds NaN or an infinity (they have no JSON form).
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def value_sha256(value: Any) -> str:
    """
    :return: The SHA-256 of :func:`canonical_json` of ``value`` (64 hexadecimal digits).
    """
    return hashlib.sha256(canonical_json(value).encode("ascii")).hexdigest()


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def strict_json_loads(text: str | bytes) -> Any:
    """
    Parse JSON as the standard defines it: ``NaN``, ``Infinity`` and numbers that overflow a float are refused
    (Python's ``json`` accepts them).

    :raises ValueError: If the text is not strict JSON.
    """
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)


def write_manifest(directory: str, names: Iterable[str] | None = None, extra: dict | None = None) -> str:
    """
    Write ``MANIFEST.json`` into ``directory`` (atomically: a temporary file renamed): the SHA-256 and size of each
    file. Call it last, once every file is written (inside an :func:`~art_pruning_defense._io.atomic_directory`, the
    whole directory then appears at once).

    :param directory: The directory.
    :param names: The files to cover, relative to ``directory`` (default: every regular file at its top level but
           the manifest).
    :param extra: More JSON values stored beside the hashes (e.g. what the directory holds).
    :return: The manifest's path.
    """
    if names is None:
        names = sorted(
            name
            for name in os.listdir(directory)
            if name != MANIFEST_FILE and os.path.isfile(os.path.join(directory, name))
            and not os.path.islink(os.path.join(directory, name))
        )
    files = {}
    for name in names:
        full = os.path.join(directory, name)
        files[name] = {"sha256": file_sha256(full), "bytes": os.path.getsize(full)}
    manifest = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "files": files, **(extra or {})}
    path = os.path.join(directory, MANIFEST_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def has_manifest(directory: str) -> bool:
    """
    :return: Whether ``directory`` holds a manifest (a file or anything else by that name).
    """
    return os.path.lexists(os.path.join(directory, MANIFEST_FILE))


def read_manifest(directory: str) -> dict:
    """
    :return: The manifest of ``directory``, its form checked (not yet the files: see :func:`verify_manifest`).
    :raises IntegrityError: If it is missing, not a regular file, too large, or malformed.
    """
    path = os.path.join(directory, MANIFEST_FILE)
    if os.path.islink(path) or not os.path.isfile(path):
        raise IntegrityError(f"{path} is missing or not a regular file.")
    if os.path.getsize(path) > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes; refused.")
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = strict_json_loads(handle.read())
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise IntegrityError(f"{path} cannot be read ({' '.join(str(error).split())[:200]}).") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != MANIFEST_FORMAT
        or manifest.get("format_version") != MANIFEST_VERSION
        or not isinstance(files, dict)
        or not all(
            isinstance(name, str)
            and name
            and os.path.basename(name) == name
            and name not in (".", "..", MANIFEST_FILE)
            and isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and len(entry["sha256"]) == 64
            and isinstance(entry.get("bytes"), int)
            for name, entry in files.items()
        )
    ):
        raise IntegrityError(f"{path} is not a manifest of format {MANIFEST_FORMAT} version {MANIFEST_VERSION}.")
    return manifest


def verify_manifest(directory: str, required: Iterable[str] = ()) -> dict:
    """
    Check every file a directory's manifest lists: a regular file (not a link), of the listed size and SHA-256.

    :param directory: The directory.
    :param required: Files the manifest must list.
    :return: The manifest.
    :raises IntegrityError: On the first mismatch, naming the file (one line).
    """
    manifest = read_manifest(directory)
    files = manifest["files"]
    for name in required:
        if name not in files:
            raise IntegrityError(f"{directory}: {MANIFEST_FILE} does not list {name}; the directory is not trusted.")
    for name, entry in files.items():
        full = os.path.join(directory, name)
        if os.path.islink(full) or not os.path.isfile(full):
            raise IntegrityError(
                f"{full} is missing, a symbolic link or not a regular file; {MANIFEST_FILE} lists a regular file."
            )
        if os.path.getsize(full) != entry["bytes"] or file_sha256(full) != entry["sha256"]:
            raise IntegrityError(
                f"{full} does not match its SHA-256 in {MANIFEST_FILE} (changed or replaced since it was written)."
            )
    return manifest
