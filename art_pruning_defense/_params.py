"""
FinePruning's parameters, declared once: name, default, check and documentation. The class's signature, docstring,
``params`` list and checks, the detector's shared parameters, the command line's defaults and choices and the
benchmark's settings are all read from :data:`FINE_PRUNING_PARAMS`, so that a new parameter is one entry here and its
documentation cannot drift from the code. Numpy only, so that ``art-prune`` reads it without TensorFlow.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from art_pruning_defense._defaults import RECOMMENDED_CALIBRATION_FRACTION, RECOMMENDED_FINE_TUNE_EPOCHS, STRATEGY_NAMES
from art_pruning_defense._holdout import check_calibration_fraction
from art_pruning_defense._validation import check_drop, check_drops, check_positive_int

#: How fine-tuning treats BatchNormalization layers.
BATCHNORM_MODES = ("train", "frozen")
#: Fine-tuning optimizers.
OPTIMIZERS = ("sgd", "adam")
#: Fine-tuning objectives: the seeds' plain fine-tuning, or feature-shift tuning (FST, Min et al., NeurIPS 2023).
FINE_TUNE_MODES = ("plain", "feature-shift")


@dataclass(frozen=True)
class Param:
    """
    One parameter of :class:`~art_pruning_defense.FinePruning`.

    :param name: Its name (keyword argument and attribute).
    :param default: Its default value.
    :param check: ``check(value, name) → value``: the value checked and normalised; raises ``ValueError`` or
           ``TypeError`` with a message naming the parameter, what was expected and what was given.
    :param doc: Its documentation (reST), as the class's docstring shows it.
    :param annotation: Its type, as the signature shows it.
    :param refits: Whether changing it changes what ``fit`` computes (so that ``set_params`` forgets the fit).
    :param structural: Whether changing it changes the layers to prune.
    """

    name: str
    default: Any
    check: Callable[[Any, str], Any]
    doc: str
    annotation: str = "Any"
    refits: bool = True
    structural: bool = False


def _bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}.")
    return value


def _int_at_least(low: int) -> Callable[[object, str], int]:
    def check(value: object, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int >= {low}, got {type(value).__name__}.")
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}.")
        return int(value)

    return check


def _number_in(low: float, high: float, open_low: bool = False, open_high: bool = False) -> Callable:
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"

    def check(value: object, name: str) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number in {interval}, got {type(value).__name__}.")
        number = float(value)
        above = number > low if open_low else number >= low
        below = number < high if open_high else number <= high
        if not (above and below):
            raise ValueError(f"{name} must be in {interval}, got {value}.")
        return number

    return check


def _one_of(choices: tuple[str, ...]) -> Callable[[object, str], str]:
    def check(value: object, name: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}.")
        return value

    return check


def _optional_name(value: object, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a string or None, got {type(value).__name__}.")
    return value


def _names(value: object, name: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a list of layer names, got {type(value).__name__}.")
    names = list(value)
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"{name} must be a list of layer names (strings).")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{name} must be distinct and not empty, got {names}.")
    return [str(n) for n in names]


def _optional_fraction(value: object, name: str) -> float | None:
    return None if value is None else check_calibration_fraction(value, name)


def _seed(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if not 0 <= int(value) < 2**32:
        raise ValueError(f"{name} must be in [0, 2**32), got {value}.")
    return int(value)


#: FinePruning's parameters, in the order of its signature (after ``classifier``).
FINE_PRUNING_PARAMS: tuple[Param, ...] = (
    Param(
        "layer_name",
        None,
        _optional_name,
        "The layer of a one-layer strategy (``activation``): any layer with a channels-last 4-D output that every "
        "path to the output passes through (a Conv2D, or an ``Add``/``Activation``/``Concatenate`` of a residual or "
        "dense network); ``\"nested/layer\"`` for a layer inside a nested model (a ``keras.applications`` "
        "backbone). ``None`` (the default) picks the last such feature map: a ResNet's last stage output, a plain "
        "CNN's last conv block; ``prune_point`` shows the choice.",
        "str | None",
        structural=True,
    ),
    Param(
        "accuracy_drops",
        (2.0, 4.0, 10.0),
        lambda value, name: check_drops(value),
        "The accuracy drops X (percentage points, each in (0, 100]) at which B' is taken.",
        "Sequence[float]",
    ),
    Param("batch_size", 256, check_positive_int, "Samples per forward pass.", "int", refits=False),
    Param(
        "max_cache_bytes",
        512 * 2**20,
        check_positive_int,
        "Bound on the memory of the activation cache. Activations of the pruned layer are computed once and reused "
        "at every step when they fit; otherwise the data is swept in chunks of this size and the part of the "
        "network before the layer runs twice. (The sweep's per-sample sums of the layers that read the pruned layer "
        "are kept only where they fit beside the cache in this bound.) With ``strategy=\"attack_aware\"``, a layer "
        "whose activations on the clean and the poisoned data exceed it keeps the (preprocessed) inputs instead and "
        "runs the part of the network before the layer again for each evaluation.",
        "int",
        refits=False,
    ),
    Param(
        "fine_tune_epochs",
        0,
        _int_at_least(0),
        "Fine-pruning: epochs of retraining on the clean data after pruning; 0 (the default) for pruning only. "
        f"{RECOMMENDED_FINE_TUNE_EPOCHS} is the recommended setting (the detector's and the benchmark's default).",
        "int",
    ),
    Param(
        "fine_tune_learning_rate",
        0.02,
        _number_in(0.0, 1.0, open_low=True, open_high=True),
        "The initial learning rate of fine-tuning, in (0, 1).",
        "float",
    ),
    Param("fine_tune_batch_size", 32, check_positive_int, "Batch size for fine-tuning.", "int"),
    Param(
        "fine_tune_optimizer",
        "sgd",
        _one_of(OPTIMIZERS),
        "``\"sgd\"`` (momentum 0.9, Nesterov, cosine decay of the learning rate to 0 over the epochs) or "
        "``\"adam\"`` (constant learning rate). Plain fine-tuning only.",
        "str",
    ),
    Param(
        "fine_tune_batchnorm",
        "train",
        _one_of(BATCHNORM_MODES),
        "``\"train\"``: BatchNormalization layers learn and update their statistics on the clean data while "
        "fine-tuning; ``\"frozen\"``: they keep B's (inference mode). Plain fine-tuning only.",
        "str",
    ),
    Param(
        "fine_tune_augment",
        False,
        _bool,
        "Fine-tune on randomly shifted copies of the clean data (up to an eighth of the image size; never mirrored), "
        "drawn afresh each epoch, in plain and feature-shift fine-tuning.",
        "bool",
    ),
    Param(
        "fine_tune_mode",
        "plain",
        _one_of(FINE_TUNE_MODES),
        "``\"plain\"``: retrain the whole pruned network on the clean data (cross-entropy), as the seeds' "
        "fine-pruning does; ``\"feature-shift\"``: FST (Min et al., NeurIPS 2023), the classifier head "
        "re-initialised and pushed away from B's by a penalty on its inner product with B's head, its norm held to "
        "B's, every layer trained (SGD with momentum 0.9, cosine decay; ``fine_tune_learning_rate`` and "
        "``fine_tune_batch_size`` apply, the BatchNormalization layers train).",
        "str",
    ),
    Param(
        "prune_until",
        20.0,
        lambda value, name: check_drop(value, name),
        "Fine-pruning with the ``activation`` and ``attack_aware`` strategies: prune to the first step whose clean "
        "accuracy has fallen this many points (in (0, 100]) before fine-tuning, deeper than the X of plain pruning "
        "since fine-tuning recovers the accuracy; at least one channel is always kept. The ``lipschitz`` and "
        "``adversarial`` strategies prune at their own threshold instead.",
        "float",
    ),
    Param(
        "seed",
        0,
        _seed,
        "Seed of the fine-tuning, of the adversarial strategy's optimisation and of the calibration split.",
        "int",
    ),
    Param(
        "calibration_fraction",
        None,
        _optional_fraction,
        "Share of the clean data given to ``fit`` held out, drawn at random (seeded by ``seed``), in (0, 1): the "
        "sweep and the fine-tuning see only the rest, and ``defence(..., false_positive_rate=α)`` calibrates the "
        "GoodNet's threshold on the held-out part, which B' never saw, so that the rate holds on fresh clean "
        "inputs (a conformal threshold). ``None`` (the default): nothing is held out. "
        f"{RECOMMENDED_CALIBRATION_FRACTION:g} is the recommended setting (the detector's, ``art-prune repair "
        "--fpr``'s and the benchmark's); needs the data as arrays, not a stream.",
        "float | None",
    ),
    Param(
        "strategy",
        "activation",
        _one_of(STRATEGY_NAMES),
        "How channels are chosen. ``\"activation\"``: rank one layer's channels by mean clean activation and prune "
        "in that order (the seeds' method; needs clean data). ``\"attack_aware\"``: over ``layer_names``, keep a "
        "channel pruned only if that lowers the attack success rate on poisoned validation data within the "
        "accuracy budget X (needs ``poisoned_x`` and ``poisoned_target`` in ``fit``). ``\"lipschitz\"``: CLP "
        "(Zheng et al., ECCV 2022), every conv channel scored by an upper bound of its Lipschitz constant from the "
        "weights alone; data-free (``fit()`` without data prunes at ``lipschitz_threshold``). "
        "``\"adversarial\"``: ANP (Wu and Wang, NeurIPS 2021), every conv channel's mask learnt on the clean data "
        "against adversarial neuron perturbations.",
        "str",
        structural=True,
    ),
    Param(
        "layer_names",
        None,
        _names,
        "The layers of the ``attack_aware`` strategy (default: the last three conv blocks that every path to the "
        "output passes through; a layer on a side branch or inside a residual block is never chosen).",
        "Sequence[str] | None",
        structural=True,
    ),
    Param(
        "lipschitz_threshold",
        3.0,
        _number_in(0.0, 100.0, open_low=True),
        "The ``lipschitz`` strategy's own cut: a channel whose bound exceeds its layer's mean by more than this many "
        "standard deviations is pruned (the paper's u = 3).",
        "float",
    ),
    Param(
        "adversarial_eps",
        0.4,
        _number_in(0.0, 1.0),
        "The ``adversarial`` strategy's perturbation budget ε on each channel's normalisation scale and shift (the "
        "paper's 0.4).",
        "float",
    ),
    Param(
        "adversarial_alpha",
        0.2,
        _number_in(0.0, 1.0),
        "The ``adversarial`` strategy's weight of the natural loss; ``1 - α`` weighs the perturbed loss (the paper's "
        "0.2).",
        "float",
    ),
    Param(
        "adversarial_iterations",
        180,
        _int_at_least(1),
        "The ``adversarial`` strategy's mask updates, one batch of 128 clean images each (the paper runs 2,000; 180 "
        "keeps a ResNet-20 within about 5 minutes on two CPU cores).",
        "int",
    ),
    Param(
        "adversarial_threshold",
        0.2,
        _number_in(0.0, 1.0),
        "The ``adversarial`` strategy's own cut: channels whose learnt mask value ends below it are pruned (the "
        "paper's 0.2).",
        "float",
    ),
    Param("verbose", True, _bool, "Show progress bars.", "bool", refits=False),
)

#: The parameters by name.
PARAMS: dict[str, Param] = {param.name: param for param in FINE_PRUNING_PARAMS}
#: The default of every parameter.
DEFAULTS: dict[str, Any] = {param.name: param.default for param in FINE_PRUNING_PARAMS}


def check_params(values: dict[str, Any]) -> dict[str, Any]:
    """
    :param values: A value for every parameter.
    :return: A new dict of the values, each checked and normalised; ``values`` is not modified.
    :raises ValueError: If a value is invalid.
    :raises TypeError: If a value has the wrong type.
    """
    return {param.name: param.check(values[param.name], param.name) for param in FINE_PRUNING_PARAMS}


def docstring_fields(names: Iterable[str] | None = None) -> str:
    """
    :param names: The parameters to document (default: all).
    :return: Their ``:param name: doc`` fields, one per line, for a docstring.
    """
    chosen = FINE_PRUNING_PARAMS if names is None else [PARAMS[name] for name in names]
    return "\n".join(f":param {param.name}: {param.doc}" for param in chosen)
