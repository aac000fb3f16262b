"""The saved state of stochastic weight averaging, and its annealed learning rate."""

import math

import keras
from keras import ops

# The model attribute that holds the state while training: Keras saves and loads every
# saveable attribute of a model, so `save_weights` (and `BackupAndRestore`) carry it.
ATTRIBUTE = "_stochastic_weight_averaging"


class WeightAverage(keras.layers.Layer):
    """The running average of some weights, as layer weights, so Keras saves it.

    Not a layer of the model: it is set on the model with `object.__setattr__`, out of
    reach of the model's tracking, so `model.weights` and `get_weights()` are unchanged,
    while saving (which walks every attribute of the model) stores its variables under
    the model's `_stochastic_weight_averaging` entry and loading restores them.

    Holds one average per float weight, the number of weight sets averaged, the last
    epoch averaged (-1 for none) and the learning rate at the start of annealing (NaN
    until known).
    """

    def __init__(self, weights, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.averages = [
            self.add_weight(
                shape=w.shape, dtype=w.dtype, initializer="zeros", trainable=False,
                name=f"average_{i}",
            )
            for i, w in enumerate(weights)
        ]
        self.count = self._scalar("count", "int32", 0)
        self.averaged_epoch = self._scalar("averaged_epoch", "int32", -1)
        self.initial_learning_rate = self._scalar("initial_learning_rate", "float32", math.nan)
        self.built = True

    def _scalar(self, name, dtype, value):
        return self.add_weight(
            shape=(), dtype=dtype, initializer=keras.initializers.Constant(value),
            trainable=False, name=name,
        )

    def reset(self):
        for average in self.averages:
            average.assign(ops.zeros(average.shape, average.dtype))
        self.count.assign(0)
        self.averaged_epoch.assign(-1)
        self.initial_learning_rate.assign(math.nan)

    def add(self, weights, epoch):
        """`ā ← ā + (w − ā)/(n + 1)` for each weight; `n ← n + 1`."""
        n = int(ops.convert_to_numpy(self.count))
        for average, weight in zip(self.averages, weights):
            value = ops.cast(weight, average.dtype)
            if n:
                value = average.value + (value - average.value) * (1.0 / (n + 1))
            else:
                value = ops.copy(value)  # JAX donates the weights' buffers to the train step
            average.assign(value)
        self.count.assign(n + 1)
        self.averaged_epoch.assign(epoch)

    def load_own_variables(self, store):
        if not len(store.keys()):
            # Weights saved without averaging state (before the callback was attached).
            self.reset()
            return
        super().load_own_variables(store)

    def read(self, name):
        return ops.convert_to_numpy(getattr(self, name)).item()


@keras.saving.register_keras_serializable(package="keras_momentum")
class AnnealedLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """`α·swa_learning_rate + (1 − α)·base(step)`, for `StochasticWeightAveraging`.

    Put in place of an optimizer's schedule (or zero-argument callable) `base` while
    `StochasticWeightAveraging` anneals; `alpha` is that epoch's `α`.
    """

    def __init__(self, base, swa_learning_rate, alpha):
        self.base = base
        self.swa_learning_rate = float(swa_learning_rate)
        self.alpha = float(alpha)

    def __call__(self, step):
        if self.alpha == 1.0:
            return ops.convert_to_tensor(self.swa_learning_rate, "float32")
        if isinstance(self.base, keras.optimizers.schedules.LearningRateSchedule):
            base = self.base(step)
        else:
            base = self.base()
        return self.alpha * self.swa_learning_rate + (1.0 - self.alpha) * ops.cast(base, "float32")

    def get_config(self):
        return {
            "base": keras.saving.serialize_keras_object(self.base),
            "swa_learning_rate": self.swa_learning_rate,
            "alpha": self.alpha,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["base"] = keras.saving.deserialize_keras_object(config["base"])
        return cls(**config)


def anneal_fraction(epochs_since_start, anneal_epochs):
    """`α` of the epoch `k = epochs_since_start` epochs after the start (SWALR's cosine)."""
    if anneal_epochs == 0:
        return 1.0
    t = min(1.0, (epochs_since_start + 1) / anneal_epochs)
    return (1.0 - math.cos(math.pi * t)) / 2.0
