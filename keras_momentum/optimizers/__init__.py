"""Momentum-family optimizers for Keras 3."""

from keras_momentum.optimizers.base import MomentumOptimizer
from keras_momentum.optimizers.instrumentation import instrument
from keras_momentum.optimizers.sgd import SGD
