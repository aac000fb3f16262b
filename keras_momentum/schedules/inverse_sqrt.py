"""Linear warmup followed by inverse-square-root decay."""

import keras
from keras import ops

from keras_momentum.schedules import _common, _validation


@keras.saving.register_keras_serializable(package="keras_momentum")
class InverseSqrt(_common.Schedule):
    """Rises linearly to `peak_learning_rate` in `warmup_steps` steps, then decays as `1/sqrt(t)`.

    ```
    lr(t) = peak * t / W             for t < W
            peak * sqrt(W / t)       for t >= W          (W = warmup_steps)
    ```

    The two pieces meet at `peak` for `t = W`, so the schedule is continuous.

    The Transformer ("Noam") rate of Vaswani et al., defined for step numbers `s >= 1` as
    `noam(s) = d_model ** -0.5 * min(s ** -0.5, s * W ** -1.5)`, equals
    `InverseSqrt(peak_learning_rate=d_model ** -0.5 * W ** -0.5, warmup_steps=W)(s)` for every
    `s >= 1`: for `s <= W` the minimum is `s * W ** -1.5`, i.e. `peak * s / W`; for `s >= W` it is
    `s ** -0.5`, i.e. `peak * sqrt(W / s)`. The offset: Noam numbers the first update `s = 1`,
    while Keras evaluates the schedule at the 0-based `optimizer.iterations`. So update number
    `t` (from 0) gets `noam(t)` here where counting from 1 gives `noam(t + 1)`: the same curve, one
    update later, with a rate of 0 for update 0.

    Args:
        peak_learning_rate: float >= 0, the value at step `warmup_steps`.
        warmup_steps: int >= 1, length of the linear warmup.

    Reference:
        Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (section 5.3).
    """

    def __init__(self, peak_learning_rate, warmup_steps):
        self.peak_learning_rate = _validation.non_negative(
            "peak_learning_rate", peak_learning_rate
        )
        self.warmup_steps = _validation.integer("warmup_steps", warmup_steps, minimum=1)

    def __call__(self, step):
        step = _common.as_step(step)
        warmup = self.warmup_steps
        rising = step / warmup
        falling = ops.sqrt(warmup / ops.maximum(step, float(warmup)))
        return self.peak_learning_rate * ops.where(step < warmup, rising, falling)

    def value_range(self):
        return 0.0, _common._plain(self.peak_learning_rate)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
        }
