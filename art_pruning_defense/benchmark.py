"""
The comparative benchmark: one BadNet, the pruning defence and ART's backdoor defences side by side.

| Paper link: https://arxiv.org/abs/1805.12185

1. Load the images (scikit-learn's digits, or an ``.npz`` file with ``x_train``, ``y_train``, ``x_test``,
   ``y_test``), split off the defender's clean validation set, and poison a share of the rest of the training set
   with ART's ``PoisoningAttackBackdoor`` (``add_pattern_bd`` or ``add_single_bd``).
2. Train the BadNet B: a built-in architecture (``small-cnn``, the CNN of ART's poisoning examples; ``resnet20``;
   ``vgg11-bn``; see :data:`art_pruning_defense.keras.ARCHITECTURES`) or the user's own ``.keras`` model,
   re-initialised, with its training recipe (SGD with cosine decay for the ResNet and VGG) and, for colour images,
   the standard augmentation (random crops with 4-pixel padding, horizontal flips).
3. Run every selected defence on the same B (each from the same seed), and measure on the test data the clean
   accuracy and the attack success rate of what it leaves; for training-set filters also the detection rates on the
   poisoned training set; for test-time filters the share of clean and triggered test inputs flagged.
4. :func:`write_benchmark` writes ``results.json``, ``results.md`` and ``results.png`` (clean accuracy against attack
   success rate, one point per defence).

The defences (a registry by name, :data:`DEFENCES`; a run can take any subset):

``none``
    "no defence": B itself.
``pruning``
    "pruning X=..." (B'(X) of :class:`~art_pruning_defense.FinePruning`, one row per accuracy drop X) and
    "GoodNet X=10". The detection rates of B'(X) are those of
    ``FinePruningDetector(..., accuracy_drop=X, fine_tune_epochs=0)``: a training sample is flagged where B and
    B'(X) disagree; they are computed from the same fitted ``FinePruning`` rather than fitting it once more.
``fine-pruning``
    "fine-pruning" (the fine-pruned B', with the detection rates of ``FinePruningDetector``'s defaults, again from
    the same fitted ``FinePruning``) and "fine-pruning GoodNet" (GoodNet over the fine-pruned B').
``activation-clustering``, ``spectral-signatures``
    ART's ``ActivationDefence`` and ``SpectralSignatureDefense`` (``expected_pp_poison`` = the real poisoning rate)
    flag training samples; the flagged samples are removed and a fresh CNN is trained on the rest, with the same seed
    and epochs as B, as a user would.
``neural-cleanse``
    ART's Neural Cleanse, one row per mitigation ("filtering", "unlearning", "pruning"), each applied to a fresh
    copy of B.
``strip``
    ART's STRIP: ``STRIP(classifier)()``, ``mitigate`` on the defender's clean validation data, then ``predict``.

For a GoodNet row, clean accuracy counts the clean inputs sent to the "poisoned" class as errors and the attack
success rate is the share of triggered inputs still answered with the target. Defences that abstain (ART's
``AbstainPredictorMixin``: an all-zero score row) are scored the same way: an abstention is an error on clean
data, not a success of the attack, and counts as flagged.

ART 1.20.1 under Keras 3, as met here (the benchmark works around the first two and reports the rest as is):

- ``KerasNeuralCleanse.reset()`` sets every variable of its Adam optimiser to zero, the learning rate included
  (Keras 3 keeps it among the optimiser's variables), so that the reverse-engineered trigger never moves from its
  random start and no class is ever flagged. :class:`_NeuralCleanse` restores the learning rate after ART's reset.
- ``KerasNeuralCleanse``'s "pruning" mitigation takes the layer at index ``len(layer_names) - 2`` of
  ``model.layers``, which is the intended dense layer only for a Sequential model (a Functional model lists its
  InputLayer first, and the index lands on ``Flatten``, which has no weights). Neural Cleanse therefore runs on a
  Sequential copy of B.
- Each call of ``mitigate`` repeats the whole reverse engineering; it runs once here and the three mitigations reuse
  its triggers (what a second, identically seeded run would find).
- ``mitigate``'s backdoor examples are the flagged class's own validation images with the reversed trigger and
  their own (target) labels: "unlearning" retrains on those, and "pruning" stops only when predictions equal the
  one-hot labels exactly, so in practice it prunes its maximum, 30 % of the layer's neurons.
- ``STRIP()`` changes the class of the classifier it was given (it is given a fresh wrapper of B here) and computes
  its entropy over the perturbed copies, per class (``axis=0``), rather than per prediction.
- ``KerasNeuralCleanse`` prints a tensor per optimisation step, and Neural Cleanse and STRIP show tqdm bars that
  cannot be turned off; the printing is swallowed, and the bars are hidden with ``verbose=False``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import numbers
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
from art.estimators.classification import KerasClassifier
from art.estimators.poison_mitigation.neural_cleanse import KerasNeuralCleanse
from art.estimators.poison_mitigation.neural_cleanse.neural_cleanse import NeuralCleanseMixin
from art.utils import to_categorical
from tqdm.auto import tqdm

from art_pruning_defense import _sweep
from art_pruning_defense._io import atomic_directory
from art_pruning_defense._validation import check_drops, check_positive_int
from art_pruning_defense.badnet import TRIGGERS, BadNetData, digits_badnet_data, make_badnet_data
from art_pruning_defense.data import load_npz
from art_pruning_defense.fine_pruning import RECOMMENDED_FINE_TUNE_EPOCHS, FinePruning
from art_pruning_defense.goodnet import GoodNetClassifier
from art_pruning_defense.keras import ARCHITECTURES, BatchPredictor, build_architecture, fit_classifier, seed_everything
from art_pruning_defense.reports import markdown_table, plot_tradeoff, write_json, write_text

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

#: ``BenchmarkConfig.data`` value of the embedded data set (scikit-learn's digits, upsampled to 16×16).
DIGITS = "digits"

#: Activation cache of the attack-aware rows (2 GiB).
ATTACK_AWARE_CACHE_BYTES = 2 * 2**30
#: The defender's clean validation split, by data source (the digits split is fixed by
#: :func:`~art_pruning_defense.badnet.digits_badnet_data`).
DEFAULT_N_VALID_NPZ = 5000
DIGITS_N_VALID = 300
#: Training epochs and batch size of the BadNet (and of the retrained networks) on digits; on ``.npz`` data they
#: come from the architecture's recipe (:data:`art_pruning_defense.keras.ARCHITECTURES`).
DEFAULT_EPOCHS_DIGITS = 30
DEFAULT_BATCH_SIZE_DIGITS = 32
#: The default architecture, and the recipe of a user's own model (``model``).
DEFAULT_ARCH = "small-cnn"
#: Padding of the random crops of the standard augmentation (4 pixels, as for CIFAR-10).
AUGMENT_PADDING = 4

#: Neural Cleanse settings. ART's defaults, 1,000 steps per class over all the data given to ``mitigate``, would take
#: hours on a CPU for MNIST. 20 steps over 500 validation images took 89 s for the ten classes of MNIST on two CPU
#: cores, and already single out the target: in a trial on an MNIST BadNet the reversed trigger of the target class
#: had an L1 norm of about 6, those of the other classes 55 to 120. Patience is ART's default (5 steps).
DEFAULT_NC_STEPS = 20
DEFAULT_NC_SAMPLES = 500
DEFAULT_NC_PATIENCE = 5
DEFAULT_NC_BATCH_SIZE = 32
DEFAULT_NC_LEARNING_RATE = 0.1
#: Inputs on which the Sequential copy given to Neural Cleanse is checked against B.
PROBE_SIZE = 16
#: Neural Cleanse's mitigations, one row each.
NC_MITIGATIONS = ("filtering", "unlearning", "pruning")
#: STRIP settings (ART's defaults).
DEFAULT_STRIP_NUM_SAMPLES = 20
DEFAULT_STRIP_FALSE_ACCEPTANCE_RATE = 0.01
#: ActivationDefence's clustering (ART's defaults, as in ART's poisoning examples).
ACTIVATION_CLUSTERING_PARAMS = {"nb_clusters": 2, "nb_dims": 10, "reduce": "PCA", "cluster_analysis": "smaller"}
#: Spectral signatures: ART's default multiplier of the expected poisoning rate.
SPECTRAL_EPS_MULTIPLIER = 1.5

#: Label given to an abstention (an all-zero score row) of an ART abstaining predictor.
ABSTAIN = -1

#: Keys of every row, in order. ``note`` and ``error`` are ``None`` unless there is something to say.
ROW_KEYS = (
    "defence",
    "clean_accuracy",
    "attack_success_rate",
    "poison_detection_tpr",
    "poison_detection_fpr",
    "poisoned_flagged",
    "clean_flagged",
    "seconds",
    "note",
    "error",
)

#: Columns of ``results.md``: (key, header).
BENCHMARK_COLUMNS = (
    ("defence", "defence"),
    ("clean_accuracy", "clean accuracy %"),
    ("attack_success_rate", "attack success %"),
    ("poison_detection_tpr", "poison detection TPR %"),
    ("poison_detection_fpr", "poison detection FPR %"),
    ("poisoned_flagged", "triggered test flagged %"),
    ("clean_flagged", "clean test flagged %"),
    ("seconds", "seconds"),
    ("notes", "notes"),
)

#: Printed under the table of ``results.md``.
LEGEND = (
    "Percentages are of the test set (clean accuracy; attack success on triggered images of the other classes; "
    "test inputs flagged or abstained on) or of the training set (poison detection TPR: poisoned samples flagged; "
    "FPR: clean samples flagged); – where a figure does not apply. Seconds: wall time of the defence alone, from the "
    "trained BadNet to its figures (work shared by the rows of one defence counted in each)."
)

#: File names written by :func:`write_benchmark`.
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RESULTS_PNG = "results.png"


# ---------------------------------------------------------------------------------------------------------------------
# The registry of defences.
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defence:
    """
    One entry of the registry: a defence, the rows it produces, and the function that measures them.

    ``run`` takes the benchmark's state and returns its rows; ``row_names`` gives the names of those rows for a
    configuration (used for the error rows when the defence fails as a whole).
    """

    name: str
    description: str
    run: Callable[["_Run"], list[dict]]
    row_names: Callable[["BenchmarkConfig"], list[str]]


#: The defences, by name, in the order a full run measures them.
DEFENCES: dict[str, Defence] = {}


def _register(
    name: str, description: str, row_names: Callable[["BenchmarkConfig"], list[str]]
) -> Callable[[Callable[["_Run"], list[dict]]], Callable[["_Run"], list[dict]]]:
    def decorator(function: Callable[["_Run"], list[dict]]) -> Callable[["_Run"], list[dict]]:
        DEFENCES[name] = Defence(name, description, function, row_names)
        return function

    return decorator


def defence_names() -> tuple[str, ...]:
    """
    :return: The names of the registered defences, in the order a full run measures them.
    """
    return tuple(DEFENCES)


# ---------------------------------------------------------------------------------------------------------------------
# Configuration.
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class BenchmarkConfig:
    """
    What to benchmark, and how. ``None`` in ``n_valid``, ``epochs`` and ``batch_size`` means the default for the
    data source (see :meth:`resolved`). Percentages and accuracy drops are in percentage points.

    :param data: ``"digits"`` (scikit-learn's digits, embedded) or the path of an ``.npz`` file with ``x_train``,
           ``y_train``, ``x_test``, ``y_test`` (see :func:`load_npz_images`).
    :param poison_rate: Share of the training set (after the validation split) replaced by triggered images
           relabelled with the target, in (0, 1).
    :param trigger: ``"pattern"`` (ART's ``add_pattern_bd``) or ``"pixel"`` (``add_single_bd``).
    :param target: The attack's target class.
    :param seed: Seed of the split, the poisoning, every training run and every defence (each defence starts from
           this seed, so that a subset of defences gives the same figures as a full run).
    :param n_valid: Size of the defender's clean validation split, taken from the training images: default
           5,000 for ``.npz`` data; the digits split is fixed at 300.
    :param arch: The BadNet's architecture, one of :data:`art_pruning_defense.keras.ARCHITECTURES`
           (``small-cnn``, ``resnet20``, ``vgg11-bn``).
    :param model: Instead of ``arch``, the path of a ``.keras`` model whose architecture is trained from scratch
           (re-initialised for every training run) with the ``small-cnn`` recipe; its input shape and classes must
           fit the data.
    :param epochs: Training epochs of the BadNet and of the networks retrained after filtering (default: the
           architecture's recipe on ``.npz`` data, 3 for ``small-cnn``, 25 for ``resnet20``/``vgg11-bn``; 30 on
           digits).
    :param batch_size: Training batch size (default: the recipe's; 32 on digits).
    :param augment: Train with random crops (4-pixel padding) and, with ``flip``, horizontal flips; default on for
           colour images, off for greyscale.
    :param flip: Flip horizontally when augmenting; turn it off for data where mirroring changes the class.
    :param predict_batch_size: Samples per forward pass when evaluating.
    :param defences: Names of the defences to run, from :data:`DEFENCES` (default: all, in registry order).
    :param accuracy_drops: The accuracy drops X of the pruning rows.
    :param goodnet_drop: The X of the "GoodNet X=..." row; one of ``accuracy_drops``.
    :param fine_tune_epochs: Fine-pruning's epochs of fine-tuning (default
           :data:`~art_pruning_defense.fine_pruning.RECOMMENDED_FINE_TUNE_EPOCHS`).
    :param neural_cleanse_steps: Neural Cleanse's optimisation steps per class (ART's ``steps``; see
           :data:`DEFAULT_NC_STEPS` for the choice).
    :param neural_cleanse_samples: Defender's validation images given to Neural Cleanse (reverse engineering and
           mitigation); at most ``n_valid``.
    :param neural_cleanse_patience: ART's ``patience``: steps before the regularisation cost is raised or lowered.
    :param neural_cleanse_batch_size: ART's ``batch_size`` of the reverse engineering.
    :param neural_cleanse_learning_rate: ART's ``learning_rate`` of the reverse engineering.
    :param strip_num_samples: STRIP's perturbed copies per input (ART's ``num_samples``).
    :param strip_false_acceptance_rate: STRIP's ``false_acceptance_rate``: the share of clean validation inputs
           whose entropy may fall below the threshold.
    """

    data: str = DIGITS
    poison_rate: float = 0.1
    trigger: str = "pattern"
    target: int = 0
    seed: int = 0
    n_valid: int | None = None
    arch: str = DEFAULT_ARCH
    model: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    augment: bool | None = None
    flip: bool = True
    predict_batch_size: int = 256
    defences: Sequence[str] = field(default_factory=defence_names)
    accuracy_drops: Sequence[float] = (2.0, 4.0, 10.0)
    goodnet_drop: float = 10.0
    fine_tune_epochs: int = RECOMMENDED_FINE_TUNE_EPOCHS
    neural_cleanse_steps: int = DEFAULT_NC_STEPS
    neural_cleanse_samples: int = DEFAULT_NC_SAMPLES
    neural_cleanse_patience: int = DEFAULT_NC_PATIENCE
    neural_cleanse_batch_size: int = DEFAULT_NC_BATCH_SIZE
    neural_cleanse_learning_rate: float = DEFAULT_NC_LEARNING_RATE
    strip_num_samples: int = DEFAULT_STRIP_NUM_SAMPLES
    strip_false_acceptance_rate: float = DEFAULT_STRIP_FALSE_ACCEPTANCE_RATE

    def __post_init__(self) -> None:
        self._check_params()

    @property
    def is_digits(self) -> bool:
        """
        :return: Whether the data is the embedded digits set.
        """
        return self.data == DIGITS

    def _check_params(self) -> None:
        if not isinstance(self.data, (str, os.PathLike)):
            raise TypeError(f"data must be {DIGITS!r} or the path of an .npz file, got {type(self.data).__name__}.")
        self.data = os.fspath(self.data)
        if self.data != DIGITS and not self.data.endswith(".npz"):
            raise ValueError(f"data must be {DIGITS!r} or the path of an .npz file, got {self.data!r}.")
        if isinstance(self.poison_rate, bool) or not isinstance(self.poison_rate, numbers.Real):
            raise TypeError(f"poison_rate must be a number in (0, 1), got {type(self.poison_rate).__name__}.")
        if not 0.0 < float(self.poison_rate) < 1.0:
            raise ValueError(f"poison_rate must be in (0, 1), got {self.poison_rate}.")
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {', '.join(map(repr, TRIGGERS))}, got {self.trigger!r}.")
        for name in ("target", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")
        for name in ("n_valid", "epochs", "batch_size"):
            if getattr(self, name) is not None:
                setattr(self, name, check_positive_int(getattr(self, name), name))
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"Unknown arch {self.arch!r}; expected one of: {', '.join(ARCHITECTURES)}.")
        if self.model is not None:
            if not isinstance(self.model, (str, os.PathLike)):
                raise TypeError(f"model must be the path of a .keras file, got {type(self.model).__name__}.")
            self.model = os.fspath(self.model)
            if not self.model.endswith(".keras"):
                raise ValueError(f"model must be the path of a .keras file, got {self.model!r}.")
            if os.path.isdir(self.model):
                raise ValueError(f"model {self.model} is a directory, expected a .keras file.")
            if not os.path.isfile(self.model):
                raise FileNotFoundError(f"Model file {self.model} does not exist.")
            if self.arch != DEFAULT_ARCH:
                raise ValueError(f"Give arch ({self.arch!r}) or model ({self.model!r}), not both.")
        for name in ("augment", "flip"):
            value = getattr(self, name)
            if not (isinstance(value, bool) or (name == "augment" and value is None)):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}.")
        if self.is_digits and self.n_valid not in (None, DIGITS_N_VALID):
            raise ValueError(
                f"The digits split is fixed ({DIGITS_N_VALID} validation images); n_valid={self.n_valid} applies to "
                ".npz data only."
            )
        for name in (
            "predict_batch_size",
            "fine_tune_epochs",
            "neural_cleanse_steps",
            "neural_cleanse_samples",
            "neural_cleanse_patience",
            "neural_cleanse_batch_size",
            "strip_num_samples",
        ):
            setattr(self, name, check_positive_int(getattr(self, name), name))
        if isinstance(self.defences, str) or not all(isinstance(d, str) for d in self.defences):
            raise TypeError("defences must be a list of defence names.")
        unknown = [d for d in self.defences if d not in DEFENCES]
        if unknown:
            raise ValueError(
                f"Unknown defence(s) {', '.join(map(repr, unknown))}; expected some of: {', '.join(DEFENCES)}."
            )
        if not self.defences or len(set(self.defences)) != len(self.defences):
            raise ValueError(f"defences must be distinct and not empty, got {list(self.defences)}.")
        self.defences = tuple(self.defences)
        self.accuracy_drops = check_drops(self.accuracy_drops)
        if isinstance(self.goodnet_drop, bool) or not isinstance(self.goodnet_drop, numbers.Real):
            raise TypeError(f"goodnet_drop must be a number, got {type(self.goodnet_drop).__name__}.")
        self.goodnet_drop = float(self.goodnet_drop)
        if self.goodnet_drop not in self.accuracy_drops:
            drops = ", ".join(f"{d:g}" for d in self.accuracy_drops)
            raise ValueError(f"goodnet_drop={self.goodnet_drop:g} must be one of accuracy_drops ({drops}).")
        for name in ("neural_cleanse_learning_rate", "strip_false_acceptance_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) < 1.0:
                raise ValueError(f"{name} must be a number in (0, 1), got {value!r}.")

    def resolved(self) -> "BenchmarkConfig":
        """
        :return: A copy with the defaults of the data source filled in for ``n_valid``, ``epochs`` and ``batch_size``.
        """
        digits = self.is_digits
        recipe = ARCHITECTURES[self.arch].recipe
        return replace(
            self,
            n_valid=self.n_valid or (DIGITS_N_VALID if digits else DEFAULT_N_VALID_NPZ),
            epochs=self.epochs or (DEFAULT_EPOCHS_DIGITS if digits else recipe.epochs),
            batch_size=self.batch_size or (DEFAULT_BATCH_SIZE_DIGITS if digits else recipe.batch_size),
        )

    def as_dict(self) -> dict:
        """
        :return: The configuration as plain JSON-serialisable values.
        """
        values = asdict(self)
        values["defences"] = list(self.defences)
        values["accuracy_drops"] = list(self.accuracy_drops)
        return values


# ---------------------------------------------------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------------------------------------------------


def _images(x: np.ndarray, name: str, path: str) -> np.ndarray:
    """
    :return: ``x`` as float32 images ``(n, height, width, channels)``, not yet scaled.
    """
    if x.dtype.kind not in "iuf":
        raise ValueError(f"{path}: {name} holds {x.dtype}, expected numbers (pixel values).")
    if x.ndim == 3:
        x = x[..., np.newaxis]
    elif not (x.ndim == 4 and x.shape[-1] in (1, 3)):
        raise ValueError(
            f"{path}: {name} has shape {x.shape}; expected greyscale images (n, height, width) or channels-last "
            "images (n, height, width, 1 or 3)."
        )
    if len(x) == 0 or 0 in x.shape[1:3]:
        raise ValueError(f"{path}: {name} has shape {x.shape}; it holds no images.")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{path}: {name} holds NaN or infinite values.")
    return x


def _int_labels(y: np.ndarray, name: str, path: str) -> np.ndarray:
    """
    :return: ``y`` as int64 labels ``(n,)``.
    """
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iuf":
        raise ValueError(f"{path}: {name} has shape {y.shape} and dtype {y.dtype}; expected integer labels (n,).")
    if y.dtype.kind == "f" and (not np.all(np.isfinite(y)) or np.any(y != np.round(y))):
        raise ValueError(f"{path}: {name} holds non-integer values; expected integer class labels.")
    if np.any(y < 0):
        raise ValueError(f"{path}: {name} holds negative labels; expected classes 0, 1, 2, ...")
    return y.astype(np.int64)


def load_npz_images(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """
    Read an ``.npz`` image data set (the layout of Keras's ``mnist.npz``) for the benchmark.

    Greyscale images ``(n, height, width)`` get a channel axis. Pixel values are scaled to [0, 1]: integer images,
    or float images with values above 1, are taken as 0..255 and divided by 255; float images already in [0, 1] are
    kept. Labels may be ``(n,)`` or ``(n, 1)`` integers.

    :param path: The ``.npz`` file, with the arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``.
    :return: ``(x_train, y_train, x_test, y_test)``: float32 images ``(n, height, width, channels)`` in [0, 1],
             int64 labels ``(n,)``.
    :raises FileNotFoundError: If ``path`` does not exist.
    :raises ValueError: If a key is missing, or the arrays have the wrong shapes or values.
    """
    arrays = load_npz(path)
    path = os.fspath(path)
    x_train = _images(arrays["x_train"], "x_train", path)
    x_test = _images(arrays["x_test"], "x_test", path)
    y_train = _int_labels(arrays["y_train"], "y_train", path)
    y_test = _int_labels(arrays["y_test"], "y_test", path)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{path}: x_train holds images of shape {x_train.shape[1:]} but x_test {x_test.shape[1:]}; they must match."
        )
    low = min(float(x_train.min()), float(x_test.min()))
    high = max(float(x_train.max()), float(x_test.max()))
    integer = arrays["x_train"].dtype.kind in "iu" and arrays["x_test"].dtype.kind in "iu"
    if low < 0.0 or high > 255.0:
        raise ValueError(
            f"{path}: pixel values range over [{low:g}, {high:g}]; expected [0, 1] (floats) or [0, 255] (8-bit)."
        )
    if integer or high > 1.0:
        x_train /= 255.0
        x_test /= 255.0
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"{path}: y_train holds a single class; a classifier needs at least two.")
    logger.info(
        "Loaded %d training and %d test images of shape %s from %s.", len(x_train), len(x_test), x_train.shape[1:], path
    )
    return x_train, y_train, x_test, y_test


def load_benchmark_data(config: BenchmarkConfig) -> BadNetData:
    """
    :param config: The configuration (its defaults resolved or not).
    :return: The poisoned training set, the defender's clean validation split and the clean and triggered test sets.
    """
    config = config.resolved()
    if config.is_digits:
        return digits_badnet_data(
            poison_rate=config.poison_rate, target=config.target, trigger=config.trigger, seed=config.seed
        )
    x_train, y_train, x_test, y_test = load_npz_images(config.data)
    return make_badnet_data(
        x_train,
        y_train,
        x_test,
        y_test,
        n_valid=config.n_valid,
        poison_rate=config.poison_rate,
        target=config.target,
        trigger=config.trigger,
        seed=config.seed,
    )


# ---------------------------------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """
    The state shared by the defences: configuration, data, the BadNet B and B's labels on the evaluation sets.
    """

    config: BenchmarkConfig
    data: BadNetData
    classifier: KerasClassifier
    verbose: bool
    _labels: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def model(self) -> "keras.Model":
        """
        :return: B's Keras model.
        """
        return self.classifier.model

    def bad_labels(self, name: str) -> np.ndarray:
        """
        :param name: ``"test"``, ``"test_poisoned"`` or ``"train"``.
        :return: B's labels on that set (computed once).
        """
        if name not in self._labels:
            x = {"test": self.data.x_test, "test_poisoned": self.data.x_test_poisoned, "train": self.data.x_train}
            self._labels[name] = self.labels_of(self.model, x[name])[0]
        return self._labels[name]

    def labels_of(self, model: "keras.Model", *xs: np.ndarray) -> tuple[np.ndarray, ...]:
        """
        :return: The labels a Keras model predicts for each of ``xs``.
        """
        predict = BatchPredictor(model, labels_only=True)
        return tuple(predict(x, self.config.predict_batch_size) for x in xs)

    def evaluate(self, goodnet: GoodNetClassifier) -> dict[str, dict[str, float | None]]:
        """
        :return: ``goodnet.evaluate`` on the clean and triggered test data: rows for B, B' and GoodNet.
        """
        data = self.data
        return goodnet.evaluate(
            data.x_test, data.y_test, data.x_test_poisoned, data.target, batch_size=self.config.predict_batch_size
        )

    def detection_rates(self, pruned: "keras.Model") -> tuple[float | None, float | None]:
        """
        The rule of :class:`~art_pruning_defense.FinePruningDetector`: a training sample is flagged where B and B'
        disagree.

        :param pruned: B'.
        :return: ``(TPR, FPR)`` on the training set, percent.
        """
        flagged = self.bad_labels("train") != self.labels_of(pruned, self.data.x_train)[0]
        return _detection_rates(flagged, self.data.is_poison_train)

    def train_cnn(self, x: np.ndarray, y: np.ndarray) -> KerasClassifier:
        """
        Train a fresh CNN the way B was trained (same architecture, seed, epochs and batch size).

        :return: It, wrapped as an ART ``KerasClassifier`` (inputs in [0, 1]).
        """
        return train_badnet(x, y, self.data.n_classes, self.config)


def train_badnet(x: np.ndarray, y: np.ndarray, n_classes: int, config: BenchmarkConfig) -> KerasClassifier:
    """
    :param x: Training images in [0, 1], channels last.
    :param y: Integer labels.
    :param n_classes: Number of classes.
    :param config: Architecture (or model file), seed, epochs, batch size and augmentation (defaults resolved here).
    :return: The network, freshly initialised from the seed and trained, as an ART ``KerasClassifier`` with clip
             values (0, 1).
    """
    config = config.resolved()
    # Seed before building: the initial weights are drawn when the layers are created.
    seed_everything(config.seed)
    if config.model is not None:
        model = _fresh_user_model(config.model, tuple(x.shape[1:]), n_classes)
    else:
        model = build_architecture(config.arch, x.shape[1:], n_classes)
    recipe = ARCHITECTURES[config.arch].recipe
    augment = config.augment if config.augment is not None else x.shape[-1] == 3
    fit_classifier(
        model,
        x,
        y,
        epochs=config.epochs,
        batch_size=config.batch_size,
        optimizer=recipe.optimizer,
        learning_rate=recipe.learning_rate,
        augment_pad=AUGMENT_PADDING if augment else 0,
        augment_flip=augment and config.flip,
        seed=config.seed,
    )
    return KerasClassifier(model, clip_values=(0.0, 1.0))


def _fresh_user_model(path: str, input_shape: tuple[int, ...], n_classes: int) -> "keras.Model":
    """
    :return: The architecture of the ``.keras`` file at ``path``, with freshly initialised weights.
    """
    import keras

    from art_pruning_defense.keras import load_model

    loaded = load_model(path)
    shape = tuple(loaded.inputs[0].shape[1:])
    if shape != input_shape:
        raise ValueError(f"model {path} takes inputs of shape {shape}, but the data's images are {input_shape}.")
    outputs = loaded.outputs[0].shape[-1]
    if outputs != n_classes:
        raise ValueError(f"model {path} has {outputs} outputs, but the data has {n_classes} classes.")
    return keras.models.clone_model(loaded)  # new layers from the config: new initial weights


def _row(
    defence: str,
    seconds: float,
    clean_accuracy: float | None = None,
    attack_success_rate: float | None = None,
    poison_detection_tpr: float | None = None,
    poison_detection_fpr: float | None = None,
    poisoned_flagged: float | None = None,
    clean_flagged: float | None = None,
    note: str | None = None,
    error: str | None = None,
) -> dict:
    """
    :return: A result row with every key of :data:`ROW_KEYS`, numbers as plain floats (JSON-ready).
    """
    values = {
        "defence": defence,
        "clean_accuracy": clean_accuracy,
        "attack_success_rate": attack_success_rate,
        "poison_detection_tpr": poison_detection_tpr,
        "poison_detection_fpr": poison_detection_fpr,
        "poisoned_flagged": poisoned_flagged,
        "clean_flagged": clean_flagged,
        "seconds": round(float(seconds), 2),
        "note": note,
        "error": error,
    }
    for key in ROW_KEYS[1:8]:
        if values[key] is not None:
            values[key] = float(values[key])
    return values


def _detection_rates(flagged: np.ndarray, is_poison: np.ndarray) -> tuple[float | None, float | None]:
    """
    :param flagged: Whether each training sample was flagged.
    :param is_poison: Whether each training sample is poison.
    :return: ``(TPR, FPR)``: percent of poisoned samples flagged, percent of clean samples flagged (``None`` where
             there are none).
    """
    flagged = np.asarray(flagged, dtype=bool)
    n_poison = int(np.count_nonzero(is_poison))
    n_clean = len(is_poison) - n_poison
    tpr = float(_sweep.percent(np.count_nonzero(flagged & is_poison), n_poison)) if n_poison else None
    fpr = float(_sweep.percent(np.count_nonzero(flagged & ~is_poison), n_clean)) if n_clean else None
    return tpr, fpr


def _abstaining_labels(scores: np.ndarray) -> np.ndarray:
    """
    :param scores: Scores of an ART abstaining predictor, ``(n, N)``.
    :return: The argmax label per input, :data:`ABSTAIN` where the row is all zeros.
    """
    scores = np.asarray(scores)
    labels = np.argmax(scores, axis=1).astype(np.int64)
    labels[~np.any(scores != 0, axis=1)] = ABSTAIN
    return labels


def _without_flags(metrics: dict[str, float | None]) -> dict[str, float | None]:
    """
    :return: Clean accuracy and attack success rate of a :meth:`GoodNetClassifier.evaluate` row.
    """
    return {key: metrics[key] for key in ("clean_accuracy", "attack_success_rate")}


def _test_metrics(run: _Run, clean: np.ndarray, poisoned: np.ndarray, flags: bool = False) -> dict:
    """
    :param clean: Labels predicted on the clean test set (:data:`ABSTAIN` or N for "flagged" where ``flags``).
    :param poisoned: Labels predicted on the triggered test set.
    :param flags: Also report the shares flagged (labels :data:`ABSTAIN` or N).
    :return: ``clean_accuracy``, ``attack_success_rate`` and, with ``flags``, ``clean_flagged`` and
             ``poisoned_flagged``.
    """
    data = run.data
    metrics = {
        "clean_accuracy": _sweep.accuracy(clean, data.y_test),
        "attack_success_rate": _sweep.attack_success_rate(poisoned, data.target),
    }
    if flags:

        def flagged(labels: np.ndarray) -> float:
            return float(
                _sweep.percent(np.count_nonzero((labels == ABSTAIN) | (labels == data.n_classes)), len(labels))
            )

        metrics["clean_flagged"] = flagged(clean)
        metrics["poisoned_flagged"] = flagged(poisoned)
    return metrics


@contextlib.contextmanager
def _art_output(verbose: bool) -> Iterator[None]:
    """
    Swallow what ART prints on stdout (``KerasNeuralCleanse`` prints a tensor per optimisation step) and, unless
    ``verbose``, hide its progress bars (on stderr; handlers of the ``logging`` module keep their own stream).
    """
    with contextlib.redirect_stdout(io.StringIO()):
        if verbose:
            yield
        else:
            with contextlib.redirect_stderr(io.StringIO()):
                yield


class _DropUnfilteredWarning(logging.Filter):
    """
    ART's Neural Cleanse warns at every ``predict`` that its filtering is not active; after the "unlearning" and
    "pruning" mitigations that is expected.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Filtering mitigation not activated" not in record.getMessage()


@contextlib.contextmanager
def _without_unfiltered_warning() -> Iterator[None]:
    """
    Drop :class:`_DropUnfilteredWarning`'s message from ART's Neural Cleanse logger while in the block.
    """
    art_logger = logging.getLogger(NeuralCleanseMixin.__module__)
    log_filter = _DropUnfilteredWarning()
    art_logger.addFilter(log_filter)
    try:
        yield
    finally:
        art_logger.removeFilter(log_filter)


def _guarded(name: str, start: float, function: Callable[[], dict]) -> dict:
    """
    :param name: The row's name.
    :param start: ``time.perf_counter()`` when the work of this row began (shared work included).
    :param function: Measures the row.
    :return: The row, or an error row (figures ``None``, ``error`` holding the message) if ``function`` raised.
    """
    try:
        return function()
    except Exception as error:  # an ART defence may fail in many ways; record it, do not end the benchmark
        logger.warning("%s failed: %s: %s", name, type(error).__name__, error, exc_info=True)
        return _row(name, time.perf_counter() - start, error=f"{type(error).__name__}: {error}")


# ---------------------------------------------------------------------------------------------------------------------
# The defences.
# ---------------------------------------------------------------------------------------------------------------------


@_register("none", "no defence: the BadNet B itself", lambda config: ["no defence"])
def _no_defence(run: _Run) -> list[dict]:
    start = time.perf_counter()
    metrics = _test_metrics(run, run.bad_labels("test"), run.bad_labels("test_poisoned"))
    return [_row("no defence", time.perf_counter() - start, **metrics)]


def _pruning_rows(config: BenchmarkConfig) -> list[str]:
    return [f"pruning X={x:g}" for x in config.accuracy_drops] + [f"GoodNet X={config.goodnet_drop:g}"]


@_register("pruning", "pruning B'(X) of FinePruning for each X, and GoodNet at goodnet_drop", _pruning_rows)
def _pruning(run: _Run) -> list[dict]:
    config, data = run.config, run.data
    start = time.perf_counter()
    defence = FinePruning(
        run.classifier,
        accuracy_drops=config.accuracy_drops,
        batch_size=config.predict_batch_size,
        fine_tune_epochs=0,
        seed=config.seed,
        verbose=False,
    )
    defence.fit(data.x_valid, data.y_valid)
    fitted = time.perf_counter() - start
    point = defence.prune_point
    rows: list[dict] = []
    goodnet_row: dict | None = None
    for drop in defence.accuracy_drops:
        name = f"pruning X={drop:g}"
        begin = time.perf_counter()

        def measure(drop: float = drop, name: str = name, begin: float = begin) -> dict:
            nonlocal goodnet_row
            goodnet = defence(run.classifier, accuracy_drop=drop)
            metrics = run.evaluate(goodnet)
            note = f"{len(defence.pruned_channels(drop))} of {point.n_channels} channels of {point.layer_name} pruned"
            if drop == config.goodnet_drop:
                goodnet_row = _row(
                    f"GoodNet X={drop:g}",
                    fitted + time.perf_counter() - begin,
                    note=f"B and B'(X={drop:g}) side by side; {note}",
                    **metrics["GoodNet"],
                )
            tpr, fpr = run.detection_rates(goodnet.pruned_model)
            return _row(
                name,
                fitted + time.perf_counter() - begin,
                poison_detection_tpr=tpr,
                poison_detection_fpr=fpr,
                note=note,
                **_without_flags(metrics["B'"]),
            )

        rows.append(_guarded(name, begin - fitted, measure))
    name = f"GoodNet X={config.goodnet_drop:g}"
    rows.append(goodnet_row or _row(name, fitted, error=f"not measured: pruning X={config.goodnet_drop:g} failed"))
    return rows


@_register(
    "fine-pruning",
    "fine-pruning (prune, then fine-tune on the clean validation data), alone and as GoodNet",
    lambda config: ["fine-pruning", "fine-pruning GoodNet"],
)
def _fine_pruning(run: _Run) -> list[dict]:
    config, data = run.config, run.data
    start = time.perf_counter()
    defence = FinePruning(
        run.classifier,
        accuracy_drops=config.accuracy_drops,
        batch_size=config.predict_batch_size,
        fine_tune_epochs=config.fine_tune_epochs,
        seed=config.seed,
        verbose=False,
    )
    defence.fit(data.x_valid, data.y_valid)
    goodnet = defence(run.classifier)
    metrics = run.evaluate(goodnet)
    evaluated = time.perf_counter() - start
    summary = defence.fine_tune_
    note = (
        f"{summary['channels_pruned']} of {defence.prune_point.n_channels} channels pruned, "
        f"{summary['epochs']} epochs of fine-tuning"
    )
    goodnet_row = _row(
        "fine-pruning GoodNet", evaluated, note=f"B and the fine-pruned B' side by side; {note}", **metrics["GoodNet"]
    )
    tpr, fpr = run.detection_rates(goodnet.pruned_model)
    row = _row(
        "fine-pruning",
        time.perf_counter() - start,
        poison_detection_tpr=tpr,
        poison_detection_fpr=fpr,
        note=note,
        **_without_flags(metrics["B'"]),
    )
    return [row, goodnet_row]


@_register(
    "attack-aware",
    "attack-aware pruning at goodnet_drop and attack-aware fine-pruning (the defender holds triggered validation "
    "samples)",
    lambda config: ["attack-aware pruning", "attack-aware fine-pruning", "attack-aware fine-pruning GoodNet"],
)
def _attack_aware(run: _Run) -> list[dict]:
    config, data = run.config, run.data
    start = time.perf_counter()
    defence = FinePruning(
        run.classifier,
        strategy="attack_aware",
        accuracy_drops=(config.goodnet_drop,),
        batch_size=config.predict_batch_size,
        fine_tune_epochs=config.fine_tune_epochs,
        seed=config.seed,
        # One layer's activations on clean and triggered data stay in memory: MNIST's conv_1 needs 0.8 GiB.
        max_cache_bytes=ATTACK_AWARE_CACHE_BYTES,
        verbose=False,
    )
    defence.fit(data.x_valid, data.y_valid, poisoned_x=data.x_valid_poisoned, poisoned_target=data.target)
    fitted = time.perf_counter() - start
    rows = []
    pruned = defence(run.classifier, accuracy_drop=config.goodnet_drop)
    metrics = run.evaluate(pruned)
    tpr, fpr = run.detection_rates(pruned.pruned_model)
    channels = defence.sweeps_[float(config.goodnet_drop)][-1].channels_pruned
    rows.append(
        _row(
            "attack-aware pruning",
            time.perf_counter() - start,
            poison_detection_tpr=tpr,
            poison_detection_fpr=fpr,
            note=f"X={config.goodnet_drop:g}: {channels} channels of {', '.join(defence.layer_names or [])} pruned"
            if defence.layer_names
            else f"X={config.goodnet_drop:g}: {channels} channels pruned",
            **_without_flags(metrics["B'"]),
        )
    )
    goodnet = defence(run.classifier)
    metrics = run.evaluate(goodnet)
    tpr, fpr = run.detection_rates(goodnet.pruned_model)
    note = f"{defence.fine_tune_['channels_pruned']} channels pruned, {defence.fine_tune_['epochs']} epochs"
    rows.append(
        _row(
            "attack-aware fine-pruning",
            time.perf_counter() - start,
            poison_detection_tpr=tpr,
            poison_detection_fpr=fpr,
            note=note,
            **_without_flags(metrics["B'"]),
        )
    )
    rows.append(_row("attack-aware fine-pruning GoodNet", fitted, note=note, **metrics["GoodNet"]))
    return rows


def _filter_and_retrain(run: _Run, name: str, detect: Callable[[np.ndarray], list[int]]) -> list[dict]:
    """
    Flag training samples, remove them, retrain a fresh CNN on the rest, and measure it.

    :param name: The row's name.
    :param detect: Takes the one-hot training labels, returns ART's ``is_clean_lst``.
    """
    data = run.data
    start = time.perf_counter()
    with _art_output(run.verbose):
        is_clean = np.asarray(detect(to_categorical(data.y_train, data.n_classes)))
    if is_clean.shape != (len(data.x_train),):
        raise ValueError(f"The detector returned {is_clean.shape} flags for {len(data.x_train)} training samples.")
    flagged = is_clean == 0
    tpr, fpr = _detection_rates(flagged, data.is_poison_train)
    keep = ~flagged
    if not np.any(keep):
        raise ValueError("Every training sample was flagged; nothing is left to retrain on.")
    logger.info(
        "%s flagged %d of %d training samples (TPR %s%%, FPR %s%%); retraining on the rest.",
        name,
        np.count_nonzero(flagged),
        len(flagged),
        "n/a" if tpr is None else f"{tpr:.1f}",
        "n/a" if fpr is None else f"{fpr:.1f}",
    )
    retrained = run.train_cnn(data.x_train[keep], data.y_train[keep])
    metrics = _test_metrics(run, *run.labels_of(retrained.model, data.x_test, data.x_test_poisoned))
    note = f"{np.count_nonzero(flagged)} of {len(flagged)} training samples removed, CNN retrained on the rest"
    return [
        _row(
            name, time.perf_counter() - start, poison_detection_tpr=tpr, poison_detection_fpr=fpr, note=note, **metrics
        )
    ]


@_register(
    "activation-clustering",
    "ART's ActivationDefence on the training set, flagged samples removed, CNN retrained",
    lambda config: ["activation clustering"],
)
def _activation_clustering(run: _Run) -> list[dict]:
    from art.defences.detector.poison import ActivationDefence

    def detect(y_onehot: np.ndarray) -> list[int]:
        defence = ActivationDefence(run.classifier, run.data.x_train, y_onehot)
        _, is_clean = defence.detect_poison(**ACTIVATION_CLUSTERING_PARAMS)
        return is_clean

    return _filter_and_retrain(run, "activation clustering", detect)


@_register(
    "spectral-signatures",
    "ART's SpectralSignatureDefense (expected_pp_poison = the real rate), flagged samples removed, CNN retrained",
    lambda config: ["spectral signatures"],
)
def _spectral_signatures(run: _Run) -> list[dict]:
    from art.defences.detector.poison import SpectralSignatureDefense

    def detect(y_onehot: np.ndarray) -> list[int]:
        defence = SpectralSignatureDefense(
            run.classifier,
            run.data.x_train,
            y_onehot,
            expected_pp_poison=float(run.config.poison_rate),
            batch_size=run.config.predict_batch_size,
            eps_multiplier=SPECTRAL_EPS_MULTIPLIER,
        )
        _, is_clean = defence.detect_poison()
        return is_clean

    return _filter_and_retrain(run, "spectral signatures", detect)


class _NeuralCleanse(KerasNeuralCleanse):
    """
    ART's ``KerasNeuralCleanse`` (what ``NeuralCleanse(classifier)(classifier, ...)`` returns), with two changes:

    - :meth:`reset` restores Adam's learning rate, which ART's ``reset`` sets to zero under Keras 3 (it zeroes every
      variable of the optimiser, and Keras 3 counts the learning rate among them), so that the trigger would never
      move from its random start;
    - :meth:`outlier_detection` returns the ``triggers`` given at construction where there are some, so that several
      mitigations can share one reverse engineering.
    """

    def __init__(self, model: "keras.Model", triggers: list | None = None, **kwargs) -> None:
        """
        :param model: The Keras model (Sequential: see the module's notes); pruning and unlearning change it.
        :param triggers: The result of an earlier :meth:`outlier_detection` on the same data and an equal model.
        :param kwargs: ``KerasNeuralCleanse``'s parameters.
        """
        super().__init__(model, **kwargs)
        self.triggers = triggers

    def reset(self) -> None:
        """
        ART's reset, then the learning rate put back.
        """
        super().reset()
        self.opt.learning_rate.assign(self.learning_rate)

    def outlier_detection(self, x_val: np.ndarray, y_val: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """
        :return: ART's ``(class, mask, pattern)`` of each class flagged as backdoored (computed once).
        """
        if self.triggers is None:
            self.triggers = super().outlier_detection(x_val, y_val)
        return list(self.triggers)


def _pruned_neurons(classifier: KerasNeuralCleanse) -> str:
    """
    :return: How many neurons of the layer Neural Cleanse's "pruning" mitigation works on are zeroed.
    """
    layer = classifier.model.layers[len(classifier.layer_names) - 2]
    weights, bias = layer.get_weights()
    zeroed = int(np.count_nonzero(np.all(weights == 0, axis=0) & (bias == 0)))
    return f"{zeroed} of {len(bias)} neurons of {layer.name} pruned"


def _sequential_copy(model: "keras.Model", probe: np.ndarray) -> "keras.Model":
    """
    :param model: A Functional model whose layers form a single chain.
    :param probe: A few inputs on which the copy must compute what the model computes.
    :return: An independent Sequential copy with equal weights, compiled for ART's ``fit`` on one-hot labels.
    :raises ValueError: If the model is not a single chain of layers.
    """
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    try:
        copy = keras.Sequential(
            [keras.Input(shape=model.inputs[0].shape[1:])]
            + [type(lay).from_config(lay.get_config()) for lay in layers],
            name=f"{model.name}_sequential",
        )
        copy.set_weights(model.get_weights())
    except ValueError as error:
        raise ValueError(f"Neural Cleanse needs a model whose layers form a single chain: {error}") from error
    if not np.allclose(copy.predict(probe, verbose=0), model.predict(probe, verbose=0), atol=1e-5):
        raise ValueError("Neural Cleanse needs a model whose layers form a single chain (a Sequential model).")
    copy.compile(optimizer="adam", loss="categorical_crossentropy")
    return copy


@_register(
    "neural-cleanse",
    "ART's Neural Cleanse: one reverse engineering, then each mitigation on a fresh copy of B",
    lambda config: [f"neural cleanse ({mitigation})" for mitigation in NC_MITIGATIONS],
)
def _neural_cleanse(run: _Run) -> list[dict]:
    config, data = run.config, run.data
    n = min(config.neural_cleanse_samples, len(data.x_valid))
    x_val = data.x_valid[:n]
    y_val = to_categorical(data.y_valid[:n], data.n_classes)
    params = {
        "steps": config.neural_cleanse_steps,
        "patience": config.neural_cleanse_patience,
        "batch_size": config.neural_cleanse_batch_size,
        "learning_rate": float(config.neural_cleanse_learning_rate),
    }
    start = time.perf_counter()
    finder = _NeuralCleanse(_sequential_copy(run.model, x_val[:PROBE_SIZE]), **params)
    with _art_output(run.verbose):
        triggers = finder.outlier_detection(x_val, y_val)
    flagged_classes = [int(label) for label, _, _ in triggers]
    shared = time.perf_counter() - start
    logger.info("Neural Cleanse flagged the classes %s in %.1f s.", flagged_classes or "(none)", shared)
    note = f"classes flagged: {', '.join(map(str, flagged_classes)) or 'none (nothing mitigated)'}"
    rows = []
    for mitigation in NC_MITIGATIONS:
        name = f"neural cleanse ({mitigation})"
        begin = time.perf_counter()

        def measure(mitigation: str = mitigation, name: str = name, begin: float = begin) -> dict:
            seed_everything(config.seed)
            classifier = _NeuralCleanse(_sequential_copy(run.model, x_val[:PROBE_SIZE]), triggers=triggers, **params)
            with _art_output(run.verbose), _without_unfiltered_warning():
                classifier.mitigate(x_val, y_val, mitigation_types=[mitigation])
                clean = _abstaining_labels(classifier.predict(data.x_test, batch_size=config.predict_batch_size))
                poisoned = _abstaining_labels(
                    classifier.predict(data.x_test_poisoned, batch_size=config.predict_batch_size)
                )
            metrics = _test_metrics(run, clean, poisoned, flags=True)
            detail = note
            if mitigation == "pruning" and flagged_classes:
                detail += "; " + _pruned_neurons(classifier)
            return _row(name, shared + time.perf_counter() - begin, note=detail, **metrics)

        rows.append(_guarded(name, begin - shared, measure))
    return rows


@_register(
    "strip",
    "ART's STRIP: mitigate on the defender's clean validation data, then abstain on low-entropy inputs",
    lambda config: ["STRIP"],
)
def _strip(run: _Run) -> list[dict]:
    from art.defences.transformer.poisoning import STRIP

    config, data = run.config, run.data
    start = time.perf_counter()
    # STRIP() changes the class of the classifier it is given: give it a wrapper of its own.
    wrapper = KerasClassifier(run.model, clip_values=(0.0, 1.0))
    strip = STRIP(wrapper)(
        num_samples=config.strip_num_samples, false_acceptance_rate=float(config.strip_false_acceptance_rate)
    )
    with _art_output(run.verbose):
        strip.mitigate(data.x_valid)
    clean = _abstaining_labels(strip.predict(data.x_test))
    poisoned = _abstaining_labels(strip.predict(data.x_test_poisoned))
    metrics = _test_metrics(run, clean, poisoned, flags=True)
    note = f"entropy threshold {strip.entropy_threshold:.3f} from {len(data.x_valid)} clean validation images"
    return [_row("STRIP", time.perf_counter() - start, note=note, **metrics)]


# ---------------------------------------------------------------------------------------------------------------------
# Public entry points.
# ---------------------------------------------------------------------------------------------------------------------


def run_benchmark(config: BenchmarkConfig, verbose: bool = True) -> list[dict]:
    """
    Poison the data, train the BadNet and measure every selected defence on it.

    A defence that raises does not end the benchmark: its rows keep ``None`` figures and an ``error`` message.

    :param config: What to run.
    :param verbose: Show a progress bar over the defences (and ART's own bars).
    :return: One row per measured model, in registry order, with the keys of :data:`ROW_KEYS`: ``defence``;
             ``clean_accuracy`` and ``attack_success_rate`` on the test data (percent); ``poison_detection_tpr`` and
             ``poison_detection_fpr`` (percent of poisoned, resp. clean, training samples flagged; ``None`` for
             defences that do not filter the training set); ``poisoned_flagged`` and ``clean_flagged`` (percent of
             triggered, resp. clean, test inputs flagged or abstained on; ``None`` for defences that never flag);
             ``seconds`` (wall time of this defence alone, from the trained BadNet to its figures; work shared
             between rows of one defence is counted in each); ``note``; ``error``.
    """
    if not isinstance(config, BenchmarkConfig):
        raise TypeError(f"config must be a BenchmarkConfig, got {type(config).__name__}.")
    if not isinstance(verbose, bool):
        raise TypeError(f"verbose must be a bool, got {type(verbose).__name__}.")
    config = config.resolved()
    started = time.perf_counter()
    data = load_benchmark_data(config)
    logger.info(
        "Data: %d training images (%d poisoned, target %d, %s trigger), %d clean validation, %d test.",
        len(data.x_train),
        int(np.count_nonzero(data.is_poison_train)),
        data.target,
        config.trigger,
        len(data.x_valid),
        len(data.x_test),
    )
    begin = time.perf_counter()
    classifier = train_badnet(data.x_train, data.y_train, data.n_classes, config)
    logger.info("Trained the BadNet (%d epochs) in %.1f s.", config.epochs, time.perf_counter() - begin)
    run = _Run(config=config, data=data, classifier=classifier, verbose=verbose)
    begin = time.perf_counter()
    for name in ("test", "test_poisoned", "train"):
        run.bad_labels(name)  # shared by the defences: counted in none of their rows
    logger.info("Predicted B's labels on the test and training sets in %.1f s.", time.perf_counter() - begin)

    rows: list[dict] = []
    selected = [DEFENCES[name] for name in DEFENCES if name in config.defences]
    progress = tqdm(selected, desc="Benchmark", unit="defence", disable=not verbose)
    with progress:
        for defence in progress:
            progress.set_postfix_str(defence.name)
            logger.info("Running %s: %s.", defence.name, defence.description)
            seed_everything(config.seed)
            begin = time.perf_counter()
            try:
                new_rows = defence.run(run)
            except Exception as error:  # record the failure of one defence, go on with the others
                logger.warning("%s failed: %s: %s", defence.name, type(error).__name__, error, exc_info=True)
                seconds = time.perf_counter() - begin
                message = f"{type(error).__name__}: {error}"
                new_rows = [_row(name, seconds, error=message) for name in defence.row_names(config)]
            for row in new_rows:
                logger.info(
                    "%s: clean accuracy %s, attack success rate %s%s.",
                    row["defence"],
                    _percent_text(row["clean_accuracy"]),
                    _percent_text(row["attack_success_rate"]),
                    f" (error: {row['error']})" if row["error"] else "",
                )
            rows.extend(new_rows)
    logger.info("Benchmark finished in %.1f s.", time.perf_counter() - started)
    return rows


def _percent_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def markdown_rows(rows: Sequence[dict]) -> list[dict]:
    """
    :return: The rows for the markdown table: ``notes`` holds the error (if any) or the note, with ``|`` escaped.
    """
    shown = []
    for row in rows:
        text = f"error: {row['error']}" if row.get("error") else row.get("note") or ""
        text = " ".join(str(text).split()).replace("|", "\\|")
        shown.append({**row, "notes": text or None})
    return shown


def write_benchmark(
    rows: Sequence[dict], out_dir: str, command: str, overwrite: bool = False, title: str = "Backdoor defences"
) -> list[str]:
    """
    Write ``results.json`` (the rows), ``results.md`` (the command line that produced them, then the table) and
    ``results.png`` (clean accuracy against attack success rate, one point per defence) into ``out_dir``,
    atomically: the directory appears complete or not at all.

    :param rows: Rows from :func:`run_benchmark`.
    :param out_dir: Directory to create.
    :param command: The command line that produced the rows (printed above the table).
    :param overwrite: Replace an existing directory (only one that art-prune wrote; only once the new one is
                      complete).
    :param title: Title of the table and of the plot.
    :return: The paths written.
    :raises FileExistsError: If ``out_dir`` exists and ``overwrite`` is false.
    """
    rows = list(rows)
    if not rows or not all(isinstance(row, dict) and "defence" in row for row in rows):
        raise ValueError("rows must be a non-empty list of result rows (dicts with a 'defence' key).")
    if not isinstance(command, str) or not command.strip():
        raise ValueError("command must be the (non-empty) command line that produced the rows.")
    markdown = "\n".join(
        [
            f"# {title}",
            "",
            "Produced by:",
            "",
            "```",
            command.strip(),
            "```",
            "",
            markdown_table(markdown_rows(rows), BENCHMARK_COLUMNS),
            "",
            LEGEND,
            "",
        ]
    )
    with atomic_directory(out_dir, overwrite=overwrite, kind="benchmark") as tmp:
        write_json(os.path.join(tmp, RESULTS_JSON), rows)
        write_text(os.path.join(tmp, RESULTS_MD), markdown)
        plot_tradeoff(rows, os.path.join(tmp, RESULTS_PNG), title=title)
    written = [os.path.join(os.path.abspath(out_dir), name) for name in (RESULTS_JSON, RESULTS_MD, RESULTS_PNG)]
    logger.info("Wrote %s.", ", ".join(written))
    return written
