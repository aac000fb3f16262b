"""Exponential decay with an optional staircase and a floor."""

import math

import keras
from keras import ops

from keras_momentum.schedules import _common, _validation


@keras.saving.register_keras_serializable(package="keras_momentum")
class ExponentialDecay(_common.Schedule):
    """Multiplies the learning rate by `decay_rate` every `decay_steps` steps, smoothly or in steps.

    ```
    p(t)  = t / decay_steps                (floor(t / decay_steps) if staircase)
    lr(t) = max(initial_learning_rate * decay_rate ** p(t), min_learning_rate)
    ```

    `torch.optim.lr_scheduler.ExponentialLR(gamma)` multiplies by `gamma` every step; it is this
    schedule with `decay_rate=gamma, decay_steps=1`, or in general
    `gamma = decay_rate ** (1 / decay_steps)` with `staircase=False`.

    Args:
        initial_learning_rate: float >= 0, the value at step 0.
        decay_steps: int >= 1, number of steps over which the rate is multiplied by `decay_rate`.
        decay_rate: float > 0, the multiplier per `decay_steps` steps.
        staircase: bool, whether to decay in discrete jumps every `decay_steps` steps.
        min_learning_rate: float in [0, initial_learning_rate], the floor.

    Reference:
        Keras `keras.optimizers.schedules.ExponentialDecay`, here with a floor.
    """

    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        decay_rate,
        staircase=False,
        min_learning_rate=0.0,
    ):
        self.initial_learning_rate = _validation.non_negative(
            "initial_learning_rate", initial_learning_rate
        )
        self.decay_steps = _validation.integer("decay_steps", decay_steps, minimum=1)
        self.decay_rate = _validation.positive("decay_rate", decay_rate)
        if not isinstance(staircase, bool):
            raise TypeError(f"`staircase` must be a bool, got {staircase!r}")
        self.staircase = staircase
        self.min_learning_rate = _validation.in_interval(
            "min_learning_rate", min_learning_rate, 0.0, self.initial_learning_rate,
            closed_high=True,
        )

    def __call__(self, step):
        step = _common.as_step(step)
        power = step / self.decay_steps
        if self.staircase:
            power = ops.floor(power)
        value = self.initial_learning_rate * ops.power(self.decay_rate, power)
        return ops.maximum(value, self.min_learning_rate)

    def value_range(self):
        initial = _common._plain(self.initial_learning_rate)
        if self.decay_rate > 1.0:
            return initial, math.inf
        return min(_common._plain(self.min_learning_rate), initial), initial

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "min_learning_rate": self.min_learning_rate,
        }
