"""Warmup wrapper: ramps up to any schedule's starting value, then runs that schedule."""

import math

import keras
from keras import ops

from keras_momentum.schedules import _common, _validation

SHAPES = ("linear", "cosine", "exponential", "constant")


@keras.saving.register_keras_serializable(package="keras_momentum")
class Warmup(_common.Schedule):
    """Warms up from `initial_learning_rate` to `schedule(0)`, then follows `schedule`.

    With `W = warmup_steps`, `a = initial_learning_rate`, `b = schedule(0)` and `p = t / W`:

    ```
    t <  W:  "linear":      a + (b - a) * p
             "cosine":      a + (b - a) * (1 - cos(pi * p)) / 2
             "exponential": a * (b / a) ** p                 (needs a > 0)
             "constant":    a
    t >= W:  schedule(t - W)
    ```

    The wrapped schedule is offset: it sees steps counted from the end of warmup, so its own
    decay starts from its full value and keeps its length (a `CosineDecay(lr, 1000)` still
    takes 1000 steps to decay, finishing at step `W + 1000`). The first three shapes reach `b`
    exactly as `t` reaches `W`, so the value is continuous there. `"constant"` is the classic
    constant warmup (He et al. 2016 for ResNet-110, compared with gradual warmup by Goyal et
    al. 2017): it holds `a` and jumps to `b` at `W`, a deliberate discontinuity.

    Args:
        schedule: a `LearningRateSchedule` or a float (a constant rate after warmup).
        warmup_steps: int >= 0, number of warmup steps; 0 leaves `schedule` unchanged.
        initial_learning_rate: float >= 0, the value at step 0.
        shape: one of "linear", "cosine", "exponential", "constant".

    Reference:
        Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017.
    """

    def __init__(self, schedule, warmup_steps, initial_learning_rate=0.0, shape="linear"):
        self.schedule = _common.check_nested("schedule", schedule)
        self.warmup_steps = _validation.integer("warmup_steps", warmup_steps, minimum=0)
        self.initial_learning_rate = _validation.non_negative(
            "initial_learning_rate", initial_learning_rate
        )
        self.shape = _validation.choice("shape", shape, SHAPES)
        if shape == "exponential" and self.initial_learning_rate == 0.0:
            raise ValueError(
                "`initial_learning_rate` must be > 0 when `shape` is 'exponential', "
                f"got {initial_learning_rate!r}"
            )

    def _warm(self, progress, target):
        start = self.initial_learning_rate
        if self.shape == "linear":
            return start + (target - start) * progress
        if self.shape == "cosine":
            return start + (target - start) * 0.5 * (1.0 - ops.cos(math.pi * progress))
        if self.shape == "exponential":
            return start * ops.power(target / start, progress)
        return start + 0.0 * progress

    def __call__(self, step):
        step = _common.as_step(step)
        progress = ops.clip(step / max(self.warmup_steps, 1), 0.0, 1.0)
        warm = self._warm(progress, _common.evaluate(self.schedule, ops.zeros((), "float32")))
        after = _common.evaluate(self.schedule, ops.maximum(step - self.warmup_steps, 0.0))
        return ops.where(step < self.warmup_steps, warm, after)

    def value_range(self):
        return _common.hull(_common.value_range(self.schedule),
                            _common.value_range(self.initial_learning_rate))

    def get_config(self):
        return {
            "schedule": _common.serialize_nested(self.schedule),
            "warmup_steps": self.warmup_steps,
            "initial_learning_rate": self.initial_learning_rate,
            "shape": self.shape,
        }

    @classmethod
    def from_config(cls, config):
        _common.check_config_keys(cls, config)
        config = dict(config)
        config["schedule"] = _common.deserialize_nested(config["schedule"])
        return cls(**config)
