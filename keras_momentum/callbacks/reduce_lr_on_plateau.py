"""Plateau reducer that scales a learning-rate multiplier, so it also works with schedules."""

import math
import numbers
import warnings

import keras
import numpy as np

MODES = ("auto", "min", "max")
_MINIMISED_NAMES = ("loss", "error", "crossentropy", "hinge", "divergence", "mse", "mae")


class ReduceLROnPlateau(keras.callbacks.Callback):
    """Multiplies the learning rate by `factor` when a monitored quantity stops improving.

    Same arguments and decisions as `keras.callbacks.ReduceLROnPlateau`. A value improves on
    the best so far when it is lower by more than `min_delta` (`"min"`) or higher by more than
    `min_delta` (`"max"`). After `patience` epochs without improvement the learning rate is
    reduced, then no epoch is counted during `cooldown` epochs. The best value, wait and
    cooldown counters restart at the beginning of each `fit`.

    How the rate is reduced depends on the optimizer (wrappers such as
    `keras.optimizers.LossScaleOptimizer` are looked through via `.inner_optimizer`):

    * An optimizer with a `learning_rate_multiplier` variable (every optimizer of this
      package, and any Keras optimizer after `keras_momentum.optimizers.instrument(...)`):
      the effective rate is `base(t) * multiplier`, with `base` a float or a schedule; the
      multiplier is multiplied by `factor`, so a schedule keeps advancing, at a lower level.
      The multiplier is saved with the optimizer. `min_lr` bounds the effective rate at the
      time of the reduction: the multiplier is not set below `min_lr / base(t)`, and no
      reduction happens once the effective rate is at or below `min_lr`. A decaying schedule
      may still take the rate below `min_lr` later.
    * A Keras optimizer with a float learning rate: the rate becomes
      `max(rate * factor, min_lr)`, as Keras does.
    * A Keras optimizer with a schedule and no multiplier: `TypeError` at the start of
      training; wrap it with `keras_momentum.optimizers.instrument(optimizer)`.

    At each epoch end, `logs["learning_rate"]` receives the effective rate and, when there is
    one, `logs["learning_rate_multiplier"]` the multiplier, both as they were during the epoch
    (before any reduction decided at that epoch end), so `History` and loggers record them.

    Differences from Keras: an unknown `mode` raises `ValueError` instead of falling back to
    `"auto"`, `factor` must be in (0, 1), and a negative `min_delta` raises instead of being
    taken as its absolute value.

    Args:
        monitor: str, the logged quantity to watch, e.g. `"val_loss"`.
        factor: float in (0, 1), the multiplier applied at each reduction.
        patience: int >= 0, epochs without improvement before reducing.
        verbose: int >= 0, 0 quiet, 1 prints a line at each reduction.
        mode: "auto", "min" or "max"; `"auto"` minimises losses and errors, maximises metrics
            whose Keras direction is "up" (accuracy, AUC, ...), and otherwise raises.
        min_delta: float >= 0, the change that counts as an improvement.
        cooldown: int >= 0, epochs to wait after a reduction before counting again.
        min_lr: float >= 0, lower bound on the effective learning rate.

    Reference:
        `keras.callbacks.ReduceLROnPlateau`; `torch.optim.lr_scheduler.ReduceLROnPlateau`.
    """

    def __init__(
        self,
        monitor="val_loss",
        factor=0.1,
        patience=10,
        verbose=0,
        mode="auto",
        min_delta=1e-4,
        cooldown=0,
        min_lr=0.0,
    ):
        super().__init__()
        if not isinstance(monitor, str):
            raise TypeError(f"`monitor` must be a str, got {monitor!r}")
        self.monitor = monitor
        self.factor = _real("factor", factor)
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"`factor` must be in (0, 1), got {factor!r}")
        self.patience = _count("patience", patience)
        # Keras code often passes verbose=True.
        self.verbose = int(verbose) if isinstance(verbose, bool) else _count("verbose", verbose)
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of 'auto', 'min', 'max'; got {mode!r}")
        self.mode = mode
        self.min_delta = _real("min_delta", min_delta)
        if self.min_delta < 0:
            raise ValueError(f"`min_delta` must be >= 0, got {min_delta!r}")
        self.cooldown = _count("cooldown", cooldown)
        self.min_lr = _real("min_lr", min_lr)
        if self.min_lr < 0:
            raise ValueError(f"`min_lr` must be >= 0, got {min_lr!r}")
        self._reset()

    def _reset(self):
        self.best = None
        self.wait = 0
        self.cooldown_counter = 0
        self._minimise = None

    # ------------------------------------------------------------------ training
    def on_train_begin(self, logs=None):
        self._reset()
        optimizer = _innermost(self.model.optimizer)
        learning_rate = getattr(optimizer, "_learning_rate", None)
        if not hasattr(optimizer, "learning_rate_multiplier") and not isinstance(
            learning_rate, keras.Variable
        ):
            raise TypeError(
                f"ReduceLROnPlateau cannot scale the learning rate of {type(optimizer).__name__}: "
                f"it is a {type(learning_rate).__name__}, not a variable. Wrap the optimizer with "
                "`keras_momentum.optimizers.instrument(optimizer)`, which adds a learning-rate "
                "multiplier this callback can reduce."
            )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        optimizer = _innermost(self.model.optimizer)
        logs["learning_rate"] = _to_float(optimizer.learning_rate)
        multiplier = getattr(optimizer, "learning_rate_multiplier", None)
        if multiplier is not None:
            logs["learning_rate_multiplier"] = _to_float(multiplier)

        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(
                f"ReduceLROnPlateau monitors `{self.monitor}`, which is not in the logs; "
                f"available: {', '.join(sorted(logs))}",
                stacklevel=2,
            )
            return
        current = _to_float(current)
        if self._minimise is None:
            self._minimise = self._infer_minimise()
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improves(current):
            self.best = current
            self.wait = 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience and self._reduce(optimizer, epoch):
                self.cooldown_counter = self.cooldown
                self.wait = 0

    # ------------------------------------------------------------------ helpers
    def _improves(self, current):
        if self.best is None:
            return True
        if self._minimise:
            return current < self.best - self.min_delta
        return current > self.best + self.min_delta

    def _infer_minimise(self):
        if self.mode != "auto":
            return self.mode == "min"
        name = self.monitor.removeprefix("val_")
        if any(part in name for part in _MINIMISED_NAMES):
            return True
        for metric in _all_metrics(self.model):
            direction = getattr(metric, "_direction", None)
            if metric.name == name and direction in ("up", "down"):
                return direction == "down"
        raise ValueError(
            f"ReduceLROnPlateau cannot tell whether `monitor`={self.monitor!r} should go up or "
            "down; pass mode='min' or mode='max'"
        )

    def _reduce(self, optimizer, epoch):
        learning_rate = _to_float(optimizer.learning_rate)
        # A rate already clipped to `min_lr` can sit a float32 rounding above it.
        if not learning_rate > np.float32(self.min_lr) * (1.0 + 1e-6):
            return False
        multiplier = getattr(optimizer, "learning_rate_multiplier", None)
        if multiplier is not None:
            old = _to_float(multiplier)
            new = old * self.factor
            if self.min_lr > 0 and old > 0:
                base = learning_rate / old
                new = max(new, self.min_lr / base)
            multiplier.assign(new)
            detail = f"multiplier to {new:.6g}"
        else:
            new = max(learning_rate * self.factor, self.min_lr)
            optimizer.learning_rate = new
            detail = f"learning rate to {new:.6g}"
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing {detail}.")
        return True


def _innermost(optimizer):
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def _all_metrics(model):
    pending, found = list(getattr(model, "metrics", [])), []
    while pending:
        metric = pending.pop()
        found.append(metric)
        pending.extend(getattr(metric, "metrics", []))
    return found


def _to_float(value):
    return float(keras.ops.convert_to_numpy(value))


def _real(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}")
    return float(value)


def _count(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"`{name}` must be an integer >= 0, got {value!r}")
    return int(value)
