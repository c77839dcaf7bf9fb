"""
Loaders for the defence's inputs: the lab's HDF5 data sets (read in batches), images and ``.npz`` arrays.
numpy, h5py and Pillow only; nothing here imports TensorFlow.

The lab's HDF5 format (NYU CSAW-HackML / ML-for-Cyber-Security: ``valid.h5``, ``test.h5``, ``bd_valid.h5``, ...)
holds two datasets: ``data`` of shape ``(N, 3, 55, 47)`` (channels first), float, pixel values 0..255, and
``label`` of shape ``(N,)``. The loaders here return channels-last ``float32`` arrays ``(N, 55, 47, 3)`` with the
pixel values unchanged (no scaling), which is what the lab's models take. Images read with :func:`load_image` come
out in exactly the same form.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from typing import Iterator, Sequence

import h5py
import numpy as np
from PIL import Image, UnidentifiedImageError

from art_pruning_defense._h5 import H5_ERRORS, damaged_h5, open_checked_h5
from art_pruning_defense._io import atomic_file, check_input_file

logger = logging.getLogger(__name__)

#: Names of the lab's HDF5 datasets.
LAB_DATA_KEY = "data"
LAB_LABEL_KEY = "label"
#: Per-sample shape of the lab's images, channels last (height, width, channels).
LAB_IMAGE_SHAPE: tuple[int, int, int] = (55, 47, 3)
#: Keys an ``.npz`` data file must hold.
NPZ_KEYS: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")
#: Image modes :func:`load_image` converts to RGB; any other mode is refused.
IMAGE_MODES: tuple[str, ...] = ("RGB", "RGBA", "L")
#: dtype kinds of numbers (integers, floats); not bool, complex, strings or objects.
NUMERIC_KINDS = "iuf"
#: Largest labels CSV file read (bytes).
MAX_LABELS_CSV_BYTES = 64 * 2**20


def _damaged(path: str, error: BaseException) -> ValueError:
    """
    :return: The error for an HDF5 file that h5py cannot read.
    """
    return damaged_h5(path, error)


# ---------------------------------------------------------------------------------------------------------------------
# The lab's HDF5 files.
# ---------------------------------------------------------------------------------------------------------------------


def _check_path(path: object, what: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"The {what} path must be a str or os.PathLike, got {type(path).__name__}.")
    path = os.fspath(path)
    return check_input_file(path, what)


def _open_lab_h5(path: object) -> tuple[h5py.File, h5py.Dataset, h5py.Dataset]:
    """
    Open a lab HDF5 file and check its layout (the datasets' shapes only; nothing is read).

    :return: ``(file, data, label)``; the caller closes the file.
    """
    path = _check_path(path, "lab HDF5 file")
    if not h5py.is_hdf5(path):
        raise ValueError(
            f"{path} is not an HDF5 file; expected the lab's format (datasets '{LAB_DATA_KEY}' (N, 3, 55, 47) and "
            f"'{LAB_LABEL_KEY}' (N,))."
        )
    f = open_checked_h5(path)  # refuses links, external storage and virtual datasets before reading anything
    try:
        try:
            found = {key: f.get(key) for key in (LAB_DATA_KEY, LAB_LABEL_KEY)}
            missing = [key for key, value in found.items() if not isinstance(value, h5py.Dataset)]
            names = sorted(str(key) for key in f) if missing else []
        except H5_ERRORS as error:
            raise _damaged(path, error) from error
        groups = [key for key in missing if isinstance(found[key], h5py.Group)]
        if groups:
            raise ValueError(
                f"{path}: {' and '.join(repr(k) for k in groups)} {'is a group' if len(groups) == 1 else 'are groups'}"
                f", not a dataset; the lab's format holds datasets '{LAB_DATA_KEY}' (N, 3, H, W) and "
                f"'{LAB_LABEL_KEY}' (N,)."
            )
        if missing:
            raise ValueError(
                f"{path} has no dataset {' or '.join(repr(k) for k in missing)}; the lab's format holds "
                f"'{LAB_DATA_KEY}' (N, 3, H, W) and '{LAB_LABEL_KEY}' (N,). "
                f"Found: {', '.join(names) or 'nothing'}."
            )
        data, label = found[LAB_DATA_KEY], found[LAB_LABEL_KEY]
        try:
            data_shape, label_shape = data.shape, label.shape
            data_dtype, label_dtype = np.dtype(data.dtype), np.dtype(label.dtype)
        except H5_ERRORS as error:
            raise _damaged(path, error) from error
        if data_shape is None or label_shape is None:
            raise ValueError(
                f"{path}: '{LAB_DATA_KEY}' has shape {data_shape} and '{LAB_LABEL_KEY}' has shape {label_shape}; "
                f"the lab's format is (N, 3, H, W) and (N,)."
            )
        if data.ndim != 4 or data.shape[1] != 3:
            raise ValueError(
                f"{path}: '{LAB_DATA_KEY}' has shape {data.shape}, but the lab's format is (N, 3, H, W) (channels "
                f"first, RGB), e.g. (N, 3, 55, 47)."
            )
        if data_dtype.kind not in NUMERIC_KINDS:
            raise ValueError(f"{path}: '{LAB_DATA_KEY}' holds {data_dtype}, expected numbers (pixel values 0..255).")
        if label.ndim != 1 and not (label.ndim == 2 and label.shape[1] == 1):
            raise ValueError(f"{path}: '{LAB_LABEL_KEY}' has shape {label.shape}, expected (N,) integer labels.")
        if label_dtype.kind not in NUMERIC_KINDS:
            raise ValueError(f"{path}: '{LAB_LABEL_KEY}' holds {label_dtype}, expected integer labels.")
        if data.shape[0] != label.shape[0]:
            raise ValueError(
                f"{path}: '{LAB_DATA_KEY}' has {data.shape[0]} samples but '{LAB_LABEL_KEY}' has {label.shape[0]} "
                f"labels; they must match."
            )
        if data.shape[0] == 0:
            raise ValueError(f"{path} holds no samples ('{LAB_DATA_KEY}' has shape {data.shape}).")
        if 0 in data.shape[2:]:
            raise ValueError(f"{path}: '{LAB_DATA_KEY}' has shape {data.shape}; the images are empty.")
    except BaseException:
        f.close()
        raise
    return f, data, label


def _labels(raw: np.ndarray, path: str) -> np.ndarray:
    """
    :return: The labels as int64, shape ``(n,)``.
    """
    raw = raw.reshape(-1)
    if np.issubdtype(raw.dtype, np.floating) and (not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw))):
        raise ValueError(f"{path}: '{LAB_LABEL_KEY}' holds non-integer values; expected integer class labels.")
    # The cast to int64 would wrap larger values (uint64 labels, floats beyond 2**63) around to other numbers.
    too_large = (raw < -(2.0**63)) | (raw >= 2.0**63)
    if np.any(too_large):
        raise ValueError(
            f"{path}: '{LAB_LABEL_KEY}' holds values too large for class labels, e.g. {raw[too_large][0].item()!r}."
        )
    return raw.astype(np.int64)


def lab_h5_info(path: str) -> tuple[int, tuple[int, int, int]]:
    """
    :param path: A lab HDF5 file.
    :return: ``(n_samples, sample_shape)``, the sample shape channels last, e.g. ``(11547, (55, 47, 3))``.
    :raises FileNotFoundError: If ``path`` does not exist.
    :raises IsADirectoryError: If ``path`` is a directory.
    :raises ValueError: If the file is not in the lab's format.
    """
    f, data, _ = _open_lab_h5(path)
    with f:
        n, channels, height, width = data.shape
    return int(n), (int(height), int(width), int(channels))


def iter_lab_h5(path: str, batch_size: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """
    Read a lab HDF5 file in batches, so that large sets need not fit in memory at once.

    The file's layout is checked when this is called, before the first batch is asked for.

    :param path: A lab HDF5 file (datasets ``data`` ``(N, 3, H, W)`` and ``label`` ``(N,)``).
    :param batch_size: Number of samples per batch (the last batch may be smaller).
    :return: An iterator over ``(x, y)``: ``x`` float32 ``(n, H, W, 3)`` channels last, pixel values as stored
             (0..255, not scaled); ``y`` int64 ``(n,)``.
    :raises FileNotFoundError: If ``path`` does not exist.
    :raises IsADirectoryError: If ``path`` is a directory.
    :raises ValueError: If the file is not in the lab's format, or ``batch_size`` is not a positive integer.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    f, data, label = _open_lab_h5(path)  # checked now, not at the first next()
    return _iterate(f, data, label, int(batch_size), os.fspath(path))


def _iterate(
    f: h5py.File, data: h5py.Dataset, label: h5py.Dataset, batch_size: int, path: str
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    with f:
        n = data.shape[0]
        logger.debug("Reading %d samples from %s in batches of %d.", n, path, batch_size)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            try:
                raw_x, raw_y = data[start:stop], np.asarray(label[start:stop])
                beyond = _beyond_float32(raw_x)
                x = np.ascontiguousarray(np.transpose(raw_x, (0, 2, 3, 1)), dtype=np.float32)
            except MemoryError:
                size = (stop - start) * int(np.prod(data.shape[1:])) * 4 / 2**30
                raise ValueError(
                    f"{path}: samples {start}..{stop - 1} need {size:.1f} GiB as float32, more than can be allocated; "
                    "read the file in smaller batches (iter_lab_h5(path, batch_size))."
                ) from None
            except H5_ERRORS as error:
                raise _damaged(path, error) from error
            if beyond is not None:
                raise ValueError(
                    f"{path}: '{LAB_DATA_KEY}' holds {raw_x[beyond].item()!r} (sample {start + int(beyond[0])}), "
                    f"outside float32's range (±{np.finfo(np.float32).max:.4g}); pixel values are expected in 0..255."
                )
            yield x, _labels(raw_y, path)


def _beyond_float32(raw: np.ndarray) -> tuple[int, ...] | None:
    """
    :param raw: A batch as stored.
    :return: The index of a finite value that float32 cannot hold (it would turn into an infinity when cast), or
             ``None``.
    """
    if raw.dtype.kind != "f" or raw.dtype.itemsize <= 4:
        return None
    beyond = np.isfinite(raw) & (np.abs(raw) > float(np.finfo(np.float32).max))
    if not np.any(beyond):
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(beyond)), raw.shape))


