"""
Channel Lipschitzness-based pruning (CLP) of Zheng et al. (ECCV 2022), "Data-free backdoor removal based on channel
Lipschitzness": the scores, the paper's rule, and the strategy ``"lipschitz"``.

| Paper link: https://arxiv.org/abs/2208.03111

A backdoor makes a few channels react strongly to a small trigger: their output changes much faster with their
input than their layer's other channels do. CLP finds them from the weights alone (no data):

1. For every output channel k of a convolution, its upper bound on the channel's Lipschitz constant (UCLC) is the
   spectral norm (largest singular value) of the kernel slice ``W[..., k]`` seen as an ``(in_channels, kh·kw)``
   matrix, times ``|γ_k / σ_k|`` where a BatchNormalization with scale ``γ`` and standard deviation ``σ`` follows.
2. Within each layer, a channel whose UCLC exceeds ``mean + u·std`` of the layer's UCLCs is an outlier (``u = 3`` by
   default, the paper's value for CIFAR-10; ``std`` is the unbiased sample standard deviation, as ``torch.std``).
3. Outliers are pruned (the paper zeroes the BN's scale and shift; here the Keras adapter masks the channel at the
   end of its conv block).

The official code divides by ``sqrt(running_var)`` without the BN's epsilon; :func:`channel_lipschitz` uses
``sqrt(var + eps)``, what the layer computes (``bn_epsilon=0`` gives the code's figures).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from art_pruning_defense.strategies._ranked import RankedStrategy
from art_pruning_defense.strategies.base import FitRun, Source

if TYPE_CHECKING:
    import keras

    from art_pruning_defense.keras import ChannelLayer

logger = logging.getLogger(__name__)

#: The paper's default threshold: channels above mean + 3 standard deviations of their layer are pruned.
CLP_U = 3.0


def channel_lipschitz(
    kernel: np.ndarray,
    bn_gamma: np.ndarray | None = None,
    bn_variance: np.ndarray | None = None,
    bn_epsilon: float = 1e-3,
) -> np.ndarray:
    """
    Upper bound on each output channel's Lipschitz constant (UCLC).

    :param kernel: A 2-D convolution's kernel, channels last: ``(kh, kw, in_channels, out_channels)`` (Keras's
           layout; a grouped conv's ``in_channels`` is per group).
    :param bn_gamma: The following BatchNormalization's scale, one per output channel; ``None`` for a BN without
           scale (``γ = 1``) or for no BN.
    :param bn_variance: The BN's moving variance, one per output channel; ``None`` where no BN follows (the kernel
           alone is scored, as the paper does without BN).
    :param bn_epsilon: The BN's epsilon (Keras's default 1e-3).
    :return: Shape ``(out_channels,)``: for channel k, ``σ_max(W[..., k] as (in, kh·kw)) · |γ_k / sqrt(var_k + eps)|``.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 4:
        raise ValueError(f"Expected a conv kernel of shape (kh, kw, in, out), got shape {kernel.shape}.")
    kh, kw, n_in, n_out = kernel.shape
    # (out, in, kh·kw): one matrix per output channel, as the paper reshapes PyTorch's (out, in, kh, kw) kernel.
    slices = np.transpose(kernel, (3, 2, 0, 1)).reshape(n_out, n_in, kh * kw)
    norms = np.linalg.norm(slices, ord=2, axis=(1, 2))
    if bn_variance is None:
        if bn_gamma is not None:
            raise ValueError("bn_gamma was given without bn_variance; give both for a BatchNormalization.")
        return norms
    variance = np.asarray(bn_variance, dtype=np.float64).reshape(-1)
    gamma = np.ones(n_out) if bn_gamma is None else np.asarray(bn_gamma, dtype=np.float64).reshape(-1)
    if variance.shape != (n_out,) or gamma.shape != (n_out,):
        raise ValueError(
            f"Expected {n_out} BatchNormalization values per parameter (one per output channel), got "
            f"{gamma.shape[0]} scales and {variance.shape[0]} variances."
        )
    if bn_epsilon < 0:
        raise ValueError(f"bn_epsilon must be >= 0, got {bn_epsilon}.")
    return norms * np.abs(gamma / np.sqrt(variance + bn_epsilon))


def lipschitz_outliers(scores: np.ndarray, u: float = CLP_U) -> np.ndarray:
    """
    The paper's pruning rule within one layer.

    :param scores: One layer's UCLCs (:func:`channel_lipschitz`).
    :param u: Threshold in standard deviations above the mean.
    :return: A boolean array, ``True`` for the channels whose score exceeds ``mean + u · std`` (``std`` unbiased,
             ``ddof=1``, as ``torch.std``; a one-channel layer has no outlier).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(scores)):
        raise ValueError("Channel scores must be finite.")
    if scores.size < 2:
        return np.zeros(scores.shape, dtype=bool)
    threshold = scores.mean() + u * scores.std(ddof=1)
    return scores > threshold


def layer_lipschitz(model: "keras.Model", channel_layer: "ChannelLayer") -> np.ndarray:
    """
    :param model: The model that ``channel_layer`` was found in.
    :param channel_layer: One of :func:`~art_pruning_defense.keras.channel_layers`'s entries.
    :return: Its channels' UCLCs (:func:`channel_lipschitz`).
    """
    from art_pruning_defense.keras import conv_bn_weights

    kernel, gamma, variance, epsilon = conv_bn_weights(model, channel_layer)
    return channel_lipschitz(kernel, gamma, variance, epsilon)


class LipschitzStrategy(RankedStrategy):
    """
    CLP: every conv channel scored by its upper Lipschitz bound, data-free. Its own cut prunes each layer's
    channels above ``mean + u·std`` (``lipschitz_threshold``); with clean data, the sweep to each X prunes in
    decreasing order of the channels' standardised scores ``(score - mean) / std`` within their layer, so that the
    own cut is a prefix of the sweep.
    """

    name = "lipschitz"
    needs_clean = False

    def scores(self, run: FitRun, clean: Source | None) -> list[np.ndarray]:
        return [layer_lipschitz(run.model, layer) for layer in self.layers]

    def order(self, scores: list[np.ndarray]) -> list[tuple[int, int]]:
        keyed = []
        for index, score in enumerate(scores):
            spread = score.std(ddof=1) if score.size > 1 else 0.0
            standard = (score - score.mean()) / spread if spread > 0 else np.zeros_like(score)
            keyed.extend((-float(z), index, channel) for channel, z in enumerate(standard))
        return [(index, channel) for _, index, channel in sorted(keyed)]

    def own_cut(self, scores: list[np.ndarray]) -> int:
        u = float(self.options.get("lipschitz_threshold", CLP_U))
        return int(sum(np.count_nonzero(lipschitz_outliers(score, u)) for score in scores))
