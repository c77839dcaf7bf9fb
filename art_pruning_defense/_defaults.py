"""
Defaults shared by the library and the command line; plain constants, so that ``art-prune`` reads them without
importing TensorFlow.
"""

#: The fine-tuning epochs we recommend (and the detector's and benchmark's default) when fine-pruning.
RECOMMENDED_FINE_TUNE_EPOCHS = 20

#: The benchmark's built-in architectures (builders in :mod:`art_pruning_defense.keras._architectures`).
ARCH_NAMES = ("small-cnn", "resnet20", "vgg11-bn")
