"""Linear interpolation between two values, then constant."""

import keras
from keras import ops

from keras_momentum.schedules import _common, _validation


@keras.saving.register_keras_serializable(package="keras_momentum")
class Linear(_common.Schedule):
    """Moves in a straight line from `initial_value` to `final_value` over `steps` steps.

    ```
    v(t) = initial_value + (final_value - initial_value) * min(t, steps) / steps
    ```

    `torch.optim.lr_scheduler.LinearLR(start_factor, end_factor, total_iters)` on a base rate
    `lr` is `Linear(lr * start_factor, lr * end_factor, total_iters)`. Either value may be the
    larger, so this serves for linear warmup, linear decay and momentum ramps alike.

    Args:
        initial_value: float, the value at step 0.
        final_value: float, the value from step `steps` on.
        steps: int >= 1, number of steps to go from one value to the other.

    Reference:
        Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017
        (gradual linear warmup).
    """

    def __init__(self, initial_value, final_value, steps):
        self.initial_value = _validation.real("initial_value", initial_value)
        self.final_value = _validation.real("final_value", final_value)
        self.steps = _validation.integer("steps", steps, minimum=1)

    def __call__(self, step):
        progress = ops.clip(_common.as_step(step) / self.steps, 0.0, 1.0)
        return self.initial_value + (self.final_value - self.initial_value) * progress

    def value_range(self):
        values = (self.initial_value, self.final_value)
        return _common.hull(*[_common.value_range(v) for v in values])

    def get_config(self):
        return {
            "initial_value": self.initial_value,
            "final_value": self.final_value,
            "steps": self.steps,
        }
