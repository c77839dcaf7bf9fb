"""The Keras adapter: layer discovery, head/tail split, masked copies."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from art_pruning_defense.keras import as_functional, find_prune_point, masked_copy, split, weights_equal
from conftest import conv_block_model


def _cut_output(model: keras.Model, layer: str, x: np.ndarray) -> np.ndarray:
    return keras.Model(model.inputs[0], model.get_layer(layer).output)(x).numpy()


def test_default_layer_is_the_last_conv_and_the_cut_follows_bn_activation_pool():
    point = find_prune_point(conv_block_model(batch_norm=True))
    assert (point.layer_name, point.cut_name, point.n_channels) == ("conv_2", "pool", 6)


def test_cut_without_pooling_stops_after_the_activation():
    point = find_prune_point(conv_block_model(pool=False))
    assert point.cut_name == "act"


def test_named_layer_and_named_pooling_layer():
    model = conv_block_model()
    assert find_prune_point(model, "conv_1").cut_name == "conv_1"  # conv_1 feeds a conv: nothing to fold in
    assert find_prune_point(model, "pool").cut_name == "pool"


def test_head_and_tail_compose_to_the_model():
    model = conv_block_model(batch_norm=True)
    head, tail = split(model, "pool")
    x = np.random.default_rng(0).random((7, 10, 10, 3), dtype=np.float32)
    np.testing.assert_allclose(tail(head(x)).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"activation": "relu"},
        {"activation": "sigmoid"},  # sigmoid(0) = 0.5: zeroing the conv would not zero its output
        {"activation": "relu", "batch_norm": True},
        {"activation": "tanh", "batch_norm": True, "use_bias": False},
        {"activation": "sigmoid", "pool": False},
    ],
)
def test_pruned_channels_output_exactly_zero(kwargs):
    model = conv_block_model(**kwargs)
    before = [w.copy() for w in model.get_weights()]
    point = find_prune_point(model)
    mask = np.ones(point.n_channels, dtype=np.float32)
    pruned = [0, 2, 5]
    mask[pruned] = 0
    copy = masked_copy(model, point, mask)
    x = np.random.default_rng(1).random((16, 10, 10, 3), dtype=np.float32) * 4 - 2
    masked = _cut_output(copy, point.mask_name, x)
    original = _cut_output(model, point.cut_name, x)
    assert np.all(masked[..., pruned] == 0.0)
    assert np.any(original[..., pruned] != 0.0)  # the test means something: these channels were active
    kept = [c for c in range(point.n_channels) if c not in pruned]
    np.testing.assert_array_equal(masked[..., kept], original[..., kept])
    # B is untouched, and the copy has its own weights.
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert copy.get_layer("conv_2").kernel is not model.get_layer("conv_2").kernel


def test_mask_of_ones_reproduces_the_model():
    model = conv_block_model(batch_norm=True)
    point = find_prune_point(model)
    copy = masked_copy(model, point, np.ones(point.n_channels))
    x = np.random.default_rng(2).random((9, 10, 10, 3), dtype=np.float32)
    np.testing.assert_array_equal(copy.predict(x, verbose=0), model.predict(x, verbose=0))
    assert copy.get_layer(point.mask_name).trainable_weights == []


def test_sequential_models_are_supported():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="c"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="softmax", name="d"),
        ]
    )
    functional = as_functional(model)
    point = find_prune_point(functional)
    assert (point.layer_name, point.cut_name) == ("c", "gap")
    copy = masked_copy(functional, point, np.array([0, 1, 1, 0]))
    assert weights_equal(copy, model)


def test_skip_connection_across_the_cut_is_refused():
    inputs = keras.Input((8, 8, 2))
    a = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inputs)
    s = keras.layers.Add(name="add")([a, inputs])
    out = keras.layers.Dense(2)(keras.layers.Flatten()(s))
    model = keras.Model(inputs, out)
    point = find_prune_point(model, "conv")
    with pytest.raises(ValueError, match="bypasses it"):
        split(model, point.cut_name)
    # By default the Add, which every path passes through, is pruned instead.
    assert find_prune_point(model) == find_prune_point(model, "add")
    assert find_prune_point(model).layer_name == "add"


def _random_maps(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (np.maximum(rng.normal(size=shape), 0) * (rng.random(shape) < 0.6)).astype(np.float32)


def test_tail_leaves_pruned_channels_out_of_the_layers_that_read_the_cut():
    from art_pruning_defense.keras import build_deepid
    from art_pruning_defense.keras._tail import CachedTail, channel_linear_front

    model = build_deepid(n_classes=7)
    _, tail = split(model, "pool_3")
    fronts, _ = channel_linear_front(tail)
    assert sorted(f.layer.name for f in fronts) == ["conv_4", "fc_1"]
    assert [f.flatten for f in sorted(fronts, key=lambda f: f.layer.name)] == [False, True]

    maps = _random_maps((300, 5, 4, 60))
    cached = CachedTail(tail, maps, batch_size=128)
    assert cached._compiled.compact is not None
    rng = np.random.default_rng(1)
    for kept in (59, 30, 5, 1):
        mask = np.zeros(60, dtype=np.float32)
        mask[rng.choice(60, kept, replace=False)] = 1
        rows = np.sort(rng.choice(300, 200, replace=False))
        expected = np.argmax(tail.predict(maps[rows] * mask, verbose=0), axis=1)
        np.testing.assert_array_equal(cached(rows, mask), expected)
    # All pruned, or nothing pruned: the masked evaluation.
    for mask in (np.zeros(60, np.float32), np.ones(60, np.float32)):
        np.testing.assert_array_equal(cached(None, mask), np.argmax(tail.predict(maps * mask, verbose=0), axis=1))


def test_tail_cached_in_pruning_order_gives_the_labels_of_the_masked_model():
    from art_pruning_defense.keras import build_deepid
    from art_pruning_defense.keras._tail import CachedTail, CompiledTail

    model = build_deepid(n_classes=7)
    _, tail = split(model, "pool_3")
    maps = _random_maps((200, 5, 4, 60), seed=3)
    order = np.random.default_rng(4).permutation(60)
    compiled = CompiledTail(tail)
    cached = CachedTail(compiled, maps[..., order], batch_size=256, channel_order=order)
    rows = np.arange(0, 200, 3)
    used = []
    for name in ("suffix", "compact", "forward_reordered"):
        function = getattr(compiled, name)
        setattr(compiled, name, lambda *a, _f=function, _n=name: used.append(_n) or _f(*a))
    # The sweep's masks (the first channels of the order pruned), any other mask, nothing and everything pruned.
    masks = [np.ones(60, np.float32), np.zeros(60, np.float32)]
    for pruned in (1, 17, 59):
        masks.append(np.ones(60, np.float32))
        masks[-1][order[:pruned]] = 0
    masks.append((np.random.default_rng(5).random(60) < 0.5).astype(np.float32))
    for mask in masks:
        expected = np.argmax(tail.predict(maps[rows] * mask, verbose=0), axis=1)
        np.testing.assert_array_equal(cached(rows, mask), expected)
    assert used == ["forward_reordered"] * 2 + ["suffix"] * 3 + ["compact"]
    with pytest.raises(ValueError, match="permutation of the 60 channels"):
        CachedTail(compiled, maps, 64, channel_order=np.arange(59))


def _masked_counts(tail, maps, refs, order):
    """Hits and changes per sweep step, each step's labels from the masked tail itself."""
    masks = np.ones((len(order) + 1, maps.shape[-1]), np.float32)
    for step, channel in enumerate(order, start=1):
        masks[step:, channel] = 0
    # Every step's masked maps in one predict call rather than one call per step (each with its own overhead).
    stacked = (maps[None] * masks[:, None, None, None, :]).reshape(-1, *maps.shape[1:])
    labels = np.argmax(tail.predict(stacked, verbose=0), axis=1).reshape(len(masks), len(maps))
    return [int(np.sum(lab == refs)) for lab in labels], [int(np.sum(lab != labels[0])) for lab in labels]


