"""keras_momentum: momentum-family optimizers, schedules and TensorBoard diagnostics for Keras 3."""

from keras_momentum import callbacks, models, optimizers, schedules

__version__ = "0.1.0"