def load_lab_h5(path: str) -> tuple[np.ndarray, np.ndarray]:
    """
    Read a whole lab HDF5 file at once (for files that fit in memory; see :func:`iter_lab_h5` otherwise).

    :param path: A lab HDF5 file.
    :return: ``(x, y)``: ``x`` float32 ``(N, H, W, 3)`` channels last, 0..255; ``y`` int64 ``(N,)``.
    :raises FileNotFoundError: If ``path`` does not exist.
    :raises IsADirectoryError: If ``path`` is a directory.
    :raises ValueError: If the file is not in the lab's format.
    """
    n, _ = lab_h5_info(path)
    parts = list(iter_lab_h5(path, batch_size=max(n, 1)))
    x = np.concatenate([p[0] for p in parts], axis=0)
    y = np.concatenate([p[1] for p in parts], axis=0)
    logger.info("Loaded %d samples of shape %s from %s.", len(x), x.shape[1:], path)
    return x, y


#: Largest label written (labels are stored as int32).
MAX_LABEL = 2**31 - 1
#: Most pixels of one image read by make-h5 (Pillow's own limit, about 89 million, still lets one image take 1 GB
#: as float32), and most bytes of the float32 array of all the images.
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_IMAGES_BYTES = 2**30


def check_label(text: str, where: str) -> int:
    """
    :param text: A label's digits.
    :param where: Where it comes from, for the message.
    :return: It as an int.
    :raises ValueError: If it is not in [0, :data:`MAX_LABEL`] (labels are stored as int32).
    """
    if not text.isdigit() or len(text) > 10 or int(text) > MAX_LABEL:
        shown = text if len(text) <= 20 else text[:20] + "…"
        raise ValueError(f"{where}: label {shown} is out of range; expected an integer in [0, {MAX_LABEL}].")
    return int(text)