def test_a_sweep_stepper_keeps_the_front_sums_while_many_channels_are_kept():
    """The stepper subtracts each pruned channel's share from the fronts' sums while at least min_kept channels are
    kept, sums the kept channels anew after that, and gives the counts of the masked tail at every step."""
    from art_pruning_defense import _sweep
    from art_pruning_defense.keras import build_deepid
    from art_pruning_defense.keras._tail import CachedTail, CompiledTail

    _, tail = split(build_deepid(n_classes=7), "pool_3")
    maps = _random_maps((300, 5, 4, 60), seed=6)
    refs = np.random.default_rng(7).integers(0, 7, 300)
    order = np.argsort(maps.mean(axis=(0, 1, 2)), kind="stable")
    compiled = CompiledTail(tail)
    state = compiled.stateful
    assert 1 < state.min_kept < 60 and state.values == 4 * 3 * 80 + 160
    shares, masked = [], []
    prune = state.prune
    state.prune = lambda maps, rows, channel: shares.append(channel) or prune(maps, rows, channel)

    class Counting(CachedTail):
        def __call__(self, rows, mask):
            masked.append(int(np.count_nonzero(mask)))
            return super().__call__(rows, mask)

    cached = Counting(compiled, np.ascontiguousarray(maps[..., order]), 64, channel_order=order)
    counts = _sweep.sweep_chunk(_sweep.active_channels(maps), refs, order, cached, stepper=cached.stepper())
    hits, changed = _masked_counts(tail, maps, refs, order)
    assert counts.hits.tolist() == hits
    assert counts.changed.tolist() == changed
    steps = [c for i, c in enumerate(shares) if i == 0 or c != shares[i - 1]]  # calls of 64 rows: one per step
    assert steps == list(order[: 60 - state.min_kept])  # every step after which min_kept channels or more are kept
    assert masked and max(masked) < state.min_kept  # then the kept channels, anew (the blank input among them)
    assert state.owner is None and state._sums.numpy().shape == (0, state.values)  # released once no longer used
    # No sums where they would not fit in the memory given, or where no step would save their cost.
    active = _sweep.active_channels(maps)
    assert cached.stepper(order, active)._state is state
    assert cached.stepper(order, active, spare_bytes=300 * 4 * state.values - 1)._state is None
    idle = np.zeros_like(active)
    idle[:, order[-state.min_kept :]] = True  # active only on the channels pruned once few are kept
    assert cached.stepper(order, idle)._state is None


