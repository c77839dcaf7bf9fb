"""
Defaults shared by the library and the command line; plain constants, so that ``art-prune`` reads them without
importing TensorFlow.
"""

#: The fine-tuning epochs we recommend (and the detector's and benchmark's default) when fine-pruning.
RECOMMENDED_FINE_TUNE_EPOCHS = 20

#: The pruning strategies, in the order the docs present them (the registry is
#: :data:`art_pruning_defense.strategies.STRATEGIES`; a test keeps the two equal).
STRATEGY_NAMES = ("activation", "attack_aware", "lipschitz", "adversarial")

#: The benchmark's built-in architectures (builders in :mod:`art_pruning_defense.keras._architectures`).
ARCH_NAMES = ("small-cnn", "resnet20", "vgg11-bn")

#: The benchmark's defences, in the order a full run measures them (the registry is
#: :data:`art_pruning_defense.benchmark.defences.DEFENCES`; a test keeps the two equal).
DEFENCE_NAMES = (
    "none",
    "pruning",
    "fine-pruning",
    "attack-aware",
    "clp",
    "anp",
    "fst",
    "activation-clustering",
    "spectral-signatures",
    "neural-cleanse",
    "strip",
)

#: The triggers of the ``badnets`` attack: ART's ``add_pattern_bd`` and ``add_single_bd``, and a square patch.
TRIGGER_NAMES = ("pattern", "pixel", "patch")

#: The benchmark's attacks (the registry is :data:`art_pruning_defense.benchmark.attacks.ATTACKS`).
ATTACK_NAMES = ("badnets", "blended", "sig", "wanet", "clean-label", "pruning-aware")

#: The environment variable that makes oneDNN builds of TensorFlow allocate their CPU tensors from the C library rather
#: than from oneDNN's pool (read when TensorFlow starts; ``art-prune benchmark`` sets it, see
#: :func:`art_pruning_defense.benchmark._memory.use_system_allocator`).
SYSTEM_ALLOCATOR_VARIABLE = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"

#: The share of the defender's clean data held out of fine-pruning to calibrate the GoodNet's threshold, wherever a
#: false-positive rate is asked for (``art-prune repair --fpr``, the detector's ``false_positive_rate``, the
#: benchmark's calibrated rows). 0.3 of MNIST's 5,000 validation images leaves 1,500 to calibrate, the fewest for
#: which a 1 % threshold's realised rate lies within [0.5 %, 1.5 %] with 95 % probability (docs/guide.md,
#: "Calibrated detection", has the band per size and the measured cost of holding them out).
RECOMMENDED_CALIBRATION_FRACTION = 0.3
