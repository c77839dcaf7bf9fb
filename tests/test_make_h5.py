"""art-prune make-h5: a directory of images to a lab-format HDF5 file, without TensorFlow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from art_pruning_defense.lab.cli import main
from art_pruning_defense.lab.data import images_to_lab_h5, load_image, load_lab_h5, read_labels_csv
from conftest import SHARED

REPOSITORY = str(Path(__file__).resolve().parents[1])
FACES = SHARED / "data" / "ytface"


def _images(directory: Path, names: list[str], shape: tuple[int, int] = (6, 5), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (len(names), *shape, 3)).astype(np.uint8)
    directory.mkdir(exist_ok=True)
    for name, image in zip(names, pixels):
        Image.fromarray(image).save(directory / name)
    return pixels


def test_labels_from_the_file_names_round_trip(tmp_path, capsys):
    pixels = _images(tmp_path / "img", ["b_label=7.png", "a_label=3.png", "c_label=0.bmp"])
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    assert main(["make-h5", str(tmp_path / "img"), str(tmp_path / "out.h5")]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"art-prune: wrote {tmp_path / 'out.h5'} (3 images of 6×5×3, labels from the file")
    assert captured.err.rstrip().endswith(" s") and len(captured.err.splitlines()) == 1
    x, y = load_lab_h5(str(tmp_path / "out.h5"))
    # sorted by name: a (3), b (7), c (0); pixels exactly as read for art-prune eval
    np.testing.assert_array_equal(y, [3, 7, 0])
    np.testing.assert_array_equal(x, pixels[[1, 0, 2]].astype(np.float32))
    np.testing.assert_array_equal(x[0], load_image(str(tmp_path / "img" / "a_label=3.png"), None)[0])
    assert sorted(os.listdir(tmp_path)) == ["img", "out.h5"]  # no temporary file or lock left


def test_labels_from_a_csv_and_a_glob(tmp_path):
    _images(tmp_path / "img", ["face1.png", "face2.png", "other.png"])
    csv = tmp_path / "labels.csv"
    csv.write_text("filename,label\nface1.png,12\nface2.png,5\n")
    assert read_labels_csv(str(csv)) == {"face1.png": 12, "face2.png": 5}
    argv = ["make-h5", str(tmp_path / "img"), str(tmp_path / "o.h5"), "--labels", str(csv), "--glob", "face*"]
    assert main(argv) == 0
    np.testing.assert_array_equal(load_lab_h5(str(tmp_path / "o.h5"))[1], [12, 5])
    # Without the glob, other.png has no label: refused, and nothing is written.
    with pytest.raises(ValueError, match="no label for 1 of the 3 images, e.g. other.png"):
        images_to_lab_h5(str(tmp_path / "img"), str(tmp_path / "p.h5"), labels_csv=str(csv))
    assert not (tmp_path / "p.h5").exists()


@pytest.mark.parametrize(
    "setup, argv, message",
    [
        ("plain", ["IMG", "OUT/x.h5"], "has no 'label=N' in its name"),
        ("mixed", ["IMG", "OUT/x.h5"], r"is 7×5 \(height×width\) but .* is 6×5"),
        ("labelled", ["IMG", "OUT/x.h5", "--glob", "zzz*"], "holds no image file matching 'zzz\\*'"),
        ("labelled", ["IMG", "OUT/x.h5", "--labels", "OUT/bad.csv"], "line 2: expected 'filename,label'"),
        ("labelled", ["IMG", "OUT/exists.h5"], "exists; pass --force to replace it"),
        ("labelled", ["IMG", "OUT/x.png"], "must end in .h5 or .hdf5"),
        ("labelled", ["IMG", "OUT/missing/x.h5"], "parent directory .* does not exist"),
        ("labelled", ["OUT/nodir", "OUT/x.h5"], "nodir does not exist"),
        ("labelled", ["IMG", "OUT"], "must end in .h5"),
        ("labelled", ["IMG", "OUT/x.h5", "--labels", "OUT/none.csv"], "none.csv does not exist"),
    ],
)
def test_mistakes_are_one_line_and_write_nothing(setup, argv, message, tmp_path, capsys):
    img = tmp_path / "img"
    if setup == "plain":
        _images(img, ["a.png"])
    elif setup == "mixed":
        _images(img, ["a_label=1.png"])
        _images(img, ["b_label=2.png"], shape=(7, 5))
    else:
        _images(img, ["a_label=1.png", "b_label=2.png"])
    (tmp_path / "bad.csv").write_text("filename,label\na_label=1.png,one\n")
    (tmp_path / "exists.h5").write_bytes(b"keep me")
    before = sorted(os.listdir(tmp_path))
    args = [a.replace("IMG", str(img)).replace("OUT", str(tmp_path)) for a in argv]
    assert main(["make-h5", *args]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("art-prune: error: "), err
    assert re.search(message, err[0]), err[0]
    assert sorted(os.listdir(tmp_path)) == before and (tmp_path / "exists.h5").read_bytes() == b"keep me"


def test_force_replaces_the_file(tmp_path, capsys):
    _images(tmp_path / "img", ["a_label=1.png"])
    (tmp_path / "x.h5").write_bytes(b"old")
    assert main(["make-h5", str(tmp_path / "img"), str(tmp_path / "x.h5"), "--force"]) == 0
    assert load_lab_h5(str(tmp_path / "x.h5"))[1].tolist() == [1]


def test_make_h5_is_fast_and_needs_no_tensorflow(tmp_path):
    _images(tmp_path / "img", ["a_label=1.png", "b_label=2.png"])
    code = (
        "import sys; from art_pruning_defense.lab.cli import main; rc = main(sys.argv[1:]); "
        "print(rc, sorted(m for m in ('tensorflow', 'keras', 'art') if m in sys.modules))"
    )
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code, "make-h5", str(tmp_path / "img"), str(tmp_path / "x.h5")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": REPOSITORY},
        timeout=120,
    )
    seconds = time.monotonic() - start
    assert done.stdout.strip() == "0 []", done.stdout + done.stderr
    assert seconds < 10, f"make-h5 of two images took {seconds:.1f} s"


def test_the_shared_faces(tmp_path, capsys):
    if not FACES.is_dir():
        pytest.skip(f"../shared not found: {FACES} holds the 15 real faces")
    assert main(["make-h5", str(FACES), str(tmp_path / "all.h5")]) == 0
    x, y = load_lab_h5(str(tmp_path / "all.h5"))
    assert x.shape == (15, 55, 47, 3) and 0 <= x.min() and x.max() <= 255
    assert sorted(y.tolist()) == sorted([0] * 10 + [43, 328, 196, 1268, 748])
    assert main(["make-h5", str(FACES), str(tmp_path / "cl.h5"), "--glob", "cl_*"]) == 0
    assert load_lab_h5(str(tmp_path / "cl.h5"))[1].tolist() == [43, 328, 196, 1268, 748]


# ---------------------------------------------------------------------------------------------------------------------
# Labels exact, bounded images, a BOM in the CSV.
# ---------------------------------------------------------------------------------------------------------------------


def test_large_labels_are_stored_exactly(tmp_path):
    import h5py

    _images(tmp_path / "img", ["a_label=16777217.png", "b_label=2147483647.png"])
    images_to_lab_h5(str(tmp_path / "img"), str(tmp_path / "out.h5"))
    with h5py.File(tmp_path / "out.h5") as handle:
        assert handle["label"].dtype.kind == "i"
    _, y = load_lab_h5(str(tmp_path / "out.h5"))
    np.testing.assert_array_equal(y, [16777217, 2147483647])


@pytest.mark.parametrize("label", ["2147483648", "9" * 400])
def test_labels_out_of_the_int32_range_are_refused_in_one_line(tmp_path, capsys, label):
    _images(tmp_path / "img", ["a.png"])
    (tmp_path / "labels.csv").write_text(f"a.png,{label}\n")
    assert main(["make-h5", str(tmp_path / "img"), str(tmp_path / "out.h5"), "--labels", str(tmp_path / "labels.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is out of range; expected an integer in [0, 2147483647]" in err and len(err) < 300
    assert not (tmp_path / "out.h5").exists()


def test_a_bom_in_the_labels_csv_is_accepted(tmp_path):
    _images(tmp_path / "img", ["a.png", "b.png"])
    (tmp_path / "labels.csv").write_bytes("\ufefffilename,label\r\na.png,1\r\nb.png,2\r\n".encode("utf-8"))
    assert read_labels_csv(str(tmp_path / "labels.csv")) == {"a.png": 1, "b.png": 2}
    (tmp_path / "labels.csv").write_bytes("\ufeffa.png,1\nb.png,2\n".encode("utf-8"))
    assert read_labels_csv(str(tmp_path / "labels.csv")) == {"a.png": 1, "b.png": 2}


def test_images_are_bounded_before_any_is_decoded(tmp_path, capsys, monkeypatch):
    from art_pruning_defense.lab import data

    _images(tmp_path / "img", ["a_label=0.png", "b_label=1.png"], shape=(40, 50))
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 1999)
    with pytest.raises(ValueError, match="is 40×50 pixels, more than the 1,999 accepted per image"):
        images_to_lab_h5(str(tmp_path / "img"), str(tmp_path / "out.h5"))
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 2000)
    monkeypatch.setattr(data, "MAX_IMAGES_BYTES", 2 * 40 * 50 * 12 - 1)
    decoded = []
    monkeypatch.setattr(data, "load_image", lambda *a, **k: decoded.append(a) or 1 / 0)
    with pytest.raises(ValueError, match="2 images of 40×50 would take .* GiB as float32, more than"):
        images_to_lab_h5(str(tmp_path / "img"), str(tmp_path / "out.h5"))
    assert decoded == [] and not (tmp_path / "out.h5").exists()
