"""Loaders: the lab's HDF5 format (batched), images, npz files."""

from __future__ import annotations

import ast
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from art_pruning_defense.lab.data import iter_lab_h5, lab_h5_info, load_image, load_lab_h5, load_npz, write_lab_h5

#: ../shared beside the repository (real data); the tests that need it skip without it.
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def images() -> tuple[np.ndarray, np.ndarray]:
    """23 channels-last images whose three channels differ (R = 10 + i, G = 100 + i, B = 200 + i + row)."""
    n = 23
    x = np.empty((n, 55, 47, 3), dtype=np.float32)
    rows = np.arange(55, dtype=np.float32)[:, None]
    for i in range(n):
        x[i, :, :, 0] = 10 + i
        x[i, :, :, 1] = 100 + i
        x[i, :, :, 2] = 200 + i + rows * 0.5
    return x, np.arange(n) % 7


def _write_raw(path: Path, **datasets: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)


# ---------------------------------------------------------------------------------------------------------------------
# The lab's HDF5 format.
# ---------------------------------------------------------------------------------------------------------------------


def test_lab_h5_round_trip_in_batches(tmp_path, images):
    x, y = images
    path = tmp_path / "valid.h5"
    write_lab_h5(str(path), x, y)
    with h5py.File(path, "r") as f:  # the lab's layout on disk: channels first
        assert f["data"].shape == (23, 3, 55, 47)
        assert f["label"].shape == (23,)
        np.testing.assert_array_equal(f["data"][4, 0], np.full((55, 47), 14.0))  # red plane of image 4
        np.testing.assert_array_equal(f["data"][4, 2, :, 0], 204 + np.arange(55) * 0.5)  # blue varies down the rows
    batches = list(iter_lab_h5(str(path), batch_size=10))
    assert [len(b[0]) for b in batches] == [10, 10, 3]
    got_x = np.concatenate([b[0] for b in batches])
    got_y = np.concatenate([b[1] for b in batches])
    assert got_x.dtype == np.float32 and got_x.shape == x.shape and got_y.dtype == np.int64
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    assert lab_h5_info(str(path)) == (23, (55, 47, 3))
    all_x, all_y = load_lab_h5(str(path))
    np.testing.assert_array_equal(all_x, x)
    np.testing.assert_array_equal(all_y, y)


def test_lab_h5_written_by_the_lab_reads_channels_last(tmp_path):
    # As the lab stores it: float (N, 3, H, W) data and float labels.
    data = np.random.default_rng(0).uniform(0, 255, (5, 3, 55, 47))
    _write_raw(tmp_path / "bd_valid.h5", data=data, label=np.array([0.0, 3.0, 3.0, 1282.0, 7.0]))
    x, y = load_lab_h5(str(tmp_path / "bd_valid.h5"))
    np.testing.assert_allclose(x, data.transpose(0, 2, 3, 1).astype(np.float32))
    assert x.flags["C_CONTIGUOUS"]
    assert y.tolist() == [0, 3, 3, 1282, 7]


def test_write_is_atomic_and_leaves_nothing_behind_on_error(tmp_path, images):
    x, y = images
    path = tmp_path / "out.h5"
    write_lab_h5(str(path), x, y)
    with pytest.raises(ValueError, match="23 samples but labels has 22"):
        write_lab_h5(str(path), x, y[:-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]
    assert lab_h5_info(str(path))[0] == 23


@pytest.mark.parametrize(
    "datasets, match",
    [
        ({"data": np.zeros((2, 3, 55, 47))}, "no dataset 'label'"),
        ({"label": np.zeros(2)}, "no dataset 'data'"),
        ({"data": np.zeros((2, 55, 47)), "label": np.zeros(2)}, r"shape \(2, 55, 47\).*\(N, 3, H, W\)"),
        ({"data": np.zeros((2, 55, 47, 3)), "label": np.zeros(2)}, r"shape \(2, 55, 47, 3\).*channels"),
        ({"data": np.zeros((2, 3, 55, 47)), "label": np.zeros(3)}, "2 samples but 'label' has 3 labels"),
        ({"data": np.zeros((0, 3, 55, 47)), "label": np.zeros(0)}, "holds no samples"),
        ({"data": np.zeros((2, 3, 55, 47)), "label": np.zeros((2, 2))}, r"'label' has shape \(2, 2\)"),
    ],
)
def test_lab_h5_bad_layouts(tmp_path, datasets, match):
    path = tmp_path / "bad.h5"
    _write_raw(path, **datasets)
    for read in (lab_h5_info, load_lab_h5, iter_lab_h5):  # iter_lab_h5 checks when called, not at the first batch
        with pytest.raises(ValueError, match=match):
            read(str(path))


def test_lab_h5_non_integer_labels(tmp_path):
    _write_raw(tmp_path / "bad.h5", data=np.zeros((2, 3, 55, 47)), label=np.array([1.0, 2.5]))
    with pytest.raises(ValueError, match="non-integer"):
        load_lab_h5(str(tmp_path / "bad.h5"))


def test_lab_h5_missing_or_not_hdf5(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        iter_lab_h5(str(tmp_path / "absent.h5"))
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        load_lab_h5(str(tmp_path / "text.h5"))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        iter_lab_h5(str(tmp_path / "text.h5"), batch_size=0)


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.zeros((2, 3, 55, 47)), np.zeros(2), r"\(N, H, W, 3\), got shape \(2, 3, 55, 47\)"),
        (np.zeros((2, 55, 47, 3)), np.zeros((2, 1)), r"labels must be .* shape \(N,\)"),
        (np.zeros((0, 55, 47, 3)), np.zeros(0), "empty"),
        (np.zeros((2, 55, 47, 3)), np.array([0.5, 1.0]), "non-integer"),
    ],
)
def test_write_lab_h5_bad_arrays(tmp_path, x, y, match):
    with pytest.raises(ValueError, match=match):
        write_lab_h5(str(tmp_path / "out.h5"), x, y)
    assert not (tmp_path / "out.h5").exists()


