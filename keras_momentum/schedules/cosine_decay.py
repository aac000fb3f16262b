"""Half-cosine decay to a floor, then constant."""

import math

import keras
from keras import ops

from keras_momentum.schedules import _common, _validation


@keras.saving.register_keras_serializable(package="keras_momentum")
class CosineDecay(_common.Schedule):
    """Anneals along half a cosine from `initial_learning_rate` to `min_learning_rate`.

    ```
    p(t)  = min(t, decay_steps) / decay_steps
    lr(t) = min_learning_rate
            + (initial_learning_rate - min_learning_rate) * (1 + cos(pi * p(t))) / 2
    ```

    For `t <= decay_steps` this equals `torch.optim.lr_scheduler.CosineAnnealingLR(T_max=
    decay_steps, eta_min=min_learning_rate)`. Deliberate difference: afterwards torch's value
    climbs back up the cosine, while this schedule stays at `min_learning_rate`.

    Args:
        initial_learning_rate: float >= 0, the value at step 0.
        decay_steps: int >= 1, the step at which the minimum is reached.
        min_learning_rate: float in [0, initial_learning_rate], the final value.

    Reference:
        Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017
        (one cosine cycle without restart).
    """

    def __init__(self, initial_learning_rate, decay_steps, min_learning_rate=0.0):
        self.initial_learning_rate = _validation.non_negative(
            "initial_learning_rate", initial_learning_rate
        )
        self.decay_steps = _validation.integer("decay_steps", decay_steps, minimum=1)
        self.min_learning_rate = _validation.in_interval(
            "min_learning_rate", min_learning_rate, 0.0, self.initial_learning_rate,
            closed_high=True,
        )

    def __call__(self, step):
        step = _common.as_step(step)
        progress = ops.clip(step / self.decay_steps, 0.0, 1.0)
        amplitude = self.initial_learning_rate - self.min_learning_rate
        return self.min_learning_rate + amplitude * 0.5 * (1.0 + ops.cos(math.pi * progress))

    def value_range(self):
        return _common.hull(_common.value_range(self.initial_learning_rate),
                            _common.value_range(self.min_learning_rate))

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "min_learning_rate": self.min_learning_rate,
        }
