"""Cyclical learning rates: a triangle wave between two bounds."""

import keras
from keras import ops

from keras_momentum.schedules import _common, _validation

MODES = ("triangular", "triangular2", "exp_range")


@keras.saving.register_keras_serializable(package="keras_momentum")
class Cyclical(_common.Schedule):
    """Triangle wave: up from the base to the maximum in `step_size` steps, down in as many.

    With `s = step_size`, cycle index `c = floor(t / (2 s))` and position `q = t - 2 s c`:

    ```
    height(t) = 1 - |q / s - 1|                        (0 at the base, 1 at the peak)
    lr(t)     = base + (max - base) * height(t) * scale(t)
    scale(t)  = 1                  "triangular"
                0.5 ** c           "triangular2"  (amplitude halves every cycle)
                gamma ** t         "exp_range"
    ```

    Same values as `torch.optim.lr_scheduler.CyclicLR(base_lr, max_lr, step_size_up=step_size,
    mode=mode, gamma=gamma)` after `t` calls of `scheduler.step()`.

    Args:
        base_learning_rate: float >= 0, the lower bound.
        max_learning_rate: float >= base_learning_rate, the upper bound.
        step_size: int >= 1, steps in each half cycle.
        mode: one of "triangular", "triangular2", "exp_range".
        gamma: float > 0, per-step amplitude factor for "exp_range" (ignored otherwise).

    Reference:
        Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017.
    """

    def __init__(
        self,
        base_learning_rate,
        max_learning_rate,
        step_size,
        mode="triangular",
        gamma=1.0,
    ):
        self.base_learning_rate = _validation.non_negative(
            "base_learning_rate", base_learning_rate
        )
        self.max_learning_rate = _validation.real("max_learning_rate", max_learning_rate)
        if self.max_learning_rate < self.base_learning_rate:
            raise ValueError(
                f"`max_learning_rate` must be >= `base_learning_rate` "
                f"({self.base_learning_rate!r}), got {max_learning_rate!r}"
            )
        self.step_size = _validation.integer("step_size", step_size, minimum=1)
        self.mode = _validation.choice("mode", mode, MODES)
        self.gamma = _validation.positive("gamma", gamma)

    def __call__(self, step):
        step = _common.as_step(step)
        period = 2.0 * self.step_size
        cycle = ops.floor(step / period)
        position = step - period * cycle
        height = 1.0 - ops.abs(position / self.step_size - 1.0)
        if self.mode == "triangular2":
            height = height * ops.power(0.5, cycle)
        elif self.mode == "exp_range":
            height = height * ops.power(self.gamma, step)
        return self.base_learning_rate + (self.max_learning_rate - self.base_learning_rate) * height

    def value_range(self):
        return (_common._plain(self.base_learning_rate),
                max(_common._plain(self.max_learning_rate), _common._plain(self.base_learning_rate)))

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "max_learning_rate": self.max_learning_rate,
            "step_size": self.step_size,
            "mode": self.mode,
            "gamma": self.gamma,
        }
