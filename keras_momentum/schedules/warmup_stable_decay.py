"""Warmup-stable-decay (trapezoidal) schedule."""

import math

import keras
from keras import ops

from keras_momentum.schedules import _common, _validation

DECAY_SHAPES = ("linear", "cosine", "sqrt")


@keras.saving.register_keras_serializable(package="keras_momentum")
class WarmupStableDecay(_common.Schedule):
    """Linear warmup, a long constant stretch at the peak, then a short decay to a floor.

    With `W, S, D` the three phase lengths, `peak` and `low = min_learning_rate`:

    ```
    t < W:              peak * t / W
    W <= t < W + S:     peak
    W + S <= t:         low + (peak - low) * f(p),   p = min((t - W - S) / D, 1)
       f(p) = 1 - p                 "linear"
              (1 + cos(pi p)) / 2   "cosine"
              1 - sqrt(p)           "sqrt"
    ```

    Every phase starts where the previous one ends, so the schedule is continuous; it stays at
    `min_learning_rate` from step `W + S + D` on. Because the stable phase does not depend on
    the run's length, a checkpoint taken during it can be decayed later or trained further.

    Args:
        peak_learning_rate: float >= 0, the value of the stable phase.
        warmup_steps: int >= 0, length of the linear warmup from 0.
        stable_steps: int >= 0, length of the constant phase.
        decay_steps: int >= 1, length of the decay.
        min_learning_rate: float in [0, peak_learning_rate], the final value.
        decay_shape: one of "linear", "cosine", "sqrt".

    Reference:
        Hu et al., "MiniCPM: Unveiling the Potential of Small Language Models with Scalable
        Training Strategies", 2024; Hägele et al., "Scaling Laws and Compute-Optimal Training
        Beyond Fixed Training Durations", NeurIPS 2024 (the "1 - sqrt" cooldown).
    """

    def __init__(
        self,
        peak_learning_rate,
        warmup_steps,
        stable_steps,
        decay_steps,
        min_learning_rate=0.0,
        decay_shape="linear",
    ):
        self.peak_learning_rate = _validation.non_negative(
            "peak_learning_rate", peak_learning_rate
        )
        self.warmup_steps = _validation.integer("warmup_steps", warmup_steps, minimum=0)
        self.stable_steps = _validation.integer("stable_steps", stable_steps, minimum=0)
        self.decay_steps = _validation.integer("decay_steps", decay_steps, minimum=1)
        self.min_learning_rate = _validation.in_interval(
            "min_learning_rate", min_learning_rate, 0.0, self.peak_learning_rate,
            closed_high=True,
        )
        self.decay_shape = _validation.choice("decay_shape", decay_shape, DECAY_SHAPES)

    def _remaining(self, progress):
        if self.decay_shape == "linear":
            return 1.0 - progress
        if self.decay_shape == "cosine":
            return 0.5 * (1.0 + ops.cos(math.pi * progress))
        return 1.0 - ops.sqrt(progress)

    def __call__(self, step):
        step = _common.as_step(step)
        peak, low = self.peak_learning_rate, self.min_learning_rate
        warm = peak * ops.clip(step / max(self.warmup_steps, 1), 0.0, 1.0)
        decay_start = self.warmup_steps + self.stable_steps
        progress = ops.clip((step - decay_start) / self.decay_steps, 0.0, 1.0)
        decayed = low + (peak - low) * self._remaining(progress)
        return ops.where(step < self.warmup_steps, warm, decayed)

    def value_range(self):
        return 0.0, _common._plain(self.peak_learning_rate)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "stable_steps": self.stable_steps,
            "decay_steps": self.decay_steps,
            "min_learning_rate": self.min_learning_rate,
            "decay_shape": self.decay_shape,
        }
