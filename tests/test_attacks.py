"""The benchmark's attack zoo: counts, labels, ranges, determinism, the triggered test set, bad parameters."""

from __future__ import annotations

import numpy as np
import pytest

from art_pruning_defense.benchmark.attacks import ATTACKS, make_attack

#: Attacks that need no trained proxy (fast); clean-label is tested apart, with a tiny proxy.
FAST = ("badnets", "blended", "sig", "wanet")


def _data(n: int = 400, shape: tuple[int, ...] = (16, 16, 1), classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape), dtype=np.float32) * 0.8 + 0.1
    y = np.arange(n) % classes
    return x, y


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("rate", [0.1, 0.005])  # down to 0.5 %
def test_poisoned_set_shapes_counts_and_labels(name, rate):
    x, y = _data()
    attack = make_attack(name, target=1, poison_rate=rate, seed=3)
    out = attack.poison(x, y)
    assert out.x.shape == x.shape and out.x.dtype == np.float32 and out.y.shape == y.shape
    assert 0.0 <= out.x.min() and out.x.max() <= 1.0
    pool = np.count_nonzero(y == 1) if attack.clean_label else len(y)
    n = max(1, round(rate * pool))
    assert np.count_nonzero(out.is_poison) == n
    changed = np.any(out.x != x, axis=(1, 2, 3))
    assert np.all(changed[out.is_poison])  # every poisoned sample carries the trigger
    assert np.array_equal(changed, out.is_modified)  # and nothing else changed but the declared ones
    if attack.clean_label:
        assert np.all(y[out.is_poison] == 1) and np.array_equal(out.y, y)  # target-class images, labels kept
        assert not np.any(out.is_modified & ~out.is_poison)
    else:
        assert np.all(y[out.is_poison] != 1) and np.all(out.y[out.is_poison] == 1)  # relabelled to the target
        assert np.array_equal(out.y[~out.is_poison], y[~out.is_poison])
    assert not np.shares_memory(out.x, x) and np.array_equal(x, _data()[0])  # the clean set is left alone


@pytest.mark.parametrize("name", FAST)
def test_trigger_is_deterministic_and_the_test_set_excludes_the_target(name):
    x, y = _data(shape=(12, 14, 3))
    first = make_attack(name, target=2, poison_rate=0.1, seed=0)
    again = make_attack(name, target=2, poison_rate=0.1, seed=0)
    other_seed = make_attack(name, target=2, poison_rate=0.1, seed=1)
    triggered = first.triggered_test_set(x, y)
    assert len(triggered) == np.count_nonzero(y != 2) and triggered.dtype == np.float32
    assert np.array_equal(triggered, again.triggered_test_set(x, y))
    # The trigger is fixed (not drawn per cell): another seed changes which samples are poisoned, not the trigger.
    assert np.array_equal(triggered, other_seed.triggered_test_set(x, y))
    assert not np.array_equal(first.poison(x, y).is_poison, other_seed.poison(x, y).is_poison)
    assert np.array_equal(first.poison(x, y).x, again.poison(x, y).x)
    assert np.any(triggered != x[y != 2])


def test_blended_and_sig_follow_their_formulas():
    x, y = _data(n=8, shape=(8, 10, 1))
    blended = make_attack("blended", poison_rate=0.2, alpha=0.2)
    t = blended.pattern((8, 10, 1))
    assert np.allclose(blended.apply_trigger(x), 0.8 * x + 0.2 * t, atol=1e-6)
    assert t.min() >= 0 and t.max() <= 1 and t.std() > 0.2  # noise, not a constant
    sig = make_attack("sig", poison_rate=0.2)
    v = 20 / 255 * np.sin(2 * np.pi * np.arange(10) * 6 / 10)
    assert np.allclose(sig.apply_trigger(x), np.clip(x + v[None, None, :, None], 0, 1), atol=1e-6)
    assert np.allclose(sig.apply_trigger(np.ones_like(x)).max(), 1.0)  # clipped


def test_badnets_triggers():
    x = np.zeros((3, 10, 10, 1), dtype=np.float32)
    patch = make_attack("badnets", trigger="patch", patch_size=2, patch_position=[1, 3], patch_value=0.5)
    out = patch.apply_trigger(x)
    assert np.count_nonzero(out) == 3 * 4 and np.all(out[:, 1:3, 3:5] == 0.5)
    corner = make_attack("badnets", trigger="patch", patch_size=3).apply_trigger(x)
    assert np.all(corner[:, 6:9, 6:9] == 1.0) and np.count_nonzero(corner) == 3 * 9
    pixel = make_attack("badnets", trigger="pixel").apply_trigger(x)
    assert np.count_nonzero(pixel[0]) == 1  # ART's add_single_bd
    pattern = make_attack("badnets", trigger="pattern").apply_trigger(x)
    assert 1 < np.count_nonzero(pattern[0]) < 20  # ART's add_pattern_bd, a small corner pattern
    with pytest.raises(ValueError, match=r"a patch of 4×4 pixels at \[8, 8\] does not fit images of 10×10"):
        make_attack("badnets", trigger="patch", patch_size=4, patch_position=[8, 8]).apply_trigger(x)


