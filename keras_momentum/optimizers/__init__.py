"""Momentum-family optimizers for Keras 3."""

from keras_momentum.optimizers.agg_mo import AggMo
from keras_momentum.optimizers.base import MomentumOptimizer
from keras_momentum.optimizers.instrumented import instrument
from keras_momentum.optimizers.lars import LARS
from keras_momentum.optimizers.lookahead import Lookahead
from keras_momentum.optimizers.qhm import QHM
from keras_momentum.optimizers.schedule_free_sgd import ScheduleFreeSGD
from keras_momentum.optimizers.sgd import SGD