def write_lab_h5(path: str, x: np.ndarray, labels: np.ndarray) -> None:
    """
    Write images and labels in the lab's HDF5 layout (``data`` float32 ``(N, 3, H, W)``, ``label`` float32
    ``(N,)``, as the lab's files store them), atomically: written under a temporary name, then renamed.

    :param path: Destination file (replaced if it exists).
    :param x: Images, channels last, ``(N, H, W, 3)``, pixel values 0..255 (written as given, not scaled).
    :param labels: Integer labels ``(N,)``.
    :raises TypeError: If ``x`` or ``labels`` are not numeric numpy arrays.
    :raises ValueError: If the shapes are wrong, they do not match, or they are empty.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}.")
    for name, array in (("x", x), ("labels", labels)):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}.")
        numeric = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
        if array.dtype == bool or not numeric:
            raise TypeError(f"{name} must hold numbers, got dtype {array.dtype}.")
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"x must be channels-last RGB images (N, H, W, 3), got shape {x.shape}.")
    if labels.ndim != 1:
        raise ValueError(f"labels must be integer labels of shape (N,), got shape {labels.shape}.")
    if len(x) != len(labels):
        raise ValueError(f"x has {len(x)} samples but labels has {len(labels)}; they must match.")
    if len(x) == 0:
        raise ValueError("x is empty; at least one sample is needed.")
    if np.issubdtype(labels.dtype, np.floating) and np.any(labels != np.round(labels)):
        raise ValueError("labels holds non-integer values; expected integer class labels.")
    if np.any(labels < 0) or np.any(labels > MAX_LABEL):
        raise ValueError(f"labels must be in [0, {MAX_LABEL}] (stored as int32), got {labels.min()}..{labels.max()}.")
    with atomic_file(os.fspath(path)) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset(LAB_DATA_KEY, data=np.transpose(x, (0, 3, 1, 2)).astype(np.float32))
            f.create_dataset(LAB_LABEL_KEY, data=labels.astype(np.int32))  # exact: float32 rounds above 2**24
    logger.info("Wrote %d samples to %s.", len(x), path)


# ---------------------------------------------------------------------------------------------------------------------
# Images and npz files.
# ---------------------------------------------------------------------------------------------------------------------


def load_image(path: str, expected_shape: Sequence[int] | None = LAB_IMAGE_SHAPE) -> np.ndarray:
    """
    Read one image as the lab's HDF5 files hold images: RGB, channels last, float32 pixel values 0..255 (no scaling).

    Modes: ``RGB`` is read as is; ``RGBA`` is converted to RGB by dropping the alpha channel (the colour values are
    kept, not blended with a background); ``L`` (greyscale) is converted to RGB by repeating the grey value in the
    three channels. Any other mode (palette ``P``, 16-bit ``I;16``, ``CMYK``, ...) is refused, since its conversion
    would not give the pixel values the lab's models were trained on. The image is never resized.

    :param path: An image file Pillow reads (PNG, JPEG, BMP, ...). Lossless formats (PNG) reproduce the lab's data
                 exactly; JPEG does not.
    :param expected_shape: Required ``(height, width, 3)``; ``None`` to accept any size.
    :return: The image, float32, shape ``(1, H, W, 3)``.
    :raises FileNotFoundError: If ``path`` does not exist.
    :raises IsADirectoryError: If ``path`` is a directory.
    :raises ValueError: If the file is not an image, its mode is not RGB/RGBA/L, or its size is not the expected one.
    """
    path = _check_path(path, "image")
    expected = None if expected_shape is None else _check_image_shape(expected_shape)
    try:
        image = Image.open(path)
    except UnidentifiedImageError as error:
        raise ValueError(f"{path} is not an image file Pillow can read.") from error
    except Image.DecompressionBombError as error:
        raise ValueError(f"{path} is refused: {error}") from error
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        raise ValueError(f"{path} is a damaged image file: Pillow cannot read its header ({error}).") from error
    with image:
        if image.mode not in IMAGE_MODES:
            raise ValueError(
                f"{path} has image mode {image.mode!r}; expected one of {', '.join(IMAGE_MODES)} (RGBA drops the "
                f"alpha channel, L repeats the grey value). Convert it to RGB first."
            )
        width, height = image.size
        if expected is not None and any(e is not None and e != s for e, s in zip(expected[:2], (height, width))):
            shown = "×".join("?" if e is None else str(e) for e in expected[:2])
            raise ValueError(
                f"{path} is {height}×{width} (height×width), but the model expects {shown}; images are not resized."
            )
        try:
            # Pillow decodes lazily: a truncated or corrupt file fails here, with any of a dozen exception types
            # depending on the format's decoder (OSError, SyntaxError, zlib.error, struct.error, ...).
            image.load()
            if image.mode != "RGB":
                logger.debug("Converting %s from mode %s to RGB.", path, image.mode)
                image = image.convert("RGB")
            pixels = np.asarray(image, dtype=np.float32)
        except Exception as error:
            raise ValueError(
                f"{path} is a damaged or truncated image file: Pillow cannot decode it ({type(error).__name__}: "
                f"{error})."
            ) from error
    if pixels.shape != (height, width, 3):
        raise ValueError(f"{path} decodes to an array of shape {pixels.shape}, not ({height}, {width}, 3).")
    return pixels[np.newaxis]


def _check_image_shape(expected_shape: object) -> tuple[int | None, int | None, int]:
    """
    :param expected_shape: ``(height, width, 3)``, the height and width positive integers or ``None`` (any size).
    :return: The shape, as ints (and ``None``).
    :raises TypeError: If it is not a sequence of integers and ``None``.
    :raises ValueError: If it is not of the form ``(height, width, 3)``.
    """
    if not isinstance(expected_shape, (tuple, list, np.ndarray)):
        raise TypeError(f"expected_shape must be a tuple (height, width, 3), got {type(expected_shape).__name__}.")
    shape = tuple(s.item() if isinstance(s, np.generic) else s for s in expected_shape)
    for s in shape:
        if s is not None and (isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer))):
            raise TypeError(f"expected_shape must hold integers (or None for any size), got {shape!r}.")
    if len(shape) != 3 or shape[2] not in (3, None) or any(s is not None and s <= 0 for s in shape[:2]):
        raise ValueError(f"expected_shape must be (height, width, 3) with positive sizes, got {shape!r}.")
    return (
        None if shape[0] is None else int(shape[0]),
        None if shape[1] is None else int(shape[1]),
        3,
    )


def load_npz(path: str) -> dict[str, np.ndarray]:
    """
    Read an ``.npz`` data file with the arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` (the layout of
    Keras's ``mnist.npz``). Pickled objects are refused.

    :param path: The ``.npz`` file.
    :return: The four arrays, by name (other arrays in the file are left out).
    :raises FileNotFoundError: If ``path`` does not exist.
    :raises IsADirectoryError: If ``path`` is a directory.
    :raises ValueError: If the file is not an npz file, lacks one of the keys, or its x and y lengths differ.
    """
    path = _check_path(path, "npz file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ValueError(f"{path} is not a readable .npz file: {error}") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array, not an .npz archive with keys {', '.join(NPZ_KEYS)}.")
    with archive:
        missing = [key for key in NPZ_KEYS if key not in archive.files]
        if missing:
            raise ValueError(
                f"{path} lacks {', '.join(missing)}; expected the keys {', '.join(NPZ_KEYS)}, found "
                f"{', '.join(archive.files) or 'none'}."
            )
        try:
            arrays = {key: archive[key] for key in NPZ_KEYS}
        except ValueError as error:
            raise ValueError(f"{path} holds pickled objects, which are refused: {error}") from error
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise ValueError(
                f"{path}: x_{split} has shape {x.shape} and y_{split} has shape {y.shape}; they must hold the same "
                f"number of samples."
            )
    return arrays


# ---------------------------------------------------------------------------------------------------------------------
# Lab-format files from a folder of images (art-prune make-h5).
# ---------------------------------------------------------------------------------------------------------------------

#: File name extensions :func:`list_images` picks when no pattern is given.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: How a label is written in a file name: ``..._label=43.png``.
LABEL_IN_NAME = re.compile(r"label=(\d+)")


def list_images(image_dir: str, pattern: str | None = None) -> list[str]:
    """
    :param image_dir: A directory of images.
    :param pattern: A shell pattern matched against the file names (``"cl_*"``, ``"*.png"``); by default every
                    file whose extension is one of :data:`IMAGE_EXTENSIONS`.
    :return: The matching regular files, full paths, sorted by name.
    :raises TypeError: If ``image_dir`` or ``pattern`` is not a string.
    :raises FileNotFoundError: If ``image_dir`` does not exist.
    :raises NotADirectoryError: If ``image_dir`` is not a directory.
    :raises ValueError: If nothing matches.
    """
    if not isinstance(image_dir, (str, os.PathLike)):
        raise TypeError(f"image_dir must be a str or os.PathLike, got {type(image_dir).__name__}.")
    if pattern is not None and not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str or None, got {type(pattern).__name__}.")
    image_dir = os.fspath(image_dir)
    if not os.path.exists(image_dir):
        raise FileNotFoundError(f"Image directory {image_dir} does not exist.")
    if not os.path.isdir(image_dir):
        raise NotADirectoryError(f"{image_dir} is not a directory; expected a directory of images.")
    names = sorted(
        name
        for name in os.listdir(image_dir)
        if os.path.isfile(os.path.join(image_dir, name))
        and (
            fnmatch.fnmatchcase(name, pattern)
            if pattern is not None
            else os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        )
    )
    if not names:
        what = f"matching {pattern!r}" if pattern is not None else f"with an extension in {', '.join(IMAGE_EXTENSIONS)}"
        raise ValueError(f"{image_dir} holds no image file {what}.")
    return [os.path.join(image_dir, name) for name in names]


def label_from_name(path: str) -> int:
    """
    :param path: An image file whose name holds its label as ``label=N`` (e.g. ``cl_0_label=43.png``).
    :return: ``N``.
    :raises ValueError: If the name holds no ``label=N``, or holds more than one.
    """
    found = LABEL_IN_NAME.findall(os.path.basename(path))
    if len(found) != 1:
        state = "no" if not found else "more than one"
        raise ValueError(
            f"{os.path.basename(path)} has {state} 'label=N' in its name; name the files like 'face_label=43.png' "
            f"or give the labels in a CSV file (--labels, rows 'filename,label')."
        )
    return check_label(found[0], os.path.basename(path))


def read_labels_csv(path: str) -> dict[str, int]:
    """
    :param path: A CSV file of rows ``filename,label`` (file names without directory; a first row
                 ``filename,label`` is read as a header).
    :return: Label by file name.
    :raises FileNotFoundError: If ``path`` does not exist.
    :raises ValueError: If a row is not ``filename,label`` with a non-negative integer label, or a name repeats.
    """
    import csv

    path = _check_path(path, "labels CSV file")
    if os.path.getsize(path) > MAX_LABELS_CSV_BYTES:
        raise ValueError(f"{path} is over {MAX_LABELS_CSV_BYTES // 2**20} MiB; refused as a labels CSV file.")
    labels: dict[str, int] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # a BOM, as spreadsheets write, is skipped
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row or all(not cell.strip() for cell in row):
                    continue
                if number == 1 and [cell.strip().lower() for cell in row] == ["filename", "label"]:
                    continue
                if len(row) != 2 or not row[1].strip().isdigit() or not row[0].strip():
                    raise ValueError(
                        f"{path}, line {number}: expected 'filename,label' with a non-negative integer label, got "
                        f"{','.join(row)[:80]!r}."
                    )
                name = os.path.basename(row[0].strip())
                if name in labels:
                    raise ValueError(f"{path}, line {number}: {name} is given a label twice.")
                labels[name] = check_label(row[1].strip(), f"{path}, line {number}")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not a UTF-8 text file: {error}") from error
    except csv.Error as error:
        raise ValueError(f"{path} is not a readable CSV file: {error}") from error
    if not labels:
        raise ValueError(f"{path} holds no 'filename,label' rows.")
    return labels


def _checked_sizes(paths: Sequence[str]) -> tuple[int, int]:
    """
    :return: ``(height, width)`` of the images, read from their headers.
    :raises ValueError: If an image has more than :data:`MAX_IMAGE_PIXELS` pixels, the images differ in size, or all
            of them would take more than :data:`MAX_IMAGES_BYTES` as float32.
    """
    first = None
    for path in paths:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
            raise ValueError(f"{path} is not an image file Pillow can read ({' '.join(str(error).split())[:200]}).") from None
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(
                f"{path} is {height}×{width} pixels, more than the {MAX_IMAGE_PIXELS:,} accepted per image by make-h5."
            )
        if first is None:
            first = (height, width)
        elif (height, width) != first:
            raise ValueError(
                f"{path} is {height}×{width} (height×width) but {paths[0]} is {first[0]}×{first[1]}; the images of "
                "one file must all be of one size."
            )
    assert first is not None
    total = len(paths) * first[0] * first[1] * 3 * 4
    if total > MAX_IMAGES_BYTES:
        raise ValueError(
            f"{len(paths)} images of {first[0]}×{first[1]} would take {total / 2**30:.1f} GiB as float32, more than the "
            f"{MAX_IMAGES_BYTES / 2**30:g} GiB make-h5 accepts; split them into several files."
        )
    return first


def images_to_lab_h5(
    image_dir: str, out_path: str, labels_csv: str | None = None, pattern: str | None = None
) -> tuple[int, tuple[int, int, int]]:
    """
    Turn a folder of images into a lab-format HDF5 file (``data`` ``(N, 3, H, W)``, ``label`` ``(N,)``), written
    atomically with :func:`write_lab_h5`. Images are read with :func:`load_image` (RGB, 0..255, not resized, not
    scaled), so that a PNG of the lab's data gives back exactly its pixel values.

    :param image_dir: The directory of images.
    :param out_path: The HDF5 file to write (replaced if it exists).
    :param labels_csv: A CSV file of ``filename,label`` rows; by default each label is read from ``label=N`` in the
                       image's file name.
    :param pattern: A shell pattern selecting the images by file name (e.g. ``"cl_*"``); by default every image file.
    :return: ``(n_images, (height, width, 3))``.
    :raises FileNotFoundError: If the directory, an image or the CSV file does not exist.
    :raises ValueError: If nothing matches, a label is missing, or the images are not all of one size.
    """
    paths = list_images(image_dir, pattern)
    if labels_csv is None:
        labels = [label_from_name(p) for p in paths]
    else:
        table = read_labels_csv(labels_csv)
        unlabelled = [os.path.basename(p) for p in paths if os.path.basename(p) not in table]
        if unlabelled:
            raise ValueError(
                f"{labels_csv} gives no label for {len(unlabelled)} of the {len(paths)} images, e.g. {unlabelled[0]}."
            )
        labels = [table[os.path.basename(p)] for p in paths]
    height, width = _checked_sizes(paths)  # headers only: nothing is decoded before the sizes are known to fit
    x = np.empty((len(paths), height, width, 3), dtype=np.float32)
    for index, path in enumerate(paths):  # one image decoded at a time
        x[index] = load_image(path, expected_shape=(height, width, 3))[0]
    write_lab_h5(out_path, x, np.asarray(labels, dtype=np.int64))
    return len(x), tuple(int(s) for s in x.shape[1:])  # type: ignore[return-value]