def test_write_lab_h5_bad_types(tmp_path):
    with pytest.raises(TypeError, match="x must be a numpy array, got list"):
        write_lab_h5(str(tmp_path / "out.h5"), [[1]], np.zeros(1))


# ---------------------------------------------------------------------------------------------------------------------
# Images.
# ---------------------------------------------------------------------------------------------------------------------


def _rgb_pixels() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (55, 47, 3), dtype=np.uint8)


def test_png_reads_exactly_as_the_lab_data(tmp_path):
    pixels = _rgb_pixels()
    Image.fromarray(pixels, mode="RGB").save(tmp_path / "face.png")
    x = load_image(str(tmp_path / "face.png"))
    assert x.shape == (1, 55, 47, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], pixels.astype(np.float32))
    # The same image through the lab's h5 layout gives the same array.
    write_lab_h5(str(tmp_path / "face.h5"), pixels[None].astype(np.float32), np.array([0]))
    np.testing.assert_array_equal(load_lab_h5(str(tmp_path / "face.h5"))[0], x)


def test_rgba_drops_alpha_and_grey_repeats(tmp_path):
    pixels = _rgb_pixels()
    rgba = np.concatenate([pixels, np.full((55, 47, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_image(str(tmp_path / "rgba.png"))[0], pixels)
    grey = pixels[:, :, 0]
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    np.testing.assert_array_equal(load_image(str(tmp_path / "grey.png"))[0], np.stack([grey] * 3, axis=2))


def test_image_errors(tmp_path):
    Image.fromarray(np.zeros((47, 55, 3), np.uint8)).save(tmp_path / "turned.png")
    with pytest.raises(ValueError, match="is 47×55 .* expects 55×47"):
        load_image(str(tmp_path / "turned.png"))
    assert load_image(str(tmp_path / "turned.png"), expected_shape=None).shape == (1, 47, 55, 3)
    Image.fromarray(np.zeros((55, 47, 3), np.uint8)).convert("P").save(tmp_path / "palette.png")
    with pytest.raises(ValueError, match="mode 'P'"):
        load_image(str(tmp_path / "palette.png"))
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="not an image"):
        load_image(str(tmp_path / "text.png"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image(str(tmp_path / "absent.png"))


def test_real_face_pngs():
    faces = sorted((SHARED / "data" / "ytface").glob("*.png"))
    if not faces:
        pytest.skip(f"../shared not found: no faces in {SHARED / 'data' / 'ytface'}.")
    x = np.concatenate([load_image(str(p)) for p in faces])
    assert x.shape == (15, 55, 47, 3) and x.min() >= 0 and x.max() <= 255
    assert x.max() > 1  # not scaled
    # RGB order: Pillow's own reading of each file, channel by channel.
    with Image.open(faces[0]) as image:
        np.testing.assert_array_equal(x[0, :, :, 0], np.asarray(image.getchannel("R"), np.float32))
        np.testing.assert_array_equal(x[0, :, :, 2], np.asarray(image.getchannel("B"), np.float32))


# ---------------------------------------------------------------------------------------------------------------------
# npz.
# ---------------------------------------------------------------------------------------------------------------------


def test_npz_round_trip_and_errors(tmp_path):
    arrays = {
        "x_train": np.zeros((4, 8, 8), np.uint8),
        "y_train": np.arange(4),
        "x_test": np.ones((2, 8, 8), np.uint8),
        "y_test": np.arange(2),
    }
    np.savez(tmp_path / "ok.npz", **arrays, extra=np.zeros(1))
    loaded = load_npz(str(tmp_path / "ok.npz"))
    assert sorted(loaded) == sorted(arrays)
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value)
    np.savez(tmp_path / "missing.npz", **{k: v for k, v in arrays.items() if k != "y_test"})
    with pytest.raises(ValueError, match="lacks y_test"):
        load_npz(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "mismatch.npz", **{**arrays, "y_train": np.arange(3)})
    with pytest.raises(ValueError, match=r"x_train has shape \(4, 8, 8\) and y_train has shape \(3,\)"):
        load_npz(str(tmp_path / "mismatch.npz"))
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        load_npz(str(tmp_path / "single.npy"))
    (tmp_path / "text.npz").write_text("nope")
    with pytest.raises(ValueError, match="not a readable .npz file"):
        load_npz(str(tmp_path / "text.npz"))


def test_real_mnist_npz():
    path = SHARED / "data" / "mnist.npz"
    if not path.exists():
        pytest.skip(f"../shared not found: {path} is missing.")
    data = load_npz(str(path))
    assert data["x_train"].shape == (60000, 28, 28) and data["y_test"].shape == (10000,)


def test_data_module_imports_no_framework():
    import art_pruning_defense.lab.data

    source = Path(art_pruning_defense.lab.data.__file__)
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    allowed = {"__future__", "csv", "fnmatch", "logging", "os", "re", "typing"}  # the standard library
    allowed |= {"h5py", "numpy", "PIL", "art_pruning_defense"}
    assert imported <= allowed, imported - allowed
