"""Callbacks: TensorBoard diagnostics and a plateau reducer that works with schedules."""

from keras_momentum.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau
from keras_momentum.callbacks.gradient_norm_logger import GradientNormLogger
from keras_momentum.callbacks.learning_rate_logger import LearningRateLogger
from keras_momentum.callbacks.schedule_free_evaluation import ScheduleFreeEvaluation
from keras_momentum.callbacks.stochastic_weight_averaging import StochasticWeightAveraging
