"""Step decay: multiply the learning rate by `gamma` every `step_size` steps."""

import math

import keras
from keras import ops

from keras_momentum.schedules import _common, _validation


@keras.saving.register_keras_serializable(package="keras_momentum")
class StepDecay(_common.Schedule):
    """Multiplies the learning rate by `gamma` once every `step_size` steps.

    ```
    lr(t) = initial_learning_rate * gamma ** floor(t / step_size)
    ```

    Same values as `torch.optim.lr_scheduler.StepLR(step_size, gamma)` after `t` calls of
    `scheduler.step()`. To decay every 30 epochs, pass
    `step_size=keras_momentum.schedules.epochs(30, steps_per_epoch)`.

    Args:
        initial_learning_rate: float >= 0, the value for steps `0 .. step_size - 1`.
        step_size: int >= 1, number of steps between two decays.
        gamma: float > 0, the multiplier applied at each decay.

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (learning rate
        divided by 10 at fixed points of training).
    """

    def __init__(self, initial_learning_rate, step_size, gamma=0.1):
        self.initial_learning_rate = _validation.non_negative(
            "initial_learning_rate", initial_learning_rate
        )
        self.step_size = _validation.integer("step_size", step_size, minimum=1)
        self.gamma = _validation.positive("gamma", gamma)

    def __call__(self, step):
        step = _common.as_step(step)
        decays = ops.floor(step / self.step_size)
        return self.initial_learning_rate * ops.power(self.gamma, decays)

    def value_range(self):
        initial = _common._plain(self.initial_learning_rate)
        return (0.0, initial) if self.gamma <= 1.0 else (initial, math.inf)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "step_size": self.step_size,
            "gamma": self.gamma,
        }