@pytest.mark.parametrize("response_values", [2**20, 0])  # a channel's share by its response matrix, or convolved
def test_front_sums_of_strided_convolutions_and_per_pixel_dense_fronts_follow_the_masked_tail(
    monkeypatch, response_values
):
    import art_pruning_defense.keras._tail as adapter
    from art_pruning_defense import _sweep
    from art_pruning_defense.keras._tail import CachedTail, CompiledTail

    monkeypatch.setattr(adapter, "STATE_MACS_PER_VALUE", 1)  # keep the sums through nearly every step
    monkeypatch.setattr(adapter, "RESPONSE_VALUES", response_values)
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 5, 12))
    strided = keras.layers.Conv2D(7, 3, strides=2, padding="same", activation="relu")(inputs)
    per_pixel = keras.layers.Dense(4, activation="relu")(inputs)
    x = keras.layers.Concatenate()([keras.layers.Flatten()(strided), keras.layers.GlobalAveragePooling2D()(per_pixel)])
    tail = keras.Model(inputs, keras.layers.Dense(6)(x))
    maps = _random_maps((120, 6, 5, 12), seed=8)
    refs = np.random.default_rng(9).integers(0, 6, 120)
    order = np.random.default_rng(10).permutation(12)
    compiled = CompiledTail(tail)
    state = compiled.stateful
    assert state.min_kept == 2
    shares = []
    prune = state.prune
    state.prune = lambda maps, rows, channel: shares.append(channel) or prune(maps, rows, channel)
    cached = CachedTail(compiled, np.ascontiguousarray(maps[..., order]), 32, channel_order=order)
    counts = _sweep.sweep_chunk(_sweep.active_channels(maps), refs, order, cached, stepper=cached.stepper())
    hits, changed = _masked_counts(tail, maps, refs, order)
    assert counts.hits.tolist() == hits
    assert counts.changed.tolist() == changed
    assert set(shares) == set(order[:10].tolist())  # the sums kept through every step that leaves 2 channels


