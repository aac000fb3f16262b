"""Evaluating a schedule-free model at its averaged weights."""

import keras


class ScheduleFreeEvaluation(keras.callbacks.Callback):
    """Swaps a schedule-free optimizer's averaged weights `x` in for evaluation.

    `ScheduleFreeSGD` trains with the weights holding the interpolation `y`; the
    weights to evaluate and keep are the average `x`. With this callback:

    * validation during `fit`, and `evaluate`/`predict` calls given the callback, run
      on `x`; the weights return to what they were afterwards;
    * at the end of `fit` the weights hold `x`, so `model.evaluate`, `model.predict`
      and `model.save` afterwards (even without the callback) use `x`;
    * at the start of `fit` the weights go back to `y` if they held `x`, so training
      resumes where it stopped. Give the callback to every `fit` call, or call
      `optimizer.swap_to_training()` before a `fit` without it.

    The optimizer is `model.optimizer`, or the optimizer it wraps (through
    `inner_optimizer`, as in `LossScaleOptimizer` and `Lookahead`), whichever has
    `swap_to_evaluation`; before its first update nothing is swapped (`x = y`).

    Callbacks that keep weights across epochs see `y` (for example
    `ModelCheckpoint`, which then stores a resumable training state, and
    `EarlyStopping(restore_best_weights=True)`, whose restored `y` would not match the
    optimizer's final `z`: avoid combining them with this callback).

    Example:
        `model.fit(x, y, validation_data=..., callbacks=[ScheduleFreeEvaluation()])`
    """

    def __init__(self):
        super().__init__()
        self._swapped = False

    def _optimizer(self):
        optimizer = self.model.optimizer
        while optimizer is not None and not hasattr(optimizer, "swap_to_evaluation"):
            optimizer = getattr(optimizer, "inner_optimizer", None)
        if optimizer is None:
            raise TypeError(
                "ScheduleFreeEvaluation needs a schedule-free optimizer (one with "
                f"`swap_to_evaluation`), got model.optimizer={self.model.optimizer!r}"
            )
        return optimizer

    def _swap_in(self):
        self._swapped = self._optimizer().swap_to_evaluation()

    def _swap_back(self):
        if self._swapped:
            self._optimizer().swap_to_training()
            self._swapped = False

    def on_train_begin(self, logs=None):
        self._optimizer().swap_to_training()

    def on_train_end(self, logs=None):
        self._optimizer().swap_to_evaluation()

    def on_test_begin(self, logs=None):
        self._swap_in()

    def on_test_end(self, logs=None):
        self._swap_back()

    def on_predict_begin(self, logs=None):
        self._swap_in()

    def on_predict_end(self, logs=None):
        self._swap_back()
