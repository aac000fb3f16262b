"""Cosine annealing with warm restarts (SGDR)."""

import math

import keras
from keras import ops

from keras_momentum.schedules import _common, _validation


@keras.saving.register_keras_serializable(package="keras_momentum")
class CosineRestarts(_common.Schedule):
    """Cosine annealing restarted at growing intervals (SGDR).

    Cycle `i` (counting from 0) starts at step `S_i` and lasts `T_i` steps:

    ```
    T_i   = first_decay_steps * t_mul ** i
    S_i   = T_0 + ... + T_(i-1)       (= first_decay_steps * i when t_mul == 1)
    lr(t) = min_learning_rate + m_mul ** i * (initial_learning_rate - min_learning_rate)
            * (1 + cos(pi * (t - S_i) / T_i)) / 2          for S_i <= t < S_(i+1)
    ```

    With `m_mul=1` and an integer `t_mul` this equals
    `torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(T_0=first_decay_steps, T_mult=t_mul,
    eta_min=min_learning_rate)`. Differences: `t_mul` may be any float >= 1, and `m_mul` scales
    the height of each restart above the minimum (torch has no such argument).

    Args:
        initial_learning_rate: float >= 0, the value at step 0.
        first_decay_steps: int >= 1, length of the first cycle.
        t_mul: float >= 1, factor by which each cycle is longer than the previous one.
        m_mul: float >= 0, factor by which each restart's height above the minimum shrinks.
        min_learning_rate: float in [0, initial_learning_rate], the value each cycle decays to.

    Reference:
        Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017.
    """

    def __init__(
        self,
        initial_learning_rate,
        first_decay_steps,
        t_mul=2.0,
        m_mul=1.0,
        min_learning_rate=0.0,
    ):
        self.initial_learning_rate = _validation.non_negative(
            "initial_learning_rate", initial_learning_rate
        )
        self.first_decay_steps = _validation.integer(
            "first_decay_steps", first_decay_steps, minimum=1
        )
        self.t_mul = _validation.real("t_mul", t_mul)
        if self.t_mul < 1.0:
            raise ValueError(f"`t_mul` must be >= 1, got {t_mul!r}")
        self.m_mul = _validation.non_negative("m_mul", m_mul)
        self.min_learning_rate = _validation.in_interval(
            "min_learning_rate", min_learning_rate, 0.0, self.initial_learning_rate,
            closed_high=True,
        )

    def _cycle_start(self, cycle):
        if self.t_mul == 1.0:
            return self.first_decay_steps * cycle
        return self.first_decay_steps * (ops.power(self.t_mul, cycle) - 1.0) / (self.t_mul - 1.0)

    def __call__(self, step):
        step = ops.maximum(_common.as_step(step), 0.0)
        length_ratio = step / self.first_decay_steps
        if self.t_mul == 1.0:
            cycle = ops.floor(length_ratio)
        else:
            cycle = ops.floor(
                ops.log1p(length_ratio * (self.t_mul - 1.0)) / math.log(self.t_mul)
            )
            # The logarithm is inexact in float32: move to the neighbouring cycle when the step
            # falls outside the one found, so that restarts happen exactly on their step.
            cycle = ops.where(step >= self._cycle_start(cycle + 1.0), cycle + 1.0, cycle)
            cycle = ops.where(step < self._cycle_start(cycle), cycle - 1.0, cycle)
        start = self._cycle_start(cycle)
        length = self.first_decay_steps * ops.power(self.t_mul, cycle)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * (step - start) / length))
        amplitude = self.initial_learning_rate - self.min_learning_rate
        height = ops.power(self.m_mul, cycle) * amplitude
        return self.min_learning_rate + height * cosine

    def value_range(self):
        # Restarts peak at initial · m_mul^k: unbounded above when m_mul > 1.
        high = _common._plain(self.initial_learning_rate) if self.m_mul <= 1.0 else math.inf
        return 0.0, high

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "first_decay_steps": self.first_decay_steps,
            "t_mul": self.t_mul,
            "m_mul": self.m_mul,
            "min_learning_rate": self.min_learning_rate,
        }
