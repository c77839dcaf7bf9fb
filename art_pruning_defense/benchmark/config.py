"""
What a benchmark is: one cell's configuration (:class:`BenchmarkConfig`: data, architecture, attack, poison rate,
seed, defences and their settings) and, in :mod:`art_pruning_defense.benchmark.grid`, a grid of cells.

Framework-free: neither TensorFlow nor ART is imported here, so that the command line checks a configuration at once.
"""

from __future__ import annotations

import numbers
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Sequence

from art_pruning_defense._defaults import ARCH_NAMES, DEFENCE_NAMES, RECOMMENDED_FINE_TUNE_EPOCHS, TRIGGER_NAMES
from art_pruning_defense.benchmark.attacks import ATTACKS, make_attack
from art_pruning_defense._validation import MAX_SEED, check_drops, check_int, check_number, check_positive_int

#: ``BenchmarkConfig.data`` value of the embedded data set (scikit-learn's digits, upsampled to 16×16).
DIGITS = "digits"

#: Largest target class accepted (the largest seed, :data:`MAX_SEED`, is NumPy's).
MAX_TARGET = 2**31 - 1
#: Classes of the embedded digits.
DIGITS_N_CLASSES = 10
#: Most cells of a grid (:class:`GridConfig`'s ``max_cells``, ``--max-cells``): 10,000 cells are checked in about
#: half a second and already take days to run; a larger grid is refused before any work unless this is raised.
MAX_CELLS = 10_000

#: The defender's clean validation split, by data source (the digits split is fixed by
#: :func:`~art_pruning_defense.lab.digits.digits_badnet_data`).
DEFAULT_N_VALID_NPZ = 5000
DIGITS_N_VALID = 300
#: Training images of the digits split (the other 397 are the test set).
DIGITS_N_TRAIN = 1400
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
#: The re-tuning attack's default number of poisoned images (Min et al., NeurIPS 2024: 5), what ``--retune-poisons``
#: with no value asks for.
DEFAULT_RETUNE_POISONS = (5,)
#: Most poisoned images of one re-tuning (a bound on the grid file's values; the poisoned set bounds it per cell).
MAX_RETUNE_POISONS = 1_000_000
#: Fields of :class:`BenchmarkConfig` left out of :meth:`BenchmarkConfig.as_dict` (and so of a cell's hash and of a
#: grid's settings) while at their default: the cells and outputs of runs made before these fields existed keep
#: their identity.
OPTIONAL_FIELDS = {"retune_poisons": ()}


def _defence_names() -> tuple[str, ...]:
    """
    :return: The registered defences: the live registry where it is loaded (it imports TensorFlow; tests add to it),
             else :data:`art_pruning_defense._defaults.DEFENCE_NAMES`, which a test keeps equal to it.
    """
    registry = sys.modules.get("art_pruning_defense.benchmark.defences")
    return tuple(getattr(registry, "DEFENCES", DEFENCE_NAMES))


