"""Demon: decaying momentum."""

import keras
from keras import ops

from keras_momentum.schedules import _common, _validation


@keras.saving.register_keras_serializable(package="keras_momentum")
class DemonMomentum(_common.Schedule):
    """Momentum that decays so that its total contribution to future steps falls linearly.

    With `b = initial_momentum`, `T = total_steps` and `r(t) = max(1 - t / T, 0)`:

    ```
    beta(t) = b * r(t) / ((1 - b) + b * r(t))
    ```

    `beta(t) / (1 - beta(t))`, the summed weight a gradient keeps in all later updates, equals
    `r(t) * b / (1 - b)`: it goes linearly to 0. The momentum is `b` at step 0 and 0 from step
    `T` on. Pass it as `momentum=` to an optimizer of this package; it subclasses
    `LearningRateSchedule` only because that is the Keras interface for step-dependent values.

    Args:
        initial_momentum: float in [0, 1), the momentum at step 0.
        total_steps: int >= 1, the step at which momentum reaches 0.

    Reference:
        Chen et al., "Demon: Improved Neural Network Training with Momentum Decay", ICASSP 2022.
    """

    def __init__(self, initial_momentum, total_steps):
        self.initial_momentum = _validation.in_interval(
            "initial_momentum", initial_momentum, 0.0, 1.0
        )
        self.total_steps = _validation.integer("total_steps", total_steps, minimum=1)

    def __call__(self, step):
        step = _common.as_step(step)
        remaining = ops.clip(1.0 - step / self.total_steps, 0.0, 1.0)
        scaled = self.initial_momentum * remaining
        return scaled / ((1.0 - self.initial_momentum) + scaled)

    def value_range(self):
        return 0.0, self.initial_momentum

    def get_config(self):
        return {"initial_momentum": self.initial_momentum, "total_steps": self.total_steps}
