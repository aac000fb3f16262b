"""TensorBoard scalars and histograms of the gradients each optimizer update received."""

import numbers

from keras_momentum.callbacks._logger import OptimizerLogger

GLOBAL_SCALARS = (
    "gradient_norm/global",
    "gradient_norm/global_clipped",
    "update_ratio/global",
    "velocity_norm/global",
    "nonfinite_steps",
)


class GradientNormLogger(OptimizerLogger):
    """Logs gradient norms, the relative update size and gradient histograms.

    With gradients `g_i` of the trainable variables `θ_i`, as the optimizer's update
    receives them (averaged over the micro-batches under `gradient_accumulation_steps`,
    divided by the loss scale under a `LossScaleOptimizer`), each logged update writes:

    * `gradient_norm/global`: `sqrt(Σ_i ‖g_i‖²)`, before `clipnorm`/`global_clipnorm`/
      `clipvalue`;
    * `gradient_norm/global_clipped`: the same norm after clipping;
    * `gradient_norm/<variable path>`: `‖g_i‖` for each variable, when `per_layer` (paths
      shared by two variables get a `_1`, `_2`, ... suffix, so tags never collide);
    * `update_ratio/global`: `‖Δθ‖ / ‖θ‖` over all variables, the step's size relative to
      the weights (`θ` before the update);
    * `velocity_norm/global`: the norm of all velocity (momentum) slots after the update,
      for optimizers that keep them;
    * `gradient_histogram/<variable path>`: every `histogram_freq` updates, a 30-bucket
      histogram of each gradient's values between its minimum and maximum.

    Norms are sums over all entries (for a sparse `IndexedSlices` gradient, over the rows
    it holds). `gradient_norm/global_clipped` is written only when the optimizer clips
    (`clipnorm`, `clipvalue`, `global_clipnorm`, `adaptive_clipnorm`). Steps, run directory,
    wrappers and failure handling are as for `LearningRateLogger`.

    Cost: on the updates that are logged, the step takes one pass over the gradients, and
    for `update_ratio` a copy of the weights and two passes over them, for `velocity_norm`
    one pass over the velocities; `update_ratio=False` and `velocity_norm=False` leave
    those out. Histograms add one pass over the gradients when due. Executions in which
    nothing is logged run a train function without statistics.

    Args:
        log_dir: directory of the TensorBoard logs, as given to `keras.callbacks.TensorBoard`.
        update_freq: int >= 1; log the updates whose number is a multiple of it. Defaults
            to 1.
        per_layer: bool, also log the norm of each variable's gradient. Defaults to True.
        histogram_freq: int >= 0; write gradient histograms of the updates whose number is
            a multiple of it (the latest such update when one `steps_per_execution` call
            covers several). 0, the default, writes none.
        flush_secs: a record reaches the disk at most this many seconds after its update.
            Defaults to 10.
        update_ratio: bool, log `update_ratio/global`. Defaults to True.
        velocity_norm: bool, log `velocity_norm/global`. Defaults to True.

    Example:

        model.fit(x, y, callbacks=[GradientNormLogger("logs", histogram_freq=100)])
    """

    def __init__(self, log_dir, update_freq=1, per_layer=True, histogram_freq=0, flush_secs=10.0,
                 update_ratio=True, velocity_norm=True):
        super().__init__(log_dir, update_freq=update_freq, flush_secs=flush_secs)
        for name, value in (("per_layer", per_layer), ("update_ratio", update_ratio),
                            ("velocity_norm", velocity_norm)):
            if not isinstance(value, bool):
                raise TypeError(f"`{name}` must be a bool, got {value!r}")
        if (
            isinstance(histogram_freq, bool)
            or not isinstance(histogram_freq, numbers.Integral)
            or histogram_freq < 0
        ):
            raise ValueError(f"`histogram_freq` must be an int >= 0, got {histogram_freq!r}")
        self.per_layer = per_layer
        self.update_ratio = update_ratio
        self.velocity_norm = velocity_norm
        self.histogram_freq = int(histogram_freq)

    def _kinds(self):
        wanted = {"gradient_norms": True, "update_ratio": self.update_ratio,
                  "velocity_norm": self.velocity_norm, "histograms": bool(self.histogram_freq)}
        return [kind for kind, on in wanted.items() if on]

    def _histogram_every(self):
        return self.histogram_freq

    def _tags(self, columns):
        # Another logger of the optimizer may record the scalars this one leaves out.
        left_out = {"update_ratio/global": not self.update_ratio,
                    "velocity_norm/global": not self.velocity_norm}
        out = {name: columns[name] for name in GLOBAL_SCALARS
               if name in columns and not left_out.get(name)}
        if self.per_layer:
            out.update(
                (name, column) for name, column in columns.items()
                if name.startswith("gradient_norm/") and name not in GLOBAL_SCALARS
            )
        return out