@dataclass
class BenchmarkConfig:
    """
    What to benchmark, and how. ``None`` in ``n_valid``, ``epochs`` and ``batch_size`` means the default for the
    data source (see :meth:`resolved`). Percentages and accuracy drops are in percentage points.

    :param data: ``"digits"`` (scikit-learn's digits, embedded) or the path of an ``.npz`` file with ``x_train``,
           ``y_train``, ``x_test``, ``y_test`` (see :func:`load_npz_images`).
    :param attack: The attack, one of :data:`~art_pruning_defense.benchmark.attacks.ATTACKS` (``badnets``,
           ``blended``, ``sig``, ``wanet``, ``clean-label``).
    :param poison_rate: Share of the training set (after the validation split) poisoned, in (0, 1); for the
           clean-label attacks (``sig``, ``clean-label``) the share of the target class's training images.
    :param trigger: The ``badnets`` trigger: ``"pattern"`` (ART's ``add_pattern_bd``), ``"pixel"``
           (``add_single_bd``) or ``"patch"`` (a square; see ``attack_options``).
    :param attack_options: Options of the attacks, by attack name (e.g. ``{"blended": {"alpha": 0.2}}``); see each
           attack's ``options``.
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
    :param retune_poisons: The re-tuning attack (:mod:`~art_pruning_defense.benchmark.retune`): for each k given,
           every repaired model is re-tuned on the defender's clean split plus k poisoned training images, and its
           row gains ``asr_after_retune_k<k>`` and ``clean_after_retune_k<k>``; a control row re-tunes a model
           trained without poison. Empty (the default): no re-tuning. Each k is an integer >= 0, at most the number
           of poisoned training images (checked before any training).
    """

    data: str = DIGITS
    attack: str = "badnets"
    poison_rate: float = 0.1
    trigger: str = "pattern"
    attack_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
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
    retune_poisons: Sequence[int] = ()

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
        check_number(self.poison_rate, "poison_rate", 0.0, 1.0)
        if self.trigger not in TRIGGER_NAMES:
            raise ValueError(f"trigger must be one of {', '.join(map(repr, TRIGGER_NAMES))}, got {self.trigger!r}.")
        if not isinstance(self.attack, str) or self.attack not in ATTACKS:
            raise ValueError(f"Unknown attack {self.attack!r}; expected one of: {', '.join(ATTACKS)}.")
        self.attack_options = check_attack_options(self.attack_options)
        check_int(self.target, "target", 0, MAX_TARGET)
        check_int(self.seed, "seed", 0, MAX_SEED)
        if self.is_digits and self.target >= DIGITS_N_CLASSES:
            raise ValueError(f"target must be one of the digits' classes 0..{DIGITS_N_CLASSES - 1}, got {self.target}.")
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
        registry = _defence_names()
        unknown = [d for d in self.defences if d not in registry]
        if unknown:
            raise ValueError(
                f"Unknown defence(s) {', '.join(map(repr, unknown))}; expected some of: {', '.join(registry)}."
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
        self.retune_poisons = check_retune_poisons(self.retune_poisons)

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

    def make_attack(self):
        """
        :return: The cell's attack (:class:`~art_pruning_defense.benchmark.attacks.Attack`) with its options.
        """
        return make_attack(self.attack, self.target, float(self.poison_rate), self.seed, **self.attack_params())

    def attack_params(self) -> dict[str, Any]:
        """
        :return: The options of the cell's attack (``trigger`` included for ``badnets``).
        """
        params = dict(self.attack_options.get(self.attack, {}))
        if self.attack == "badnets":
            params["trigger"] = self.trigger
        if self.attack == "pruning-aware" and params.get("base", "badnets") == "badnets":
            params["base_options"] = {**params.get("base_options", {}), "trigger": self.trigger}
        return params

    def as_dict(self) -> dict:
        """
        :return: The configuration as plain JSON-serialisable values.
        """
        values = asdict(self)
        for name, default in OPTIONAL_FIELDS.items():
            if values[name] == default or list(values[name]) == list(default):
                del values[name]
        if "retune_poisons" in values:
            values["retune_poisons"] = list(self.retune_poisons)
        values["defences"] = list(self.defences)
        values["accuracy_drops"] = list(self.accuracy_drops)
        values["attack_options"] = {name: dict(options) for name, options in self.attack_options.items()}
        return values


def check_retune_poisons(values: object, name: str = "retune_poisons") -> tuple[int, ...]:
    """
    :param values: The re-tuning attack's numbers of poisoned images.
    :param name: Its name in the messages (the command line passes ``"--retune-poisons"``).
    :return: They as a tuple of distinct integers >= 0 (empty: no re-tuning).
    :raises TypeError: If it is not a list of integers.
    :raises ValueError: If one is negative, too large, or repeated.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list of integers >= 0, got {type(values).__name__} ({values!r}).")
    what = f"{name}: each number of poisoned images"
    checked = tuple(check_int(value, what, 0, MAX_RETUNE_POISONS) for value in values)
    if len(set(checked)) != len(checked):
        raise ValueError(f"{name} must be distinct, got {list(checked)}.")
    return checked


def check_attack_options(options: object) -> dict[str, dict[str, Any]]:
    """
    :param options: Attack name → that attack's options.
    :return: A plain copy.
    :raises TypeError: If it is not a mapping of mappings.
    :raises ValueError: If an attack or an option is unknown or out of range (each attack checks its own).
    """
    if not isinstance(options, Mapping):
        raise TypeError(f"attack_options must map attack names to options, got {type(options).__name__}.")
    checked = {}
    for name, values in options.items():
        if name not in ATTACKS:
            raise ValueError(f"attack_options: unknown attack {name!r}; expected some of: {', '.join(ATTACKS)}.")
        if not isinstance(values, Mapping):
            raise TypeError(f"attack_options[{name!r}] must map option names to values, got {type(values).__name__}.")
        if name == "badnets" and "trigger" in values:
            raise ValueError("attack_options: give the badnets trigger as trigger (--trigger), not as an option.")
        if name == "pruning-aware" and isinstance(values.get("base_options"), Mapping) and "trigger" in values["base_options"]:
            raise ValueError("attack_options: give the badnets trigger as trigger (--trigger), not as a base option.")
        make_attack(name, **values)  # the attack checks its options
        checked[name] = dict(values)
    return checked


def check_target(config: BenchmarkConfig) -> int:
    """
    Check, from the labels alone (before any image is converted or any network trained), that the cell's target is
    one of the data's classes.

    :param config: A cell.
    :return: The number of classes (the largest label + 1).
    :raises ValueError: If the target is not one of them.
    """
    if config.is_digits:
        n_classes = DIGITS_N_CLASSES
    else:
        import numpy as np

        with np.load(config.data, allow_pickle=False) as arrays:
            missing = [name for name in ("y_train", "y_test") if name not in arrays.files]
            if missing:
                raise ValueError(
                    f"{config.data}: {', '.join(missing)} missing; expected x_train, y_train, x_test, y_test."
                )
            labels = [np.asarray(arrays[name]) for name in ("y_train", "y_test")]
        if any(y.dtype.kind not in "iuf" or y.size == 0 for y in labels):
            raise ValueError(f"{config.data}: y_train and y_test must hold integer labels.")
        top = max(float(np.nanmax(y)) for y in labels)
        if not np.isfinite(top) or top > MAX_TARGET:
            raise ValueError(f"{config.data}: the labels must be integers in [0, {MAX_TARGET}].")
        n_classes = int(top) + 1
    if not 0 <= config.target < n_classes:
        raise ValueError(f"target must be one of the data's classes 0..{n_classes - 1}, got {config.target}.")
    return n_classes


def training_labels(config: BenchmarkConfig) -> "Any":
    """
    :param config: A cell.
    :return: The labels of its training split (after the defender's validation split), as
             :func:`~art_pruning_defense.benchmark.data.clean_split` draws it, read without the images where the data
             is an ``.npz`` file (no TensorFlow or ART is imported).
    """
    import numpy as np

    n_valid = config.n_valid or (DIGITS_N_VALID if config.is_digits else DEFAULT_N_VALID_NPZ)  # not resolved():
    if config.is_digits:  # that imports the architectures, and TensorFlow with them
        from sklearn.datasets import load_digits

        labels = load_digits().target.astype(np.int64)
        labels = labels[np.random.default_rng(config.seed).permutation(len(labels))[:DIGITS_N_TRAIN]]
    else:
        with np.load(config.data, allow_pickle=False) as arrays:
            labels = np.asarray(arrays["y_train"]).reshape(-1).astype(np.int64)
    order = np.random.default_rng(config.seed).permutation(len(labels))
    return labels[order[n_valid:]]


def check_retune_against_poisoned(config: BenchmarkConfig) -> None:
    """
    Check, from the labels alone (before any training), that each k of ``retune_poisons`` is at most the number of
    poisoned training images of the cell.

    :raises ValueError: If one is larger, in one line.
    """
    if not config.retune_poisons:
        return
    n_poison = config.make_attack().n_poison(training_labels(config))
    too_many = [k for k in config.retune_poisons if k > n_poison]
    if too_many:
        raise ValueError(
            f"--retune-poisons {max(too_many)} is more than the {n_poison} poisoned training images of "
            f"{config.attack} at poison rate {float(config.poison_rate)!r} (seed {config.seed}); give at most "
            f"{n_poison}."
        )


# ---------------------------------------------------------------------------------------------------------------------
# The grid.
# ---------------------------------------------------------------------------------------------------------------------

#: The grid's axes: grid key → the :class:`BenchmarkConfig` field each value goes to.
GRID_AXES = {"archs": "arch", "attacks": "attack", "poison_rates": "poison_rate", "seeds": "seed"}
#: Settings shared by every cell of a grid: the fields of :class:`BenchmarkConfig` other than the axes.
GRID_SETTINGS = tuple(
    name for name in BenchmarkConfig.__dataclass_fields__ if name not in GRID_AXES.values() and name != "model"
)
#: Keys a grid file (TOML or YAML) may hold.
GRID_KEYS = tuple(GRID_AXES) + ("model",) + GRID_SETTINGS
#: Default axes: one cell, as ``art-prune benchmark`` ran before grids.
DEFAULT_AXES = {"archs": (DEFAULT_ARCH,), "attacks": ("badnets",), "poison_rates": (0.1,), "seeds": (0,)}


@dataclass
class GridConfig:
    """
    A grid of cells: every combination of architecture, attack, poison rate and seed, on one data set, with the same
    settings (defences, epochs, ...). One cell is one :class:`BenchmarkConfig`.

    :param archs: Architectures (names of :data:`art_pruning_defense.keras.ARCHITECTURES`).
    :param attacks: Attacks (names of :data:`~art_pruning_defense.benchmark.attacks.ATTACKS`).
    :param poison_rates: Poison rates, each in (0, 1).
    :param seeds: Seeds (the figures are averaged over them).
    :param model: Instead of ``archs``: a ``.keras`` model whose architecture is trained from scratch.
    :param settings: The other fields of :class:`BenchmarkConfig` (``data``, ``defences``, ``epochs``, ...).
    :param max_cells: Most cells accepted (default :data:`MAX_CELLS`); checked before any cell is made.
    """

    archs: Sequence[str] = DEFAULT_AXES["archs"]
    attacks: Sequence[str] = DEFAULT_AXES["attacks"]
    poison_rates: Sequence[float] = DEFAULT_AXES["poison_rates"]
    seeds: Sequence[int] = DEFAULT_AXES["seeds"]
    model: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    max_cells: int = MAX_CELLS

    def __post_init__(self) -> None:
        self._check_params()

    def _check_params(self) -> None:
        self.max_cells = check_positive_int(self.max_cells, "max_cells")
        for key, kinds, what in (
            ("archs", str, "architecture names"),
            ("attacks", str, "attack names"),
            ("poison_rates", numbers.Real, "numbers in (0, 1)"),
            ("seeds", numbers.Integral, "integers >= 0"),
        ):
            values = getattr(self, key)
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                raise TypeError(f"{key} must be a list of {what}, got {type(values).__name__} ({values!r}).")
            if not values or any(isinstance(v, bool) or not isinstance(v, kinds) for v in values):
                raise TypeError(f"{key} must be a non-empty list of {what}, got {list(values)!r}.")
            if len(set(values)) != len(values):
                raise ValueError(f"{key} must be distinct, got {list(values)!r}.")
            setattr(self, key, tuple(values))
        n_cells = len(self.attacks) * len(self.poison_rates) * len(self.seeds)
        n_cells *= len(self.archs) if self.model is None else 1
        if n_cells > self.max_cells:
            raise ValueError(
                f"The grid has {n_cells:,} cells, more than the {self.max_cells:,} accepted; give fewer values per "
                "axis, or raise the limit (--max-cells, max_cells)."
            )
        if self.model is not None and tuple(self.archs) != DEFAULT_AXES["archs"]:
            raise ValueError(f"Give archs ({', '.join(self.archs)}) or model ({self.model}), not both.")
        if not isinstance(self.settings, Mapping):
            raise TypeError(f"settings must be a mapping, got {type(self.settings).__name__}.")
        unknown = sorted(set(self.settings) - set(GRID_SETTINGS))
        if unknown:
            raise ValueError(f"Unknown setting(s) {', '.join(unknown)}; expected some of: {', '.join(GRID_SETTINGS)}.")
        self.settings = dict(self.settings)
        self.cells()  # every cell's configuration is checked now, before any work

    def cells(self) -> list[BenchmarkConfig]:
        """
        :return: One configuration per cell, in the order they run (architecture, attack, poison rate, then seed).
        """
        cells = []
        for arch in self.archs if self.model is None else (DEFAULT_ARCH,):
            for attack in self.attacks:
                for rate in self.poison_rates:
                    for seed in self.seeds:
                        axes = {"arch": arch, "attack": attack, "poison_rate": float(rate), "seed": int(seed)}
                        cells.append(BenchmarkConfig(model=self.model, **axes, **self.settings))
        return cells

    def settings_dict(self) -> dict[str, Any]:
        """
        :return: What every cell shares (the settings, with their defaults filled in, and the model), as plain
                 JSON values: a grid may be resumed into an output only where these are equal.
        """
        values = BenchmarkConfig(**self.settings).as_dict()
        shared = {key: values[key] for key in GRID_SETTINGS if key in values}
        shared["model"] = self.model
        return json_ready(shared)

    def as_dict(self) -> dict[str, Any]:
        """
        :return: The axes and the shared settings, as plain JSON values.
        """
        axes = {key: list(getattr(self, key)) for key in GRID_AXES}
        return {"axes": axes, "settings": self.settings_dict()}


def json_ready(value: Any) -> Any:
    """
    :return: ``value`` with tuples turned into lists (recursively), as JSON gives it back.
    """
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


#: Largest grid file read (bytes).
MAX_GRID_FILE_BYTES = 1 << 20


def load_grid_file(path: str) -> dict[str, Any]:
    """
    Read a grid file holding any of :data:`GRID_KEYS`: TOML (``.toml``) or YAML (``.yaml``/``.yml``, read with
    ``yaml.safe_load``: plain values only, no tags that build objects), e.g.::

        data = "digits"                         # data: digits
        archs = ["small-cnn"]                   # archs: [small-cnn]
        attacks = ["badnets", "blended"]        # attacks: [badnets, blended]
        poison_rates = [0.1, 0.01]              # poison_rates: [0.1, 0.01]
        seeds = [0, 1, 2]                       # seeds: [0, 1, 2]
        defences = ["none", "fine-pruning"]     # defences: [none, fine-pruning]
        epochs = 30                             # epochs: 30
        [attack_options.blended]                # attack_options:
        alpha = 0.2                             #   blended: {alpha: 0.2}

    :param path: The file.
    :return: Its keys and values (checked by :class:`GridConfig` when the grid is made).
    :raises FileNotFoundError: If it does not exist.
    :raises ValueError: If its name ends otherwise, it is not valid TOML/YAML, is too large, is not a mapping of
            keys to values, or holds unknown keys.
    """
    path = os.fspath(path)
    kind = GRID_FILE_KINDS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise ValueError(f"Grid file {path}: expected a .toml, .yaml or .yml file.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Grid file {path} does not exist or is not a regular file.")
    if os.path.getsize(path) > MAX_GRID_FILE_BYTES:
        raise ValueError(f"Grid file {path} is larger than {MAX_GRID_FILE_BYTES} bytes; refused.")
    with open(path, "rb") as handle:
        raw = handle.read(MAX_GRID_FILE_BYTES + 1)
    values = _parse_toml(raw, path) if kind == "TOML" else _parse_yaml(raw, path)
    if not isinstance(values, dict) or not all(isinstance(key, str) for key in values):
        raise ValueError(f"Grid file {path} must hold a mapping of keys to values, got {type(values).__name__}.")
    unknown = sorted(set(values) - set(GRID_KEYS))
    if unknown:
        raise ValueError(
            f"Grid file {path}: unknown key(s) {', '.join(unknown)}; expected some of: {', '.join(GRID_KEYS)}."
        )
    from art_pruning_defense.benchmark.schema import validate

    validate(values, "grid", f"Grid file {path}")
    return values


#: Grid file extensions and their format.
GRID_FILE_KINDS = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML"}


def _parse_toml(raw: bytes, path: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"Grid file {path} is not valid TOML: {_short(error)}") from None


#: Most characters of a parser's message quoted in an error (it may quote the input).
MAX_QUOTED_CHARS = 300


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= MAX_QUOTED_CHARS else text[: MAX_QUOTED_CHARS - 1] + "…"


def _parse_yaml(raw: bytes, path: str) -> Any:
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """``yaml.SafeLoader`` without aliases: a few hundred bytes of them can expand to gigabytes."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.events.AliasEvent):
                mark = self.peek_event().start_mark
                raise ValueError(
                    f"Grid file {path}: YAML aliases (*name) are refused (line {mark.line + 1}); write the values out."
                )
            return super().compose_node(parent, index)

    try:
        return yaml.load(raw.decode("utf-8"), Loader=NoAliasLoader)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"Grid file {path} is not valid YAML: {_short(error)}") from None


def make_grid(values: Mapping[str, Any], source: str | None = None, max_cells: int = MAX_CELLS) -> GridConfig:
    """
    :param values: Grid keys (:data:`GRID_KEYS`) and their values, from a grid file and/or the command line.
    :param source: Where they come from, put before an error message (e.g. the grid file's path).
    :param max_cells: Most cells accepted (see :data:`MAX_CELLS`).
    :return: The grid, every cell checked.
    :raises ValueError: If a key is unknown or a value out of range.
    :raises TypeError: If a value has the wrong type.
    """
    unknown = sorted(set(values) - set(GRID_KEYS))
    if unknown:
        raise ValueError(f"Unknown grid key(s) {', '.join(unknown)}; expected some of: {', '.join(GRID_KEYS)}.")
    axes = {key: values[key] for key in GRID_AXES if key in values}
    settings = {key: values[key] for key in GRID_SETTINGS if key in values}
    try:
        return GridConfig(model=values.get("model"), settings=settings, max_cells=max_cells, **axes)
    except (TypeError, ValueError, FileNotFoundError) as error:
        prefix = "" if source is None else f"{source}: "
        raise type(error)(prefix + _short(error)) from None
