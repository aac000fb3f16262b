"""Per-update statistics, recorded inside the train step and read by the loggers.

How one `gradient_norm/global` value travels from the train step to the event file:

1. A logger's `set_model` calls `attach(optimizer)` and `Recorder.request(...)`: the optimizer
   now carries a `Recorder` and, the first time, the model retraces its train function.
2. In the step, Keras calls `optimizer._clip_gradients(grads)`; the optimizer hands the
   gradients to `Recorder.record_gradients`, which writes each gradient's `Σ g²` into
   the row of this update in the `gradients` buffer (`row_of`), and their total.
3. Keras then calls `optimizer._backend_update_step`; the optimizer hands the update to
   `Recorder.record_update`, which writes the update number, the hyperparameters and
   `‖θ‖²`, `‖Δθ‖²`, `Σ v²` into the same row of the `steps` and `updates` buffers.
4. Every `RECORD_SLOTS // 2` updates, and at epoch ends, the logger calls `Recorder.read`:
   one host copy of the buffers, turned into `{tag: values}` by update number.
5. The logger writes one TensorBoard event per update (`callbacks/_logger.py`).

The buffers are optimizer variables once a logger has been attached (JAX's train step carries
state through `optimizer.variables` only) and are never saved; steps traced outside a
logger's fit leave them alone. Updates that record nothing
write into a spare last row, so no conditional is needed in the step. Executions in which no
update records run a train function traced without any of this (`tracing_records` False).
"""

import math

import keras
import numpy as np
from keras import ops

from keras_momentum.optimizers._dense import is_indexed_slices

RECORD_SLOTS = 256
HISTOGRAM_BINS = 30
KINDS = ("hyperparameters", "gradient_norms", "update_ratio", "velocity_norm", "histograms")
UPDATE_COLUMNS = ("learning_rate", "momentum", "weight_decay", "clipped_squares",
                  "weight_squares", "update_squares", "velocity_squares", "nonfinite_steps")


def attach(optimizer):
    """The optimizer's `Recorder`, created on first use."""
    if optimizer.recorder is None:
        optimizer.recorder = Recorder(optimizer)
    return optimizer.recorder


