"""A saved GoodNet's manifest: SHA-256 of its files, written last, verified by load and by every CLI command."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from art_pruning_defense import GoodNetClassifier, goodnet_format
from art_pruning_defense._integrity import MANIFEST_FILE
from art_pruning_defense.keras import find_prune_point, masked_copy
from art_pruning_defense.lab.cli import main


@pytest.fixture
def saved(tiny_model, tmp_path):
    point = find_prune_point(tiny_model)
    mask = np.ones(point.n_channels, dtype=np.float32)
    mask[[0, 3]] = 0
    path = tmp_path / "g"
    GoodNetClassifier(tiny_model, masked_copy(tiny_model, point, mask)).save(str(path))
    return path


def _cli_refuses(path, tmp_path, capsys, match: str) -> None:
    test = tmp_path / "test.h5"
    test.write_bytes(b"not read: the GoodNet is refused first")
    for argv in (["evaluate", "--goodnet", str(path), "--test", str(test)], ["eval", str(path), str(test)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("art-prune: error: Saved GoodNet refused") and match in err


def test_save_writes_a_manifest_of_every_file(saved):
    manifest = json.loads((saved / MANIFEST_FILE).read_text())
    assert sorted(manifest["files"]) == sorted(goodnet_format.FILES)
    assert all(len(entry["sha256"]) == 64 for entry in manifest["files"].values())
    GoodNetClassifier.load(str(saved))  # verified, no warning


def test_bad_model_replaced_by_a_link_to_the_pruned_model_is_refused(saved, tmp_path, capsys):
    (saved / "bad_model.keras").unlink()
    os.symlink(saved / "pruned_model.keras", saved / "bad_model.keras")
    with pytest.raises(ValueError, match="bad_model.keras is missing, a symbolic link or not a regular file"):
        GoodNetClassifier.load(str(saved))
    _cli_refuses(saved, tmp_path, capsys, "symbolic link")


@pytest.mark.parametrize("how", ["copy", "flip"])
def test_changed_model_file_is_refused(saved, tmp_path, capsys, how):
    target = saved / "bad_model.keras"
    if how == "copy":
        shutil.copyfile(saved / "pruned_model.keras", target)
    else:
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"bad_model.keras does not match its SHA-256 in MANIFEST.json") as info:
        GoodNetClassifier.load(str(saved))
    assert "\n" not in str(info.value)
    _cli_refuses(saved, tmp_path, capsys, "does not match its SHA-256")


def test_changed_metadata_is_refused(saved):
    meta = saved / "goodnet.json"
    meta.write_text(meta.read_text().replace('"abstain": false', '"abstain": true'))
    with pytest.raises(ValueError, match="goodnet.json does not match its SHA-256"):
        GoodNetClassifier.load(str(saved))


def test_directory_without_a_manifest_loads_with_a_warning(saved):
    (saved / MANIFEST_FILE).unlink()
    with pytest.warns(goodnet_format.UnverifiedGoodNetWarning, match="has no manifest"):
        GoodNetClassifier.load(str(saved))


def test_directory_without_a_manifest_is_still_refused_when_b_is_b_prime(saved):
    (saved / MANIFEST_FILE).unlink()
    (saved / "bad_model.keras").unlink()
    os.link(saved / "pruned_model.keras", saved / "bad_model.keras")  # a hard link: one file
    with pytest.raises(ValueError, match="are one file"):
        GoodNetClassifier.load(str(saved))


def test_malformed_manifest_is_refused(saved, tmp_path, capsys):
    (saved / MANIFEST_FILE).write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="is not a manifest"):
        GoodNetClassifier.load(str(saved))
    _cli_refuses(saved, tmp_path, capsys, "is not a manifest")