def test_wanet_field_is_smooth_small_and_noise_mode_keeps_labels():
    x, y = _data(n=200, shape=(16, 16, 1))
    wanet = make_attack("wanet", target=0, poison_rate=0.1, seed=0)
    field = wanet.field(16, 16)
    assert field.shape == (2, 16, 16)
    assert np.max(np.abs(np.diff(field, axis=2))) < 1.0  # smooth: neighbours move alike
    # The identity warp (strength 0) returns the images unchanged.
    still = make_attack("wanet", strength=1e-9)
    assert np.allclose(still.apply_trigger(x[:4]), x[:4], atol=1e-5)
    out = wanet.poison(x, y)
    cross = out.is_modified & ~out.is_poison
    assert np.count_nonzero(cross) == 2 * np.count_nonzero(out.is_poison)  # cross ratio 2
    assert np.array_equal(out.y[cross], y[cross])  # noise-mode samples keep their true labels
    none = make_attack("wanet", poison_rate=0.1, cross_ratio=0).poison(x, y)
    assert np.array_equal(none.is_modified, none.is_poison)


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "match"),
    [
        ("magic", {}, ValueError, "Unknown attack 'magic'; expected one of: badnets, blended, sig, wanet, clean-label"),
        ("badnets", {"poison_rate": 0.0}, ValueError, r"poison_rate must be in \(0, 1\), got 0"),
        ("badnets", {"poison_rate": 1.0}, ValueError, r"poison_rate must be in \(0, 1\), got 1"),
        ("blended", {"poison_rate": float("nan")}, ValueError, "poison_rate must be in"),
        ("badnets", {"poison_rate": "0.1"}, TypeError, "poison_rate must be a number, got str"),
        ("badnets", {"target": -1}, ValueError, "target must be an integer >= 0, got -1"),
        ("badnets", {"trigger": "square"}, ValueError, "trigger must be one of pattern, pixel, patch"),
        ("badnets", {"patch_position": "middle"}, ValueError, "patch_position must be one of"),
        ("badnets", {"patch_size": 0}, ValueError, r"patch_size must be an integer in \[1, 256\], got 0"),
        ("blended", {"alpha": 1.5}, ValueError, r"alpha must be in \(0, 1\), got 1.5"),
        ("blended", {"beta": 1}, ValueError, "Unknown option.* beta for attack 'blended'"),
        ("sig", {"frequency": -1}, ValueError, "frequency must be in"),
        ("wanet", {"k": 1}, ValueError, r"k must be an integer in \[2, 256\], got 1"),
        ("wanet", {"strength": 0}, ValueError, "strength must be in"),
        ("clean-label", {"max_iter": 0}, ValueError, r"max_iter must be an integer in \[1, 10000\], got 0"),
    ],
)
def test_bad_parameters(name, kwargs, error, match):
    with pytest.raises(error, match=match):
        make_attack(name, **kwargs)


def test_bad_inputs():
    attack = make_attack("badnets", target=0, poison_rate=0.5)
    x, y = _data(n=10)
    with pytest.raises(ValueError, match="expected float32 images"):
        attack.poison(x.astype(np.float64), y)
    with pytest.raises(ValueError, match=r"expected images in \[0, 1\]"):
        attack.poison(x * 255, y)
    with pytest.raises(ValueError, match=r"expected images \(n, height, width, 1 or 3\)"):
        attack.poison(x[..., 0], y)
    with pytest.raises(ValueError, match="must hold 10 integer labels"):
        attack.poison(x, y[:5])
    with pytest.raises(ValueError, match=r"badnets: 9 samples to poison \(poison_rate 0.9\) but only 7 non-target"):
        make_attack("badnets", target=0, poison_rate=0.9).poison(x, y)  # 3 of the 10 are of class 0
    assert set(ATTACKS) == {"badnets", "blended", "sig", "wanet", "clean-label", "pruning-aware"}


def test_clean_label_uses_arts_pgd_and_keeps_labels():
    """ART's PoisoningAttackCleanLabelBackdoor on a tiny proxy: target-class images perturbed, triggered, unlabelled."""
    x, y = _data(n=120, shape=(12, 12, 1), classes=3)
    attack = make_attack("clean-label", target=1, poison_rate=0.25, seed=0, max_iter=2, proxy_epochs=1)
    out = attack.poison(x, y)
    assert np.count_nonzero(out.is_poison) == round(0.25 * 40)
    assert np.all(y[out.is_poison] == 1) and np.array_equal(out.y, y)
    trigger_only = attack.apply_trigger(x[out.is_poison])
    assert not np.allclose(out.x[out.is_poison], trigger_only)  # PGD moved them beyond the trigger
    assert np.max(np.abs(out.x[out.is_poison] - trigger_only)) <= 0.3 + 1e-5  # within PGD's eps
    assert 0.0 <= out.x.min() and out.x.max() <= 1.0
    assert np.array_equal(out.x[~out.is_poison], x[~out.is_poison])


@pytest.mark.parametrize("name", ["badnets", "wanet"])  # wanet also modifies further samples (its noise mode)
def test_poisoning_in_place_gives_the_same_set(name):
    """``copy=False`` (what the benchmark uses: no second copy of the training set) poisons x itself, identically."""
    x, y = _data(shape=(12, 14, 3))
    copied = make_attack(name, target=1, poison_rate=0.1, seed=5).poison(x, y)
    inplace_x = x.copy()
    inplace = make_attack(name, target=1, poison_rate=0.1, seed=5).poison(inplace_x, y, copy=False)
    assert inplace.x is inplace_x and np.array_equal(inplace.x, copied.x)
    assert np.array_equal(inplace.y, copied.y) and np.array_equal(inplace.is_modified, copied.is_modified)
    assert np.array_equal(x, _data(shape=(12, 14, 3))[0])  # the copying call left its input alone
