"""Model wrappers that change how `fit` trains a model."""

from keras_momentum.models.sharpness_aware_minimization import SharpnessAwareMinimization

__all__ = ["SharpnessAwareMinimization"]
