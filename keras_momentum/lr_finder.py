"""The learning-rate range test: sweep the rate over a few hundred updates, watch the loss."""

import math

import keras
import numpy as np
from keras import ops

from keras_momentum._rate_swap import innermost, own_train_step, set_learning_rate_object
from keras_momentum.lr_finder_result import RangeTestResult

try:  # Keras's own printing, which follows `keras.config.disable_interactive_logging()`
    from keras.src.utils.io_utils import print_msg
except ImportError:  # a Keras that moved its private module
    print_msg = print

MODES = ("exponential", "linear")


def find_learning_rate(
    model,
    x=None,
    y=None,
    *,
    batch_size=None,
    min_learning_rate=1e-7,
    max_learning_rate=10.0,
    steps=100,
    mode="exponential",
    smoothing=0.98,
    divergence_threshold=4.0,
    verbose=1,
):
    """Runs the learning-rate range test on a compiled model and leaves the model as it was.

    Update `k = 0 .. steps − 1` trains on one batch at the rate

        η_k = η_min · (η_max / η_min)^(k / (steps − 1))     (mode="exponential")
        η_k = η_min + (η_max − η_min) · k / (steps − 1)     (mode="linear")

    and records the batch's training loss `ℓ_k`. The loss is smoothed with an exponential
    moving average debiased as in Adam, with `β = smoothing`:

        a_k = β·a_{k−1} + (1 − β)·ℓ_k,   a_{−1} = 0,   s_k = a_k / (1 − β^(k+1))

    The sweep stops after the first update `k > 0` with `s_k > divergence_threshold ·
    min_{j<k} s_j`, or whose loss is not finite (that update is still recorded). The
    stop rule and smoothing are fastai's `lr_find`.

    Batches come from `x`, `y` and `batch_size` exactly as `model.fit` takes them
    (arrays, which are shuffled as `fit` shuffles them, a `tf.data.Dataset`, a
    `keras.utils.PyDataset` or a generator); when the data runs out before `steps`
    updates, a dataset or `PyDataset` starts again from its first batch, and a
    generator ends the sweep. The recorded rate of each update is the one the optimizer
    computed for it (float32), so an update that a `LossScaleOptimizer` skips repeats
    the rate.

    The rate is driven by a schedule put in place of the learning rate of the optimizer
    that makes the updates (looking through `inner_optimizer` of
    `keras.optimizers.LossScaleOptimizer` and `keras_momentum.optimizers.Lookahead`);
    the plateau reducer's factor counts as 1 during the sweep. Afterwards every variable
    of the model (weights, batch-normalisation statistics, seeds) and of the optimizer
    (update count, slots, learning-rate variable, plateau state) holds its value from
    before the call bit for bit; the optimizer's learning-rate object, the model's train
    function, `steps_per_execution`, `stop_training` and `history` are the ones it had.

    Args:
        model: a compiled, built `keras.Model`.
        x, y: training data, as for `model.fit`.
        batch_size: as for `model.fit` (arrays only; `None` means 32).
        min_learning_rate: float > 0, the rate of the first update.
        max_learning_rate: float > `min_learning_rate`, the rate of update `steps − 1`.
        steps: int >= 2, the most updates to run.
        mode: "exponential" (geometric spacing, the usual choice) or "linear".
        smoothing: `β`, float in [0, 1); 0 means no smoothing.
        divergence_threshold: float > 1, the stop rule's factor.
        verbose: 0 silent, 1 a progress bar and a line saying why the sweep stopped.

    Returns:
        A `RangeTestResult` with the rates, losses, smoothed losses, the suggested rate
        and `plot()`.

    Reference:
        Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017, §3.3
        (arXiv:1506.01186).
    """
    _check_number("min_learning_rate", min_learning_rate, "a float > 0", lambda v: v > 0)
    _check_number(
        "max_learning_rate", max_learning_rate, f"a float > min_learning_rate={min_learning_rate!r}",
        lambda v: v > min_learning_rate,
    )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"`steps` must be an int >= 2, got {steps!r}")
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of 'exponential', 'linear'; got {mode!r}")
    _check_number("smoothing", smoothing, "a float in [0, 1)", lambda v: 0 <= v < 1)
    _check_number("divergence_threshold", divergence_threshold, "a float > 1", lambda v: v > 1)
    if verbose not in (0, 1, True, False):
        raise ValueError(f"`verbose` must be 0 or 1, got {verbose!r}")
    optimizer = _check_model(model)

    sweep = _Sweep(
        optimizer, _Rates(float(min_learning_rate), float(max_learning_rate), steps, mode),
        float(smoothing), float(divergence_threshold), int(verbose),
    )
    saved = _Snapshot(model, optimizer)
    try:
        start = int(ops.convert_to_numpy(optimizer.iterations))
        set_learning_rate_object(optimizer, _SweepSchedule(sweep.rates, start))
        _neutral_plateau_factor(optimizer)
        model.steps_per_execution = 1  # one update, one loss, one rate per epoch of `fit`
        with own_train_step(model):
            model.train_function = None  # traced anew with the sweep's schedule
            model.fit(
                x, y, batch_size=batch_size, epochs=steps, steps_per_epoch=1,
                shuffle=_is_arrays(x), callbacks=[sweep], verbose=0,
            )
    finally:
        saved.restore()
    return sweep.result()


