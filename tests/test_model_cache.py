"""The backdoored-model cache of the benchmark: keys, reuse across defences, identical figures, rebuilt entries."""

from __future__ import annotations

import os
import warnings

import pytest

from art_pruning_defense.benchmark import cache as model_cache
from art_pruning_defense.benchmark import make_grid, run_grid, store
from art_pruning_defense.lab.cli import main

#: A tiny grid on digits: two epochs, fine-pruning (whose fine-tuning starts from B's weights) included.
SETTINGS = {"epochs": 2, "defences": ["none", "pruning", "fine-pruning"], "fine_tune_epochs": 1, "seeds": [0, 1]}
#: Row keys that are measurements of the run, not figures.
TIMINGS = ("seconds", "peak_rss_mib")


def _figures(result) -> dict:
    return {
        record["key"]: [{k: v for k, v in row.items() if k not in TIMINGS} for row in record["rows"]]
        for record in result.records
    }


def _run(out, cache, **values):
    return run_grid(make_grid({**SETTINGS, **values}), str(out), "test", verbose=False, model_cache=cache)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The grid without a cache, with a cold cache, then with the warm cache (another output)."""
    base = tmp_path_factory.mktemp("cache")
    cache = base / "models"
    plain = _run(base / "plain", None)
    cold = _run(base / "cold", str(cache))
    warm = _run(base / "warm", str(cache))
    return base, cache, plain, cold, warm


def test_figures_with_the_cache_are_those_without(runs):
    _, cache, plain, cold, warm = runs
    assert plain.failed == cold.failed == warm.failed == {}
    assert [r.get("model_cache") for r in plain.records] == [None, None]
    assert [r["model_cache"]["hit"] for r in cold.records] == [False, False]
    assert [r["model_cache"]["hit"] for r in warm.records] == [True, True]
    assert len(os.listdir(cache)) == 2
    for record_plain, record_warm in zip(plain.records, warm.records):  # record by record, row by row
        assert record_plain["key"] == record_warm["key"]
        assert record_plain["data"] == record_warm["data"]
    assert _figures(plain) == _figures(cold) == _figures(warm)


def test_other_defences_reuse_the_cached_model(runs, tmp_path):
    _, cache, plain, _, _ = runs
    result = _run(tmp_path / "other", str(cache), defences=["none"], seeds=[1])
    (record,) = result.records
    assert record["model_cache"]["hit"] is True
    assert record["rows"][0]["clean_accuracy"] == plain.records[1]["rows"][0]["clean_accuracy"]


@pytest.mark.parametrize("damage", ["flip a byte of the model", "no manifest", "another entry's poisoned indices"])
def test_damaged_entry_is_rebuilt_with_a_warning(runs, tmp_path, damage):
    import shutil

    _, cache, plain, _, _ = runs
    private = tmp_path / "models"
    shutil.copytree(cache, private)
    (cell,) = make_grid({**SETTINGS, "seeds": [0]}).cells()
    key = model_cache.model_key(cell, store.input_hashes(cell))
    entry = private / key
    if damage == "flip a byte of the model":
        data = bytearray((entry / "model.keras").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (entry / "model.keras").write_bytes(bytes(data))
    elif damage == "no manifest":
        (entry / "MANIFEST.json").unlink()
    else:
        other = next(name for name in os.listdir(private) if name != key)
        shutil.copyfile(private / other / "poisoned.npy", entry / "poisoned.npy")
        from art_pruning_defense._integrity import write_manifest

        write_manifest(str(entry), model_cache.ENTRY_FILES)  # re-sealed: the poisoned indices are still checked
    with pytest.warns(model_cache.ModelCacheWarning, match=f"Model cache entry .*{key} is not used"):
        result = _run(tmp_path / "out", str(private), seeds=[0])
    (record,) = result.records
    assert record["model_cache"] == {"key": key, "hit": False}
    assert _figures(result)[record["key"]] == _figures(plain)[record["key"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", model_cache.ModelCacheWarning)
        again = _run(tmp_path / "again", str(private), seeds=[0])  # the rebuilt entry is used, silently
    assert again.records[0]["model_cache"]["hit"] is True


def test_model_key_covers_training_not_defences(tmp_path):
    def key(**values):
        (cell,) = make_grid({"epochs": 2, **values}).cells()
        return model_cache.model_key(cell, store.input_hashes(cell))

    base = key()
    assert key(defences=["none"]) == base and key(fine_tune_epochs=3) == base
    for changed in ({"seeds": [1]}, {"epochs": 3}, {"poison_rates": [0.1000001]}, {"target": 1},
                    {"attack_options": {"badnets": {}}, "trigger": "pixel"}, {"attacks": ["blended"]}):
        assert key(**changed) != base, changed


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert model_cache.default_cache_dir() == str(tmp_path / "art_pruning_defense" / "models")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")
    assert model_cache.default_cache_dir() == os.path.expanduser("~/.cache/art_pruning_defense/models")


def test_cli_cache_options_are_checked_at_once(tmp_path, capsys):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert main(["benchmark", "--model-cache", str(not_a_dir), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists and is not a directory" in err
    with pytest.raises(SystemExit, match="2"):
        main(["benchmark", "--model-cache", str(tmp_path), "--no-model-cache", "--out", str(tmp_path / "o")])
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
