"""Runs the executions in which no update records on a train function without statistics.

A logger with `update_freq=100` needs one update in a hundred recorded. A conditional inside
the train step still costs every step something (and JAX, whose conditionals cannot assign,
computes the statistics every step). Instead, `RecordingSwitch` stands in for
`model.train_function`: every trainer (TensorFlow, JAX, PyTorch) calls that attribute once
per execution, right after `on_train_batch_begin`. The loggers tell the switch, from that
hook, how many micro-batches came before the execution; the switch asks the optimizer
whether an update of the execution records (`records_any`) and calls either the train
function Keras built (which records, on the right updates, with the conditional) or a
second one, traced with `optimizer.statistics_suspended()`, whose graph is that of an
optimizer without statistics.

The host's count must then be the device's. Where updates may be skipped without being
counted (a `LossScaleOptimizer`, `skip_nonfinite=True`) the switch is inexact: every
execution a logger announces runs the recording function, whose own conditional picks the
updates that record. A call no logger announced (`train_on_batch`, or a later `fit`
without loggers, also after a loggers' `fit` that ended on an exception) records only
when statistics were enabled directly (`statistics_wanted`), so that an optimizer whose
loggers are gone pays nothing.
"""

import keras


class RecordingSwitch:
    """Calls `recording` or a statistics-free twin of it, as the next execution needs."""

    def __init__(self, model, optimizer, recording, exact=True):
        self.model = model
        self.optimizer = optimizer
        self.recording = recording
        self.exact = exact  # whether the host's count of updates is the device's
        self.plain = None
        # Micro-batches done before the next call, set by a logger's batch-begin hook and
        # used once; None records.
        self.position = None
        self.recording_calls = 0
        self.plain_calls = 0  # executions run without statistics

    def __call__(self, *args, **kwargs):
        position, self.position = self.position, None
        if position is None:
            records = self.optimizer.statistics_wanted
        else:
            records = not self.exact or self._records(position)
        if records:
            self.recording_calls += 1
            return self.recording(*args, **kwargs)
        if self.plain is None:
            self.plain = self._make_plain()
        self.plain_calls += 1
        with self.optimizer.statistics_suspended():
            # A first call traces the function: its graph holds no statistics.
            return self.plain(*args, **kwargs)

    def _records(self, position):
        accumulation = self.optimizer.gradient_accumulation_steps or 1
        # The execution runs micro-batches position + 1 .. position + k; update u is made
        # by micro-batch u * accumulation. A shorter last execution only errs towards
        # recording, which the step's own conditional then skips.
        first = position // accumulation + 1
        last = (position + self.model.steps_per_execution) // accumulation
        return self.optimizer.records_any(first, last)

    def _make_plain(self):
        model = self.model
        train_step = model.train_step

        def train_step_without_statistics(*args, **kwargs):
            return train_step(*args, **kwargs)

        # `jax.jit` shares compiled steps between wrappers of one function: the plain
        # function gets a function of its own, so that neither trace serves the other.
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


def install(model, optimizer):
    """The model's switch, wrapping the train function Keras built for this `fit`.

    Where the host cannot count the updates exactly, or every update records, the switch
    only adds a Python call per execution, and runs later executions without loggers
    statistics-free. Returns None when the model has no train function.
    """
    function = model.train_function
    if isinstance(function, RecordingSwitch):
        if function.optimizer is optimizer:
            return function
        function = function.recording
    if function is None:
        return None
    switch = RecordingSwitch(model, optimizer, function,
                             exact=_host_counts_updates(model, optimizer))
    model.train_function = switch
    return switch


def _host_counts_updates(model, optimizer):
    if getattr(optimizer, "skip_nonfinite", False):
        return False
    steps = getattr(model, "steps_per_execution", None)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        return False
    outer = model.optimizer
    while outer is not optimizer:
        if isinstance(outer, keras.optimizers.LossScaleOptimizer):
            return False  # skips updates with non-finite gradients without counting them
        outer = getattr(outer, "inner_optimizer", None)
        if outer is None:
            return False
    return True
