"""Stochastic weight averaging: train on, and keep the average of the weights of late epochs."""

import math
import numbers
import warnings

import keras
from keras import ops

from keras_momentum._rate_swap import innermost, retrace, set_learning_rate_object
from keras_momentum.batch_norm import batch_norm_layers, update_batch_norm
from keras_momentum.callbacks._weight_average import (
    ATTRIBUTE, AnnealedLearningRate, WeightAverage, anneal_fraction,
)


class StochasticWeightAveraging(keras.callbacks.Callback):
    """Averages the weights the model holds at the end of each epoch from `start_epoch` on.

    With `w_e` the model's float weights (trainable and non-trainable, batch-normalisation
    statistics included) at the end of epoch `e` (0-based), and `n` the number of epochs
    averaged so far, each epoch `e >= start_epoch` updates the equal-weight average

        w̄ ← w_e   (n = 0),     w̄ ← w̄ + (w_e − w̄)/(n + 1),   n ← n + 1,

    as `torch.optim.swa_utils.AveragedModel(..., use_buffers=True)` does. At the end of
    training the model's weights are replaced by `w̄`.

    With `swa_learning_rate` (`η_swa`), the learning rate of the optimizer making the updates
    (looked up through `inner_optimizer`) is annealed over `anneal_epochs` epochs from the
    start, with SWALR's cosine, and then held: during epoch `start_epoch + k`

        α_k = (1 − cos(π·min(1, (k + 1)/anneal_epochs)))/2     (α_k = 1 if anneal_epochs = 0)
        η = α_k·η_swa + (1 − α_k)·η_0,

    which is `SWALR(optimizer, swa_lr=η_swa, anneal_epochs=anneal_epochs)`'s rate after
    `k + 1` calls to `step()`. For a float rate, `η_0` is the rate at the start of epoch
    `start_epoch` and the optimizer's learning-rate variable is set each epoch (it stays
    at `η_swa` after training). For a schedule (or callable) `base`, `η_0 = base(t)` at
    each update `t`: the schedule goes on and is blended into `η_swa` (the train function is
    traced again each time `α` changes, `max(1, anneal_epochs)` times); the optimizer gets `base`
    back at the end of training. A plateau reducer's factor still multiplies the rate.

    Batch normalisation: averaged weights come with averaged moving statistics, which do not
    describe the averaged network. With `batch_norm_data`, `update_batch_norm(model,
    batch_norm_data)` recomputes them at the end; without it, a model with batch
    normalisation gets a warning naming that function.

    The average is saved with the model: while training, it is kept (as the variables of a
    small layer that is not part of the model) under the model's `_stochastic_weight_averaging`
    attribute, which `model.save_weights`, `model.save` and so `BackupAndRestore` store and
    load; the attribute is removed at the end of training. A run killed and resumed with
    `BackupAndRestore` (epoch backups) continues the average exactly, whatever the order of
    the two callbacks: the weights of epoch `e` are added when epoch `e + 1` begins (those of
    the last epoch at the end of training), so a backup always holds weights and an average
    that go together. A later `fit` with the same callback continues the average if it
    starts after the last epoch averaged (`initial_epoch`), else starts a new one.

    With `ScheduleFreeSGD`, the evaluation weights `x` are averaged and the model ends holding
    their average in evaluation mode, as `ScheduleFreeEvaluation` leaves it. The diagnostics
    loggers keep recording through the retraces.

    Args:
        start_epoch: int >= 0, the first epoch (0-based) whose final weights are averaged.
        swa_learning_rate: None (the rate is left alone) or a float >= 0.
        anneal_epochs: int >= 0, the epochs over which the rate goes to `swa_learning_rate`.
        batch_norm_data: None, or data for `update_batch_norm` (a dataset, a
            `PyDataset`, an iterable of batches or arrays), used at the end of training.

    Reference:
        Izmailov, Podoprikhin, Garipov, Vetrov & Wilson, "Averaging Weights Leads to Wider
        Optima and Better Generalization", UAI 2018 (arXiv:1803.05407);
        `torch.optim.swa_utils` (`AveragedModel`, `SWALR`, `update_bn`).
    """

    def __init__(self, start_epoch, swa_learning_rate=None, anneal_epochs=0, batch_norm_data=None):
        super().__init__()
        self.start_epoch = _count("start_epoch", start_epoch)
        if swa_learning_rate is not None:
            if isinstance(swa_learning_rate, bool) or not isinstance(swa_learning_rate, numbers.Real):
                raise TypeError(
                    f"`swa_learning_rate` must be None or a float >= 0, got {swa_learning_rate!r}"
                )
            if not (math.isfinite(swa_learning_rate) and swa_learning_rate >= 0):
                raise ValueError(
                    f"`swa_learning_rate` must be None or a float >= 0, got {swa_learning_rate!r}"
                )
            swa_learning_rate = float(swa_learning_rate)
        self.swa_learning_rate = swa_learning_rate
        self.anneal_epochs = _count("anneal_epochs", anneal_epochs)
        self.batch_norm_data = batch_norm_data
        self._average = None
        self._averaged_model = None  # the model `_average` belongs to
        self._last_epoch = None  # the last epoch ended in this `fit`
        self._first_epoch = True  # whether no epoch of this `fit` has begun yet

    # ------------------------------------------------------------------ state
    def set_model(self, model):
        super().set_model(model)
        if model.built:
            self._attach()  # before BackupAndRestore loads the backup in `on_train_begin`

    def _attach(self):
        if self._averaged_model is not self.model:
            weights = _averaged_weights(self.model)
            self._average = WeightAverage(weights, name="stochastic_weight_averaging")
            self._averaged_model = self.model
        object.__setattr__(self.model, ATTRIBUTE, self._average)

    @property
    def averaged_epochs(self):
        """The number of epochs averaged so far."""
        return 0 if self._average is None else int(self._average.read("count"))

    # --------------------------------------------------------------- training
    def on_train_begin(self, logs=None):
        if not self.model.built:
            raise ValueError(
                "StochasticWeightAveraging needs a built model: call it on a batch, or give "
                f"it an `Input`, before `fit`; got {self.model.name!r}"
            )
        if getattr(self.model, ATTRIBUTE, None) is not self._average:
            self._attach()
        self._last_epoch = None
        self._first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch:
            self._first_epoch = False
            if self._average.read("averaged_epoch") >= epoch:
                # An average of epochs this `fit` has yet to run belongs to an earlier run
                # (the callback given to a new `fit` from scratch), not to a resumed one.
                self._average.reset()
        previous = epoch - 1
        if previous >= self.start_epoch and self._average.read("averaged_epoch") < previous:
            self._add(previous)
        if self.swa_learning_rate is not None and epoch >= self.start_epoch:
            self._anneal(anneal_fraction(epoch - self.start_epoch, self.anneal_epochs))

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch

    def on_train_end(self, logs=None):
        last = self._last_epoch
        if last is not None and last >= self.start_epoch and self._average.read("averaged_epoch") < last:
            self._add(last)
        optimizer = innermost(self.model.optimizer)
        if isinstance(optimizer._learning_rate, AnnealedLearningRate):
            set_learning_rate_object(optimizer, optimizer._learning_rate.base)
            self.model.train_function = None
        vars(self.model).pop(ATTRIBUTE, None)
        if not self.averaged_epochs:
            warnings.warn(
                f"StochasticWeightAveraging(start_epoch={self.start_epoch}): no epoch from "
                "`start_epoch` on ended, so the weights were not replaced by an average.",
                stacklevel=2,
            )
            return
        schedule_free = _schedule_free(self.model.optimizer)
        if schedule_free is not None:
            schedule_free.swap_to_evaluation()
        for weight, average in zip(_averaged_weights(self.model), self._average.averages):
            weight.assign(ops.copy(average.value))  # not a buffer shared with the average
        if self.batch_norm_data is not None:
            update_batch_norm(self.model, self.batch_norm_data)
        elif batch_norm_layers(self.model):
            warnings.warn(
                "StochasticWeightAveraging: the model has batch normalisation, whose moving "
                "statistics were averaged with the weights and do not describe the averaged "
                "network. Recompute them with `keras_momentum.update_batch_norm(model, data)` "
                "on training data, or pass `batch_norm_data=`.",
                stacklevel=2,
            )

    def _add(self, epoch):
        schedule_free = _schedule_free(self.model.optimizer)
        if schedule_free is None:
            self._average.add([w.value for w in _averaged_weights(self.model)], epoch)
            return
        with schedule_free.evaluation_weights():
            self._average.add([w.value for w in _averaged_weights(self.model)], epoch)

    def _anneal(self, alpha):
        optimizer = innermost(self.model.optimizer)
        rate = optimizer._learning_rate
        if isinstance(rate, keras.Variable):
            initial = self._average.read("initial_learning_rate")
            if math.isnan(initial):
                initial = float(ops.convert_to_numpy(rate))
                self._average.initial_learning_rate.assign(initial)
            rate.assign(alpha * self.swa_learning_rate + (1.0 - alpha) * initial)
            return
        base = rate.base if isinstance(rate, AnnealedLearningRate) else rate
        if isinstance(rate, AnnealedLearningRate) and rate.alpha == alpha:
            return
        set_learning_rate_object(optimizer, AnnealedLearningRate(base, self.swa_learning_rate, alpha))
        retrace(self.model)

    def get_config(self):
        # `batch_norm_data` is data, not configuration.
        return {
            "start_epoch": self.start_epoch,
            "swa_learning_rate": self.swa_learning_rate,
            "anneal_epochs": self.anneal_epochs,
        }


def _averaged_weights(model):
    return [w for w in model.weights if keras.backend.is_float_dtype(w.dtype)]


def _schedule_free(optimizer):
    while optimizer is not None and not hasattr(optimizer, "evaluation_weights"):
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return optimizer


def _count(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0, got {value!r}")
    return int(value)
