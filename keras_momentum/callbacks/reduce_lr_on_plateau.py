"""Plateau reducer whose counters are optimizer state and that also works with schedules."""

import math
import numbers
import warnings

import keras
import numpy as np
from keras.src.utils import io_utils  # Keras routes these to logging when asked

MODES = ("auto", "min", "max")
_MINIMISED_NAMES = ("loss", "error", "crossentropy", "hinge", "divergence", "mse", "mae")


class ReduceLROnPlateau(keras.callbacks.Callback):
    """Multiplies the learning rate by `factor` when a monitored quantity stops improving.

    Same arguments and decisions as `keras.callbacks.ReduceLROnPlateau`. A value improves on
    the best so far when it is lower by more than `min_delta` (`"min"`) or higher by more than
    `min_delta` (`"max"`). After `patience` epochs without improvement the learning rate is
    reduced, then no epoch is counted during `cooldown` epochs.

    The counters (best value, wait, cooldown) are optimizer state: they live in the
    optimizer's `plateau_state` variable (every optimizer of this package, and Keras's after
    `keras_momentum.optimizers.instrument(...)`), so a checkpoint restores them and a run
    resumed with `keras.callbacks.BackupAndRestore` (placed after this callback) continues
    exactly where the interrupted one was. They also carry over into a later `fit`, as in one
    uninterrupted run. For a Keras optimizer without `plateau_state` they are kept by the
    callback, as Keras does.

    How the rate is reduced (wrappers with an `inner_optimizer`, such as
    `keras.optimizers.LossScaleOptimizer` and `Lookahead`, are looked through;
    `keras.optimizers.MultiOptimizer` has each of its optimizers reduced):

    * A float learning rate: its variable becomes `max(rate * factor, min_lr)`, as in Keras.
    * A schedule (or callable) on an optimizer with `plateau_state`: the plateau factor
      (`plateau_state[0]`) is multiplied by `factor`, so the schedule keeps advancing at a
      lower level. `min_lr` bounds the rate at the time of the reduction: the factor is not
      set below `min_lr / schedule(t)`, and no reduction happens once the rate is at or
      below `min_lr`; a decaying schedule may still go below `min_lr` later.
    * A schedule on a Keras optimizer without `plateau_state`: `TypeError` at the start of
      training; wrap the optimizer with `keras_momentum.optimizers.instrument(optimizer)`.

    At each epoch end, `logs["learning_rate"]` (`logs["learning_rate_<name>"]` for each
    optimizer of a `MultiOptimizer`) receives the rate used during the epoch, before any
    reduction decided at that epoch's end, so `History` and loggers record it.

    Differences from Keras: an unknown `mode` raises `ValueError` instead of falling back to
    `"auto"`, `factor` must be in (0, 1), and a negative `min_delta` raises instead of being
    taken as its absolute value.

    Args:
        monitor: str, the logged quantity to watch, e.g. `"val_loss"`.
        factor: float in (0, 1), the multiplier applied at each reduction.
        patience: int >= 0, epochs without improvement before reducing.
        verbose: int >= 0, 0 quiet, 1 writes a line (`keras.utils.io_utils.print_msg`) at
            each reduction.
        mode: "auto", "min" or "max"; `"auto"` minimises losses and errors, maximises metrics
            whose Keras direction is "up" (accuracy, AUC, ...), and otherwise raises.
        min_delta: float >= 0, the change that counts as an improvement.
        cooldown: int >= 0, epochs to wait after a reduction before counting again.
        min_lr: float >= 0, lower bound on the learning rate.

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
        self._minimise = None
        self._counters = {"best": math.nan, "wait": 0.0, "cooldown": 0.0}

    # ------------------------------------------------------------------ training
    def on_train_begin(self, logs=None):
        for optimizer in _reduced_optimizers(self.model.optimizer):
            if not hasattr(optimizer, "plateau_state") and not isinstance(
                optimizer._learning_rate, keras.Variable
            ):
                kind = type(optimizer._learning_rate).__name__
                raise TypeError(
                    f"ReduceLROnPlateau cannot scale the learning rate of "
                    f"{type(optimizer).__name__}: it is a {kind}, not a variable. Wrap the "
                    "optimizer with `keras_momentum.optimizers.instrument(optimizer)`, whose "
                    "plateau factor multiplies the schedule."
                )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        optimizers = _reduced_optimizers(self.model.optimizer)
        for optimizer in optimizers:
            key = "learning_rate" if len(optimizers) == 1 else f"learning_rate_{optimizer.name}"
            logs[key] = _to_float(optimizer.learning_rate)
        if len(optimizers) == 1 and not isinstance(optimizers[0]._learning_rate, keras.Variable):
            logs["plateau_factor"] = _to_float(optimizers[0].plateau_state[0])
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
        counters = self._read_counters(optimizers)
        if counters["cooldown"] > 0:
            counters["cooldown"] -= 1
            counters["wait"] = 0
        if self._improves(current, counters["best"]):
            counters["best"] = current
            counters["wait"] = 0
        elif counters["cooldown"] == 0:
            counters["wait"] += 1
            if counters["wait"] >= self.patience:
                reduced = [self._reduce(optimizer, epoch) for optimizer in optimizers]
                if any(reduced):
                    counters["cooldown"] = self.cooldown
                    counters["wait"] = 0
        self._write_counters(optimizers, counters)

    # ------------------------------------------------------------------ state
    def _read_counters(self, optimizers):
        for optimizer in optimizers:
            if hasattr(optimizer, "plateau_state"):
                state = keras.ops.convert_to_numpy(optimizer.plateau_state)
                return {"best": float(state[1]), "wait": float(state[2]),
                        "cooldown": float(state[3])}
        return dict(self._counters)

    def _write_counters(self, optimizers, counters):
        self._counters = dict(counters)
        for optimizer in optimizers:
            if hasattr(optimizer, "plateau_state"):
                state = np.array(keras.ops.convert_to_numpy(optimizer.plateau_state))
                state[1:] = counters["best"], counters["wait"], counters["cooldown"]
                optimizer.plateau_state.assign(state)

    @property
    def best(self):
        return self._counters["best"]

    @property
    def wait(self):
        return int(self._counters["wait"])

    @property
    def cooldown_counter(self):
        return int(self._counters["cooldown"])

    # ------------------------------------------------------------------ helpers
    def _improves(self, current, best):
        if math.isnan(best):
            return True
        if self._minimise:
            return current < best - self.min_delta
        return current > best + self.min_delta

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
        if isinstance(optimizer._learning_rate, keras.Variable):
            new = max(learning_rate * self.factor, self.min_lr)
            optimizer._learning_rate.assign(new)
            detail = f"learning rate to {new:.6g}"
        else:
            state = np.array(keras.ops.convert_to_numpy(optimizer.plateau_state))
            old = float(state[0])
            new = old * self.factor
            if self.min_lr > 0 and old > 0:
                new = max(new, self.min_lr / (learning_rate / old))
            state[0] = new
            optimizer.plateau_state.assign(state)
            detail = f"plateau factor to {new:.6g}"
        if self.verbose > 0:
            io_utils.print_msg(
                f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing {optimizer.name}'s {detail}."
            )
        return True


def _reduced_optimizers(optimizer):
    """The optimizers whose rates a reduction scales: each of a `MultiOptimizer`'s, else
    the innermost one."""
    optimizer = _innermost(optimizer)
    if isinstance(optimizer, keras.optimizers.MultiOptimizer):
        return [_innermost(o) for o in optimizer.optimizers]
    return [optimizer]


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
