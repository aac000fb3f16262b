"""Multi-step decay: multiply the learning rate by `gamma` at each milestone."""

import keras
from keras import ops

from keras_momentum.schedules import _common, _validation


@keras.saving.register_keras_serializable(package="keras_momentum")
class MultiStepDecay(_common.Schedule):
    """Multiplies the learning rate by `gamma` at each of the given steps.

    ```
    lr(t) = initial_learning_rate * gamma ** (number of milestones m with m <= t)
    ```

    Same values as `torch.optim.lr_scheduler.MultiStepLR(milestones, gamma)` after `t` calls of
    `scheduler.step()`. Milestones in epochs: `milestones=epochs([30, 60, 80], steps_per_epoch)`.

    Args:
        initial_learning_rate: float >= 0, the value before the first milestone.
        milestones: strictly increasing list of ints >= 1, the first steps of each new level.
        gamma: float > 0, the multiplier applied at each milestone.

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """

    def __init__(self, initial_learning_rate, milestones, gamma=0.1):
        self.initial_learning_rate = _validation.non_negative(
            "initial_learning_rate", initial_learning_rate
        )
        self.milestones = _validation.increasing_integers("milestones", milestones, minimum=1)
        self.gamma = _validation.positive("gamma", gamma)

    def __call__(self, step):
        step = _common.as_step(step)
        passed = ops.sum(
            ops.cast(ops.greater_equal(step, ops.array(self.milestones, "float32")), "float32")
        )
        return self.initial_learning_rate * ops.power(self.gamma, passed)

    def value_range(self):
        initial = _common._plain(self.initial_learning_rate)
        last = initial * self.gamma ** len(self.milestones)
        return min(initial, last), max(initial, last)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
        }
