"""The train function the loggers install: statistics-free executions where nothing records."""

import keras


class TrainFunctionSwitch:
    """Stands in for `model.train_function`: runs the recording function only when needed.

    Every trainer calls `model.train_function` once per execution, right after
    `on_train_batch_begin`, where the loggers set `position` (micro-batches done before it).
    A call without a position (`train_on_batch`, a later `fit` without loggers) records
    nothing. Where the host cannot count updates (a `LossScaleOptimizer` or
    `skip_nonfinite=True` skip some without counting), every announced execution records
    and the step itself files the updates that record nothing into the spare row.
    """

    def __init__(self, model, recorder, recording):
        self.model, self.recorder, self.recording = model, recorder, recording
        self.plain = None
        self.position = None
        self.exact = _host_counts_updates(model, recorder.optimizer)
        self.recording_calls = self.plain_calls = 0

    def __call__(self, *args, **kwargs):
        position, self.position = self.position, None
        if position is not None and (not self.exact or self._records(position)):
            self.recording_calls += 1
            return self.recording(*args, **kwargs)
        if self.plain is None:
            self.plain = self._trace_plain()
        self.plain_calls += 1
        return self.plain(*args, **kwargs)

    def _records(self, position):
        accumulation = self.recorder.optimizer.gradient_accumulation_steps or 1
        first = position // accumulation + 1
        last = (position + self.model.steps_per_execution) // accumulation
        return self.recorder.records_any(first, last)

    def _trace_plain(self):
        model, train_step = self.model, self.model.train_step

        def train_step_without_statistics(*args, **kwargs):
            self.recorder.tracing_records = False
            try:
                return train_step(*args, **kwargs)
            finally:
                self.recorder.tracing_records = True

        # A function of its own: `jax.jit` would share one trace between two wrappers of
        # the same function.
        shadowed = "train_step" in vars(model)
        model.train_step = train_step_without_statistics
        try:
            model.make_train_function(force=True)
            return model.train_function
        finally:
            model.train_function = self
            if shadowed:
                model.train_step = train_step
            else:
                del model.train_step


def _host_counts_updates(model, optimizer):
    if getattr(optimizer, "skip_nonfinite", False):
        return False
    steps = getattr(model, "steps_per_execution", None)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        return False
    outer = model.optimizer
    while outer is not optimizer:
        if isinstance(outer, keras.optimizers.LossScaleOptimizer):
            return False  # skips non-finite updates without counting them
        outer = getattr(outer, "inner_optimizer", None)
        if outer is None:
            return False
    return True