def test_a_stepper_called_out_of_the_sweeps_order_gives_the_masked_labels():
    """Another stepper claiming the sums, or a mask that brings a channel back, ends the kept sums: the labels are
    still those of the masked tail."""
    from art_pruning_defense.keras import build_deepid
    from art_pruning_defense.keras._tail import CachedTail, CompiledTail

    _, tail = split(build_deepid(n_classes=5), "pool_3")
    maps = _random_maps((80, 5, 4, 60), seed=11)
    compiled = CompiledTail(tail)
    first, second = (CachedTail(compiled, maps, 32).stepper() for _ in range(2))

    def expected(mask):
        return np.argmax(tail.predict(maps * mask, verbose=0), axis=1)

    ones = np.ones(60, np.float32)
    np.testing.assert_array_equal(first.begin(), expected(ones))
    mask = ones.copy()
    mask[7] = 0
    rows = np.arange(80)
    np.testing.assert_array_equal(first.prune(rows, 7, mask), expected(mask))
    assert compiled.stateful.owner is first
    np.testing.assert_array_equal(second.begin(), expected(ones))  # takes the sums over
    mask[9] = 0
    np.testing.assert_array_equal(first.prune(rows, 9, mask), expected(mask))  # no longer its sums: anew
    only_9 = ones.copy()
    only_9[9] = 0
    np.testing.assert_array_equal(second.prune(rows, 9, only_9), expected(only_9))  # its own sums
    back = ones.copy()
    back[3] = 0  # channel 9 back, 3 pruned: not a sweep's next mask
    np.testing.assert_array_equal(second.prune(rows, 3, back), expected(back))
    assert compiled.stateful.owner is None


def test_dense_on_the_feature_map_is_a_linear_front_and_other_readers_are_not():
    from art_pruning_defense.keras._tail import CachedTail, channel_linear_front

    inputs = keras.Input((4, 4, 6))
    x = keras.layers.Dense(5, activation="relu", name="per_pixel")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense_tail = keras.Model(inputs, keras.layers.Dense(3, name="out")(x))
    fronts, _ = channel_linear_front(dense_tail)
    assert [f.layer.name for f in fronts] == ["per_pixel"]
    maps = _random_maps((50, 4, 4, 6), seed=2)
    mask = np.array([1, 0, 1, 0, 0, 1], dtype=np.float32)
    np.testing.assert_array_equal(
        CachedTail(dense_tail, maps, 16)(None, mask), np.argmax(dense_tail.predict(maps * mask, verbose=0), axis=1)
    )

    inputs = keras.Input((4, 4, 6))
    x = keras.layers.Add()([inputs, keras.layers.Conv2D(6, 1, padding="same")(inputs)])
    x = keras.layers.Flatten()(x)
    residual_tail = keras.Model(inputs, keras.layers.Dense(3)(x))
    assert channel_linear_front(residual_tail) is None
    inputs = keras.Input((4, 4, 6))
    x = keras.layers.BatchNormalization()(inputs)
    bn_tail = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    assert channel_linear_front(bn_tail) is None


def test_a_cached_tail_over_a_shared_cache_gives_the_labels_of_one_over_a_copy():
    """The sweep's cache is handed to TensorFlow without a copy (DLPack): same labels, same memory."""
    import tensorflow as tf

    from art_pruning_defense._aligned import aligned_empty
    from art_pruning_defense.keras import CachedTail, shared_tensor

    _, tail = split(conv_block_model(), "pool")
    maps = np.maximum(np.random.default_rng(3).normal(size=(40, *tail.inputs[0].shape[1:])), 0).astype(np.float32)
    aligned = aligned_empty(maps.shape, np.float32)
    aligned[...] = maps
    shared = shared_tensor(aligned)
    aligned[0, 0, 0, 0] += 1.0  # the same memory: the tensor sees the change
    assert float(shared[0, 0, 0, 0]) == maps[0, 0, 0, 0] + 1.0
    aligned[0, 0, 0, 0] = maps[0, 0, 0, 0]
    mask = np.ones(tail.inputs[0].shape[-1], np.float32)
    mask[0] = 0
    order = np.random.default_rng(4).permutation(len(mask))
    for channel_order, cache in ((None, aligned), (order, np.ascontiguousarray(maps[..., order]))):
        expected = CachedTail(tail, cache.copy(), 16, channel_order=channel_order)(None, mask)
        held = shared_tensor(cache)
        assert np.array_equal(CachedTail(tail, held, 16, channel_order=channel_order)(None, mask), expected)
        assert np.array_equal(CachedTail(tail, held, 16, channel_order=channel_order)([5, 2], mask), expected[[5, 2]])
    with pytest.raises(TypeError, match="float32 tensor or an array, got a float64 tensor"):
        CachedTail(tail, tf.constant(maps, dtype=tf.float64), 16)


