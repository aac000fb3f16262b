"""TensorBoard scalars and histograms of the gradients each optimizer update received."""

import numbers

import numpy as np

from keras_momentum.callbacks._optimizer_logger import OptimizerLogger

GLOBAL_SCALARS = (
    "gradient_norm/global",
    "gradient_norm/global_clipped",
    "update_ratio/global",
    "velocity_norm/global",
    "nonfinite_steps",
)
HISTOGRAM_PREFIX = "gradient_histogram/"


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
    it holds). Steps, run directory, optimizer requirements, `steps_per_execution` and
    failure handling are as for `LearningRateLogger`: the step is the number of updates
    done, the first update is step 1, and records go to `<log_dir>/train`.

    Cost: on the updates that are logged, the train step makes one pass over the
    gradients, one over the velocities and one over the weights (`tf.nn.l2_loss` per
    variable on TensorFlow); histograms add one pass over every gradient, only when
    `histogram_freq > 0`. `update_ratio=False` and `velocity_norm=False` leave out the
    passes only those scalars need: with both off the step reads the gradients only.
    Executions with no logged update and no histogram due run a train function without
    statistics (see `LearningRateLogger`). `update_ratio` needs `Δθ`: for this package's
    `SGD` without Nesterov or decoupled weight decay it is a multiple of the velocity (or
    of the gradient), otherwise the step keeps a copy of the weights to subtract. Python
    reads the records in batches (see `LearningRateLogger`).

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
        self._last_histogram_step = 0

    def _statistics_kinds(self):
        wanted = {"gradient_norms": True, "update_ratio": self.update_ratio,
                  "velocity_norm": self.velocity_norm, "per_variable_norms": self.per_layer}
        return [kind for kind, on in wanted.items() if on]

    def _extra_statistics(self):
        return {"histograms": self.histogram_freq} if self.histogram_freq else {}

    def _histogram_every(self):
        return self.histogram_freq

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._last_histogram_step = self._predicted

    def _columns(self, columns):
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

    def _write_histograms(self, writer, histograms):
        step, rows = histograms
        if step <= self._last_histogram_step:
            return
        for path, (value_range, counts) in rows.items():
            writer.histogram(HISTOGRAM_PREFIX + path, histogram_buckets(value_range, counts), step)
        self._last_histogram_step = step


def histogram_buckets(value_range, counts):
    """The `[k, 3]` (left edge, right edge, count) array of `k` equal buckets over a range.

    `value_range` is `(low, high)` and `counts[j]` the number of values in bucket `j`, as
    `InstrumentationMixin` records them.
    """
    low, high = (float(x) for x in np.asarray(value_range).reshape(2))
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    edges = np.linspace(low, high, counts.size + 1)
    return np.stack([edges[:-1], edges[1:], counts], axis=1)