class Recorder:
    """What the attached loggers asked of one optimizer, and the device buffers it fills."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.requests = {}  # logger -> (kinds, every, histogram_every)
        self.buffers = []
        self.tracing_records = True  # False while a statistics-free step is traced
        # Loggers between `set_model` and the end of their `fit`: steps traced while none is
        # (after `compile`, in a fit without loggers) record nothing.
        self.fitting = set()

    # ------------------------------------------------------------- requests
    def request(self, logger, kinds, every, histogram_every=0):
        """Records `kinds` every `every` updates for `logger`; True when the step must retrace."""
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"`kinds` must be among {KINDS}, got {sorted(unknown)}")
        before = self._traced_for()
        self.requests[logger] = (frozenset(kinds), int(every), int(histogram_every))
        self.fitting.add(logger)
        if self.optimizer.built and not self.buffers:
            self.create_buffers()
        return self._traced_for() != before

    def fit_ended(self, logger):
        """`logger`'s fit is over. Its request stays, so its next fit reuses the traced
        functions; the buffers stay too (never saved, untouched by steps without loggers)."""
        self.fitting.discard(logger)

    def records(self):
        """Whether the step being traced records: a logger's fit runs, and the trace is not
        the statistics-free one."""
        return self.tracing_records and bool(self.fitting)

    def release(self, logger):
        """Drops `logger`'s request (it moved to another optimizer); the last release
        removes the buffers from the optimizer."""
        self.requests.pop(logger, None)
        self.fitting.discard(logger)
        if not self.requests:
            self.optimizer.recorder = None
            buffers = {id(v) for v in self.buffers}
            variables = self.optimizer._variables
            for i in reversed(range(len(variables))):
                if id(variables[i]) in buffers:
                    variables.pop(i)
            self.buffers = []

    @property
    def kinds(self):
        return frozenset().union(*(kinds for kinds, _, _ in self.requests.values()))

    @property
    def every(self):
        """Updates between two records: the gcd of the loggers' `update_freq`."""
        return math.gcd(*(every for _, every, _ in self.requests.values())) or 1

    @property
    def histogram_every(self):
        return math.gcd(*(h for _, _, h in self.requests.values()))

    def _traced_for(self):
        return self.kinds, self.every, self.histogram_every

    def records_any(self, first, last):
        """Whether an update numbered `first` to `last` (inclusive) records anything."""
        periods = {e for _, e, _ in self.requests.values()} | {
            h for _, _, h in self.requests.values() if h}
        return last >= first and any(last // n > (first - 1) // n for n in periods)

    # -------------------------------------------------------------- buffers
    def create_buffers(self):
        optimizer = self.optimizer
        count = len(optimizer._trainable_variables)
        shapes = {
            "steps": ((RECORD_SLOTS + 1,), "int32"),
            "gradients": ((RECORD_SLOTS + 1, count + 1), "float32"),
            "updates": ((RECORD_SLOTS + 1, len(UPDATE_COLUMNS)), "float32"),
            "histogram_steps": ((2,), "int32"),
            "histograms": ((2, count, 2 + HISTOGRAM_BINS), "float32"),
        }
        scope = getattr(optimizer, "_distribution_strategy", None)
        with scope.scope() if scope is not None else keras.name_scope("diagnostics"):
            self.buffers = [
                optimizer.add_variable(shape, dtype=dtype, aggregation="only_first_replica",
                                       name=f"diagnostics_{name}")
                for name, (shape, dtype) in shapes.items()
            ]
        (self.steps, self.gradients, self.updates,
         self.histogram_steps, self.histograms) = self.buffers

    # ----------------------------------------------------- inside the step
    def record_gradients(self, optimizer, grads):
        """Each gradient's `Σ g²` (and its histogram, when due) as the update received it."""
        grads = _sum_over_replicas(grads)
        step = ops.add(optimizer.iterations, 1)
        if "gradient_norms" in self.kinds:
            squares = _gradient_row(optimizer, _square_sums(grads))
            _write_row(self.gradients, row_of(step, self.every), squares)
        if "histograms" in self.kinds and self.histogram_every:
            if len(grads) != len(optimizer._trainable_variables):
                return  # see `_gradient_row`
            rows = ops.stack([_histogram(g) for g in grads])
            row = ops.where(ops.equal(ops.mod(step, self.histogram_every), 0), 0, 1)
            _write_row(self.histograms, row, rows)
            _write_row(self.histogram_steps, row, ops.cast(step, "int32"))

    def before_update(self, variables):
        """Copies of the weights, when the update ratio needs `Δθ`."""
        if "update_ratio" not in self.kinds:
            return None
        return [ops.copy(ops.convert_to_tensor(v)) for v in variables]

    def record_update(self, optimizer, grads, variables, before, hyperparameters):
        """The update's row: its number, hyperparameters and the squared norms of the state."""
        step = ops.add(optimizer.iterations, 1)
        nan = ops.convert_to_tensor(float("nan"), "float32")
        values = dict.fromkeys(UPDATE_COLUMNS, nan)
        if "hyperparameters" in self.kinds:
            for name, value in hyperparameters.items():
                values[name] = ops.cast(value, "float32")
        if "gradient_norms" in self.kinds and optimizer._clipping_configured():
            values["clipped_squares"] = ops.sum(_square_sums(_sum_over_replicas(grads)))
        if before is not None:
            values["weight_squares"] = ops.sum(_square_sums(before))
            values["update_squares"] = ops.sum(_square_sums(
                [ops.subtract(ops.convert_to_tensor(v), w) for v, w in zip(variables, before)]))
        if "velocity_norm" in self.kinds:
            velocities = optimizer._velocity_values()
            if velocities:
                values["velocity_squares"] = ops.sum(_square_sums(velocities))
        if getattr(optimizer, "skip_nonfinite", False):
            values["nonfinite_steps"] = ops.cast(optimizer.nonfinite_steps, "float32")
        row = row_of(step, self.every)
        _write_row(self.updates, row, ops.stack(list(values.values())))
        _write_row(self.steps, row, ops.cast(step, "int32"))

    # ------------------------------------------------------------ on the host
    def read(self, values=None):
        """The records still in the buffers: `(steps, {tag: column})`, oldest first.

        `values` maps optimizer-variable paths to current values, for a trainer that
        holds its state outside the variables (JAX during `fit`). With histograms
        recorded, the tags also hold `"histograms"`: `(step, {path: (range, counts)})`
        of the latest update that made them.
        """
        if not self.buffers:
            return np.zeros((0,), np.int64), {}
        steps, gradients, updates, histogram_steps, histograms = (
            _host(b, values) for b in self.buffers
        )
        steps = steps[:RECORD_SLOTS].astype(np.int64)
        order = np.argsort(steps, kind="stable")
        order = order[steps[order] > 0]
        steps, gradients = steps[order], gradients[order].astype(np.float64)
        updates = dict(zip(UPDATE_COLUMNS, updates[order].astype(np.float64).T))
        columns = {}
        kinds = self.kinds
        if "hyperparameters" in kinds:
            names = ("learning_rate", "momentum", "weight_decay")
            columns.update((n, updates[n]) for n in names if not np.isnan(updates[n]).all())
        paths = unique_paths(self.optimizer._trainable_variables)
        if "gradient_norms" in kinds:
            columns["gradient_norm/global"] = np.sqrt(gradients[:, -1])
            if self.optimizer._clipping_configured():
                columns["gradient_norm/global_clipped"] = np.sqrt(updates["clipped_squares"])
            for i, path in enumerate(paths):
                columns[f"gradient_norm/{path}"] = np.sqrt(gradients[:, i])
        if "update_ratio" in kinds:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.sqrt(updates["update_squares"] / updates["weight_squares"])
            columns["update_ratio/global"] = ratio
        if "velocity_norm" in kinds and self.optimizer._velocity_values():
            columns["velocity_norm/global"] = np.sqrt(updates["velocity_squares"])
        if getattr(self.optimizer, "skip_nonfinite", False):
            columns["nonfinite_steps"] = updates["nonfinite_steps"]
        if "histograms" in kinds and histogram_steps[0] > 0:
            rows = {p: (h[:2], h[2:]) for p, h in zip(paths, histograms[0])}
            columns["histograms"] = (int(histogram_steps[0]), rows)
        return steps, columns


    def latest(self, values=None):
        """The latest record as `{tag: value}`, with its update number as `"step"` (0 before any)."""
        steps, columns = self.read(values)
        if not len(steps):
            return {"step": 0}
        out = {tag: float(column[-1]) for tag, column in columns.items() if tag != "histograms"}
        out["step"] = int(steps[-1])
        return out


def row_of(step, every):
    """The buffer row of update `step`: its record's slot, or the spare last row."""
    slot = ops.mod(ops.floor_divide(step, every), RECORD_SLOTS)
    return ops.where(ops.equal(ops.mod(step, every), 0), slot, RECORD_SLOTS)


def unique_paths(variables):
    """The variables' paths, with `_1`, `_2`, ... appended to repeats (and to the global tags)."""
    taken, paths = {"global", "global_clipped"}, []
    for variable in variables:
        path, repeat = variable.path, 0
        while path in taken:
            repeat += 1
            path = f"{variable.path}_{repeat}"
        taken.add(path)
        paths.append(path)
    return paths


def _write_row(buffer, row, value):
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

        if not tf.distribute.has_strategy():
            # In place: one scatter into the variable instead of a new buffer.
            rows = ops.reshape(ops.cast(row, "int32"), (1,))
            buffer.value.scatter_update(tf.IndexedSlices(ops.expand_dims(value, 0), rows))
            return
    index = ops.reshape(ops.cast(row, "int32"), (1, 1))
    buffer.assign(ops.scatter_update(buffer.value, index, ops.expand_dims(value, 0)))


def _gradient_row(optimizer, squares):
    """Each variable's `Σ g²` (the vector `squares`), then their total.

    Keras drops the variables without a gradient before the hooks see the gradients,
    and `_clip_gradients` is not told which: per-variable entries are then NaN.
    """
    count = len(optimizer._trainable_variables)
    if squares.shape[0] == count:
        per_variable = squares
    else:
        per_variable = ops.full((count,), float("nan"), "float32")
    return ops.concatenate([per_variable, ops.reshape(ops.sum(squares), (1,))])


def _values(tensor):
    # IndexedSlices: the stored rows (rows repeated in `indices` count apart).
    return tensor.values if is_indexed_slices(tensor) else tensor


def _square_sums(tensors):
    """The float32 vector of each tensor's `Σ x²`: one reduction per tensor.

    On TensorFlow `l2_loss` squares and sums in one kernel without a temporary the size of
    the tensor; under JAX, XLA fuses the two.
    """
    values = [ops.cast(_values(t), "float32") for t in tensors]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

        return 2.0 * tf.stack([tf.nn.l2_loss(v) for v in values])  # l2_loss is Σx²/2
    return ops.stack([ops.sum(ops.square(v)) for v in values])


def _histogram(gradient):
    values = ops.reshape(ops.cast(_values(gradient), "float32"), (-1,))
    low, high = ops.min(values), ops.max(values)
    width = ops.maximum(high - low, 1e-30)
    bins = ops.clip(ops.floor((values - low) / width * HISTOGRAM_BINS), 0, HISTOGRAM_BINS - 1)
    counts = ops.segment_sum(ops.ones_like(values), ops.cast(bins, "int32"), HISTOGRAM_BINS)
    return ops.concatenate([ops.stack([low, high]), counts])


def _sum_over_replicas(grads):
    """Under a `tf.distribute` strategy, the gradients summed over replicas (the update
    applies that sum); elsewhere the gradients themselves."""
    if keras.backend.backend() != "tensorflow":
        return list(grads)
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return list(grads)
    return context.all_reduce(tf.distribute.ReduceOp.SUM, list(grads))


def _host(buffer, values):
    if values is not None and buffer.path in values:
        return np.asarray(keras.ops.convert_to_numpy(values[buffer.path]))
    # The variable, not `.value`: a distributed value cannot be converted in its scope.
    return np.asarray(keras.ops.convert_to_numpy(buffer))
