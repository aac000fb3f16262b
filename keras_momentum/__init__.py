"""keras_momentum: momentum-family optimizers, schedules and TensorBoard diagnostics for Keras 3."""

from keras_momentum import callbacks, models, optimizers, schedules
from keras_momentum.batch_norm import update_batch_norm
from keras_momentum.lr_finder import find_learning_rate

__version__ = "0.1.0"