class _Rates:
    """The sweep's rate `η_k` (float32, in the train step)."""

    def __init__(self, low, high, steps, mode):
        self.low, self.high, self.steps, self.mode = low, high, steps, mode

    def at(self, k):
        fraction = k / (self.steps - 1)
        if self.mode == "exponential":
            return self.low * ops.exp(fraction * math.log(self.high / self.low))
        return self.low + (self.high - self.low) * fraction


class _SweepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`η_k` at optimizer step `start + k` (held at the ends outside the sweep)."""

    def __init__(self, rates, start):
        self.rates, self.start = rates, start

    def __call__(self, step):
        k = ops.clip(ops.cast(step, "float32") - float(self.start), 0.0, self.rates.steps - 1.0)
        return ops.cast(self.rates.at(k), "float32")

    def get_config(self):
        return {"start": self.start, **vars(self.rates)}


class _Sweep(keras.callbacks.Callback):
    """Records each update's loss (one update per epoch of `fit`) and applies the stop rule."""

    def __init__(self, optimizer, rates, smoothing, threshold, verbose):
        super().__init__()
        self.optimizer, self.rates = optimizer, rates
        self.smoothing, self.threshold = smoothing, threshold
        self.rate = None
        self.learning_rates, self.losses, self.smoothed = [], [], []
        self.average, self.best, self.stop_reason = 0.0, math.inf, "completed"
        self.verbose = verbose
        self.progbar = keras.utils.Progbar(
            rates.steps, verbose=verbose, stateful_metrics=("learning_rate", "loss"),
            unit_name="update",
        )

    def on_epoch_begin(self, epoch, logs=None):
        # The rate the coming update uses, as the optimizer computes it: an update skipped
        # by a LossScaleOptimizer does not advance it.
        self.rate = float(ops.convert_to_numpy(self.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        k = len(self.losses)
        loss = float(ops.convert_to_numpy((logs or {})["loss"]))
        self.average = self.smoothing * self.average + (1.0 - self.smoothing) * loss
        smoothed = self.average / (1.0 - self.smoothing ** (k + 1))
        rate = self.rate
        self.learning_rates.append(rate)
        self.losses.append(loss)
        self.smoothed.append(smoothed)
        self.progbar.update(k + 1, values=[("learning_rate", rate), ("loss", loss)], finalize=False)
        if not math.isfinite(loss):
            self._stop(f"the loss at update {k} is {loss}")
        elif k > 0 and smoothed > self.threshold * self.best:
            self._stop(
                f"the smoothed loss at update {k} ({smoothed:.4g}) is more than "
                f"{self.threshold:g} x the best so far ({self.best:.4g})"
            )
        self.best = min(self.best, smoothed)

    def _stop(self, why):
        self.stop_reason = why
        self.model.stop_training = True

    def on_train_end(self, logs=None):
        if len(self.losses) < self.rates.steps and self.stop_reason == "completed":
            self.stop_reason = f"the data ran out after {len(self.losses)} updates"
        self.progbar.update(len(self.losses), finalize=True)
        if self.verbose:
            rate = self.learning_rates[-1] if self.learning_rates else float("nan")
            print_msg(f"Range test stopped at learning rate {rate:.4g}: {self.stop_reason}.")

    def result(self):
        return RangeTestResult(
            np.asarray(self.learning_rates), np.asarray(self.losses),
            np.asarray(self.smoothed), self.stop_reason,
        )


class _Snapshot:
    """Everything `find_learning_rate` may change, and `restore()` to put it back."""

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer
        self.variables = [(v, ops.convert_to_numpy(v)) for v in model.variables]
        self.variables += [(v, ops.convert_to_numpy(v)) for v in model.optimizer.variables]
        self.learning_rate = optimizer._learning_rate
        self.train_function = model.train_function
        self.stop_training = model.stop_training
        self.steps_per_execution = model.steps_per_execution
        self.history = getattr(model, "history", None)

    def restore(self):
        for variable, value in self.variables:
            variable.assign(value)
        set_learning_rate_object(self.optimizer, self.learning_rate)
        self.model.train_function = self.train_function
        self.model.stop_training = self.stop_training
        self.model.steps_per_execution = self.steps_per_execution
        self.model.history = self.history


def _neutral_plateau_factor(optimizer):
    """The plateau reducer's factor is 1 during the sweep (restored with the variables)."""
    state = getattr(optimizer, "plateau_state", None)
    if state is not None:
        value = np.array(ops.convert_to_numpy(state))
        value.reshape(-1)[0] = 1.0
        state.assign(value)


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model, got {model!r}")
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", False):
        raise ValueError(f"`model` must be compiled before the range test, got {model.name!r}")
    if not model.built:
        raise ValueError(
            f"`model` {model.name!r} must be built before the range test, so that its weights "
            "exist and can be restored: call it on a batch, or give it an `Input`."
        )
    optimizer = innermost(model.optimizer)
    accumulation = getattr(optimizer, "gradient_accumulation_steps", None)
    if accumulation:
        raise ValueError(
            "The range test makes one update per batch, but the optimizer has "
            f"gradient_accumulation_steps={accumulation!r}; compile with an optimizer "
            "without gradient accumulation for the test."
        )
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return optimizer


def _check_number(name, value, allowed, test):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be {allowed}, got {value!r}")
    if not (math.isfinite(value) and test(value)):
        raise ValueError(f"`{name}` must be {allowed}, got {value!r}")


def _is_arrays(x):
    """Whether `x` is arrays (or a structure of them), which `fit` shuffles."""
    leaves = keras.tree.flatten(x) if x is not None else []
    return bool(leaves) and all(hasattr(leaf, "shape") and hasattr(leaf, "dtype") for leaf in leaves)
