"""
What a benchmark is: one cell's configuration (:class:`BenchmarkConfig`: data, architecture, attack, poison rate,
seed, defences and their settings) and, in :mod:`art_pruning_defense.benchmark.grid`, a grid of cells.

Framework-free: neither TensorFlow nor ART is imported here, so that the command line checks a configuration at once.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

from art_pruning_defense._defaults import ARCH_NAMES, DEFENCE_NAMES, RECOMMENDED_FINE_TUNE_EPOCHS, TRIGGER_NAMES
from art_pruning_defense._validation import check_drops, check_positive_int

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
    defences: Sequence[str] = field(default_factory=lambda: DEFENCE_NAMES)
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
        if self.trigger not in TRIGGER_NAMES:
            raise ValueError(f"trigger must be one of {', '.join(map(repr, TRIGGER_NAMES))}, got {self.trigger!r}.")
        for name in ("target", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")
        for name in ("n_valid", "epochs", "batch_size"):
            if getattr(self, name) is not None:
                setattr(self, name, check_positive_int(getattr(self, name), name))
        if self.arch not in ARCH_NAMES:
            raise ValueError(f"Unknown arch {self.arch!r}; expected one of: {', '.join(ARCH_NAMES)}.")
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
        from art_pruning_defense.benchmark.defences import DEFENCES  # the live registry (it imports TensorFlow)

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
        from art_pruning_defense.keras import ARCHITECTURES

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