def test_widest_row_bytes_reads_every_layer_and_nested_models():
    from art_pruning_defense.keras import widest_row_bytes

    inputs = keras.Input((8, 8, 3))
    wide = keras.layers.Conv2D(16, 3, padding="same")(inputs)  # 8 * 8 * 16 floats: the widest
    narrow = keras.layers.Dense(5)(keras.layers.Flatten()(keras.layers.MaxPooling2D(4)(wide)))
    inner = keras.Model(inputs, narrow)
    assert widest_row_bytes(inner) == 8 * 8 * 16 * 4
    outer_inputs = keras.Input((8, 8, 3))
    outer = keras.Model(outer_inputs, keras.layers.Dense(2)(inner(outer_inputs)))
    assert widest_row_bytes(outer) == 8 * 8 * 16 * 4  # found inside the nested model
    free = keras.Input((None, None, 3))
    assert widest_row_bytes(keras.Model(free, keras.layers.Conv2D(4, 3)(free))) == 0  # not known in advance


def test_calls_are_split_where_their_widest_tensor_would_exceed_the_bound(monkeypatch):
    """With the C library's allocator, fewer rows per call where a call's activations would be wide; the outputs are
    those of whole batches."""
    import art_pruning_defense.keras._predict as adapter
    from art_pruning_defense.keras import BatchPredictor, CachedTail, rows_per_call, widest_row_bytes

    monkeypatch.setattr(adapter, "tensors_from_c_library", lambda: False)
    assert rows_per_call(adapter.CALL_BYTES // 100, 300) == 300  # oneDNN's pool: as asked
    monkeypatch.setattr(adapter, "tensors_from_c_library", lambda: True)
    assert rows_per_call(0, 300) == 300  # unknown width: as asked
    assert rows_per_call(adapter.CALL_BYTES // 100, 300) == 100
    assert rows_per_call(adapter.CALL_BYTES * 2, 300) == 1
    model = conv_block_model(batch_norm=True)
    x = np.random.default_rng(5).random((50, 10, 10, 3), dtype=np.float32)
    expected = BatchPredictor(model)(x, batch_size=64)
    _, tail = split(model, "pool")
    maps = np.maximum(np.random.default_rng(6).normal(size=(30, *tail.inputs[0].shape[1:])), 0).astype(np.float32)
    mask = np.ones(tail.inputs[0].shape[-1], np.float32)
    unbounded = CachedTail(tail, maps, 64)
    monkeypatch.setattr(adapter, "CALL_BYTES", 7 * widest_row_bytes(model))
    predictor = BatchPredictor(model)
    sizes = []
    forward = predictor._forward
    predictor._forward = lambda batch: sizes.append(int(batch.shape[0])) or forward(batch)
    np.testing.assert_array_equal(predictor(x, batch_size=64), expected)
    assert sizes == [7] * 7 + [1]
    monkeypatch.setattr(adapter, "CALL_BYTES", 4 * widest_row_bytes(tail))
    bounded = CachedTail(tail, maps, 64)
    assert (unbounded.batch_size, bounded.batch_size) == (64, 4)
    np.testing.assert_array_equal(bounded(None, mask), unbounded(None, mask))


def test_the_allocator_is_read_from_the_environment(monkeypatch):
    from art_pruning_defense.keras._predict import tensors_from_c_library

    monkeypatch.setenv("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
    assert tensors_from_c_library()
    monkeypatch.setenv("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "true")
    assert tensors_from_c_library()
    from tensorflow.python.util import _pywrap_util_port

    monkeypatch.setenv("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "0")
    assert tensors_from_c_library() == (not _pywrap_util_port.IsMklEnabled())
