"""Per-update statistics and a learning-rate multiplier for any Keras optimizer.

`InstrumentationMixin` is the one mechanism behind the diagnostics callbacks and the
plateau reducer. Every optimizer of this package inherits it; a built-in Keras optimizer
gets it through `instrument(optimizer)` (see `instrumented.py`).

What it adds:

* `learning_rate_multiplier`: a float32 scalar variable (initially 1) that is part of the
  optimizer's saved state. The learning rate used for update t is
  `base(t) * learning_rate_multiplier`, where `base` is the float, schedule or callable
  given as `learning_rate`; `optimizer.learning_rate` returns that product. Schedules are
  evaluated at `optimizer.iterations`, the number of updates done, which under
  `gradient_accumulation_steps` counts real updates, not micro-batches.
* Statistics of updates, recorded inside the compiled train step for the kinds that
  `enable_statistics` switched on before the step was traced, on every `every`-th update
  only (other updates skip the computation where the backend allows a conditional
  assignment). An optimizer nobody asked for statistics adds no operation to the step,
  nor does a step traced inside `statistics_suspended()`, which the loggers use for the
  executions in which no update records (`records_any`). The step writes raw rows of
  squared norms; the host finishes them when it reads (see `_statistics`). When every
  update records on TensorFlow or PyTorch, the next update reads the velocities the
  previous one left (see `_velocity_sums_before_update` and `_sums_follow_update`).
  The storage (`statistics_records`, `statistics_histograms`) is created in `build`
  whatever is enabled, so the optimizer's variable list (and so every checkpoint) does
  not depend on which callbacks were attached.
* Strict loading: a saved optimizer state whose variable count or shapes differ raises
  a `ValueError` (and loads nothing) instead of being skipped with a warning; so does
  loading into an optimizer that is not built yet (build it on the model's trainable
  variables first). Only the statistics storage may differ in shape (a checkpoint of
  another version of this package): it then starts empty.
"""

import contextlib
import math
import threading

import keras
import numpy as np
from keras import ops

from keras_momentum.optimizers import _statistics as st
from keras_momentum.optimizers._statistics import HISTOGRAM_BINS, SCALARS, STATISTICS  # noqa: F401
from keras_momentum.optimizers._step_statistics import StepStatistics


class InstrumentationMixin(StepStatistics):
    """Adds a learning-rate multiplier and in-step statistics to a Keras optimizer."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._statistics = {}  # kind -> record every n-th update
        self._statistics_suspended = 0  # > 0 while a step is traced without statistics
        # Whether some statistics were enabled directly (see `statistics_wanted`).
        self._statistics_direct = False
        self._statistics_cache = _ReadCache()
        # Tensors handed from one hook of the step to the next; per thread because
        # MirroredStrategy traces each replica's step in its own thread.
        self._step_scratch = threading.local()
        with keras.name_scope(self.name, caller=self):
            self.learning_rate_multiplier = keras.Variable(
                1.0,
                name="learning_rate_multiplier",
                dtype="float32",
                trainable=False,
                aggregation="only_first_replica",
            )

    # ------------------------------------------------------------------ state
    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._statistics_record = self._statistics_variable(
            "records", (st.RECORD_SLOTS, st.record_size(len(variables)))
        )
        # Row 0 holds the update number the histograms below it belong to.
        self._statistics_histograms = self._statistics_variable(
            "histograms", (1 + len(variables), 2 + HISTOGRAM_BINS)
        )

    def _statistics_variable(self, name, shape):
        return self.add_variable(
            shape, dtype="float32", aggregation="only_first_replica", name=f"statistics_{name}"
        )

    def load_own_variables(self, store):
        saved = len(store.keys())
        if saved != len(self.variables) and not self.built:
            raise ValueError(
                f"Cannot load the state of optimizer {self.name!r}: it is not built yet, so "
                f"it has {len(self.variables)} of the {saved} saved variables. Build it on "
                "the model's trainable variables first, "
                "`model.optimizer.build(model.trainable_variables)` (as "
                "keras.callbacks.BackupAndRestore does), then load."
            )
        if saved != len(self.variables):
            raise ValueError(
                f"Cannot load the state of optimizer {self.name!r}: the saved state has "
                f"{saved} variables but this optimizer has {len(self.variables)}. The "
                "model's trainable variables or the optimizer's configuration differ from "
                "those that were saved (or the optimizer is not built yet)."
            )
        storage = {id(self._statistics_record), id(self._statistics_histograms)}
        values = []  # all checked before any is assigned: a failed load changes nothing
        for i, variable in enumerate(self.variables):
            value = store[str(i)]
            if tuple(value.shape) == tuple(variable.shape):
                values.append(value)
            elif id(variable) in storage:
                # Records in another layout (saved by another version of this package)
                # describe past updates only: the storage starts empty instead.
                values.append(np.zeros(variable.shape, variable.dtype))
            else:
                raise ValueError(
                    f"Cannot load the state of optimizer {self.name!r}: saved variable {i} "
                    f"has shape {tuple(value.shape)} but {variable.path!r} has shape "
                    f"{tuple(variable.shape)}."
                )
        for variable, value in zip(self.variables, values):
            variable.assign(value)

    # ---------------------------------------------------------- learning rate
    def _get_current_learning_rate(self):
        base = self._learning_rate
        if isinstance(base, keras.optimizers.schedules.LearningRateSchedule):
            base = base(self.iterations)
        elif callable(base) and not isinstance(base, keras.Variable):
            base = base()
        return ops.multiply(ops.cast(base, "float32"), self.learning_rate_multiplier)

    # ------------------------------------------------------------- statistics
    def enable_statistics(self, *kinds, every=1, direct=True):
        """Records `kinds` (any of `STATISTICS`) on every `every`-th update, from the next trace.

        Statistics already enabled stay enabled; a kind enabled twice is recorded on the
        updates both ask for (the greatest common divisor of the two `every`). Callbacks
        call this from `set_model` with `direct=False`, and make the model retrace its
        train function: their statistics are recorded in the executions they announce
        (see `statistics_wanted`).
        """
        for kind in kinds:
            if kind not in STATISTICS:
                choices = ", ".join(repr(k) for k in STATISTICS)
                raise ValueError(f"`kinds` must be among {choices}, got {kind!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"`every` must be an int >= 1, got {every!r}")
        merged = dict(self._statistics)
        for kind in kinds:
            merged[kind] = math.gcd(merged.get(kind, every), every)
        self._statistics = merged
        self._statistics_direct = self._statistics_direct or bool(direct)

    @property
    def statistics_wanted(self):
        """Whether executions that no logger announces record: only when statistics were
        enabled directly (`enable_statistics(..., direct=True)`, the default).

        The loggers announce each execution of their `fit` to their switch; other
        executions (`train_on_batch`, a `fit` without loggers, after one with them or
        after one that ended on an exception) then run on the statistics-free train
        function, so an optimizer nobody listens to pays nothing."""
        return bool(self._statistics) and self._statistics_direct

    @contextlib.contextmanager
    def statistics_suspended(self):
        """Steps traced inside this context record nothing, whatever is enabled.

        The loggers trace a second train function this way and call it, from the host, for
        the executions in which no update records (see `records_any`), so those run the
        same graph as an optimizer without statistics.
        """
        self._statistics_suspended += 1
        try:
            yield
        finally:
            self._statistics_suspended -= 1

    def _records_statistics(self):
        # Read while a step is traced: whether its graph holds statistics at all.
        return bool(self._statistics) and not self._statistics_suspended

    def records_any(self, first, last):
        """Whether any update numbered `first` to `last` (inclusive) records a statistic."""
        if last < first:
            return False
        return any(last // every > (first - 1) // every for every in set(self._statistics.values()))

    @property
    def enabled_statistics(self):
        return frozenset(self._statistics)

    @property
    def statistics_frequencies(self):
        """`{kind: every}` for the enabled statistics."""
        return dict(self._statistics)

    def clear_statistics_cache(self):
        """Makes the next `read_statistics(..., cache_key=...)` transfer again."""
        self._statistics_cache.key = self._statistics_cache.value = None

    @property
    def record_every(self):
        """Updates between two records: the gcd of the enabled kinds' `every` (histograms
        aside), or None when no kind is recorded in records."""
        every = [n for kind, n in self._statistics.items() if kind != "histograms"]
        return math.gcd(*every) if every else None

    def read_records(self, values=None, histograms=False, cache_key=None, complete=True):
        """Host copies of the records still in the ring, oldest first, in one transfer.

        Returns a dict: `"steps"`, the int64 array of the updates the records belong to
        (increasing; at most `RECORD_SLOTS` records, the latest ones); `"columns"`,
        `{name: float array}` aligned with `steps` for each recorded scalar (`SCALARS`
        names, `"nonfinite_steps"` for optimizers with `skip_nonfinite=True`, and
        `"gradient_norm/<variable path>"` when per-variable norms are recorded); with
        `histograms=True`, `"histograms"`: `(step, {variable path: (range, counts)})` of
        the latest update that recorded histograms, or None before any.

        When every update records on TensorFlow or PyTorch, the velocity norms of the
        latest update (needed by `velocity_norm` and `update_ratio`) are read by the next
        update (see `_velocity_sums_before_update`); `complete=True` reads them on the
        host instead, and `complete=False` leaves that record out.

        `values` optionally maps optimizer variables' paths to current values, for
        backends (JAX) whose training loop holds state outside the variables. Callers
        passing the same `cache_key` (several callbacks after one batch) share one read
        until `clear_statistics_cache()`.
        """
        key = (cache_key, histograms, complete)
        cache = self._statistics_cache
        if cache_key is not None and cache.key == key:
            return cache.value
        out = {"steps": np.zeros((0,), np.int64), "columns": {}, "histograms": None}
        if not self.built:
            return out

        def read(variable):
            if values is not None and variable.path in values:
                return np.asarray(keras.ops.convert_to_numpy(values[variable.path]))
            # The variable, not `.value`: a distributed value cannot be converted inside
            # its strategy's scope.
            return np.asarray(keras.ops.convert_to_numpy(variable))

        snapshot = None
        if values is None and keras.backend.backend() == "tensorflow":
            snapshot = self._tf_snapshot(with_velocity_sums=complete)
            rows = snapshot[0]
        else:
            rows = read(self._statistics_record)
        steps = st.decode_steps(rows)
        order = np.argsort(steps, kind="stable")
        order = order[steps[order] > 0]
        rows, steps = rows[order], steps[order]
        velocities, known = st.velocity_columns(rows, steps)
        if complete and len(steps) and not known[-1]:
            if snapshot is not None:
                latest = snapshot[2] if self._current(snapshot[1], steps[-1]) else None
            else:
                latest = self._velocity_sums_on_host(read, values, steps[-1])
            if latest is not None:
                velocities[-1], known[-1] = latest, True
        rows, steps, velocities = rows[known], steps[known], velocities[known]
        out["steps"] = steps
        per_variable = "per_variable_norms" in self._statistics
        finished, norms = st.finish(rows, velocities, per_variable)
        wanted = self._recorded_scalar_names()
        columns = {name: finished[name] for name in SCALARS if name in wanted}
        if per_variable:
            for i, path in enumerate(self._statistics_paths()):
                columns[f"gradient_norm/{path}"] = norms[:, i]
        out["columns"] = columns
        if histograms and "histograms" in self._statistics:
            rows = read(self._statistics_histograms)
            step = st.decode_step(rows[0])
            if step > 0:
                paths = self._statistics_paths()
                out["histograms"] = (
                    step, {p: (row[:2], row[2:]) for p, row in zip(paths, rows[1:])}
                )
        cache.key, cache.value = key, out
        return out

    def _current(self, raw_count, latest_step):
        """Whether the velocities are still those update `latest_step` left, by the
        optimizer's raw counter (micro-batches under gradient accumulation)."""
        return int(raw_count) // (self.gradient_accumulation_steps or 1) == latest_step

    def _tf_snapshot(self, with_velocity_sums):
        """TensorFlow: `(ring rows, raw counter, velocity sums or None)` from one call.

        One concrete function per optimizer reads the ring and the counter and, with
        `with_velocity_sums` once this process has traced a step, takes the velocity sums
        with the step's own reductions: one call where separate reads and a `tf.function`
        called with the velocities as arguments took about four times as long.
        """
        sources = getattr(self, "_traced_velocity_sources", None) if with_velocity_sums else None
        velocities = self._velocity_variables() if sources is not None else []
        record, counter = self._statistics_record, self._iterations
        key = (id(record), None if sources is None else tuple(sources),
               tuple(id(v) for v in velocities))
        cache = self._statistics_cache
        if key not in cache.snapshots:
            import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

            def snapshot():
                out = [record.value, counter.value]
                if sources is not None:
                    out.append(_velocity_sums_now(velocities, sources))
                return out

            # Keyed by the variables it reads: each optimizer keeps functions of its own.
            cache.snapshots[key] = tf.function(snapshot, autograph=False).get_concrete_function()
        out = [np.asarray(t) for t in cache.snapshots[key]()]
        return out[0], out[1], (out[2].astype(np.float64) if sources is not None else None)

    def _velocity_sums_on_host(self, read, values, latest_step):
        """The velocity sums after update `latest_step`, read from the velocities now;
        None when an update has changed them since or this process traced no step."""
        sources = getattr(self, "_traced_velocity_sources", None)
        if sources is None or not self._current(read(self._iterations), latest_step):
            return None
        velocities = [
            values[v.path] if values and v.path in values else v.value
            for v in self._velocity_variables()
        ]
        sums = self._host_velocity_sums(tuple(sources))(velocities)
        return np.asarray(keras.ops.convert_to_numpy(sums), np.float64)

    def _host_velocity_sums(self, sources):
        """The step's own reductions, compiled once for the host (JAX; TensorFlow reads
        through `_tf_snapshot` unless `values` are given)."""
        cache = self._statistics_cache
        if cache.finish_key != sources:

            def sums(velocities):
                return _velocity_sums_now(velocities, sources)

            cache.finish_key, cache.finish = sources, st.compiled(sums)
        return cache.finish

    def read_statistics(self, values=None, histograms=False, cache_key=None):
        """The latest record as `{name: value}`, with its update number as `"step"`.

        `"step"` is 0 before any record. Names and arguments are those of
        `read_records`; `"histograms"` (with `histograms=True`) maps variable paths to
        `(range, counts)` of the latest update that recorded them, and
        `"nonfinite_steps"` (optimizers with `skip_nonfinite=True`) is the number of
        updates skipped so far, recorded or not.
        """
        records = self.read_records(values, histograms=histograms, cache_key=cache_key)
        out = {"step": int(records["steps"][-1]) if len(records["steps"]) else 0}
        if out["step"]:
            out.update({name: float(col[-1]) for name, col in records["columns"].items()})
        if getattr(self, "skip_nonfinite", False):
            counter = self.nonfinite_steps
            if values is not None and counter.path in values:
                counter = values[counter.path]
            out["nonfinite_steps"] = int(keras.ops.convert_to_numpy(counter))
        if records["histograms"] is not None:
            out["histograms"] = records["histograms"][1]
        return out

    def _statistics_paths(self):
        if getattr(self, "_paths", None) is None:
            self._paths = st.unique_paths(self._trainable_variables)
        return self._paths

    def _recorded_scalar_names(self):
        names = set()
        if "hyperparameters" in self._statistics:
            names.add("learning_rate")
            names.update(self._hyperparameter_names())
        if "gradient_norms" in self._statistics:
            names.update(("gradient_norm/global", "gradient_norm/global_clipped"))
        if "update_ratio" in self._statistics:
            names.add("update_ratio/global")
        if "velocity_norm" in self._statistics and self._velocity_variables():
            names.add("velocity_norm/global")
        if getattr(self, "skip_nonfinite", False):
            names.add("nonfinite_steps")
        return names

    # Hooks that optimizers override -----------------------------------------
    def _step_hyperparameters(self, learning_rate):
        """What `update_step` receives as its third argument; Keras passes the rate."""
        return learning_rate

    def _hyperparameter_values(self, hyperparameters):
        values = {"learning_rate": hyperparameters}
        if isinstance(getattr(self, "momentum", None), (int, float)):
            values["momentum"] = self.momentum
        if self.weight_decay is not None:
            values["weight_decay"] = self.weight_decay
        return values

    def _hyperparameter_names(self):
        names = {"learning_rate"}
        if isinstance(getattr(self, "momentum", None), (int, float)):
            names.add("momentum")
        if self.weight_decay is not None:
            names.add("weight_decay")
        return names

    def _velocity_variables(self):
        return [v for v in getattr(self, "momentums", []) if v is not None]

    def _update_source(self, variable, gradient):
        """What this update's `Δθ` of `variable` is a multiple of, known without a copy.

        A velocity variable (`Δθ = c·v` after the update), `"gradient"` (`Δθ = c·g`, the
        clipped gradient the update received), or None: unknown, so `update_ratio` keeps
        a copy of the weights to subtract. `_update_scale` gives `c` (signed), one for all
        variables.
        """
        return None

    def _update_scale(self, hyperparameters):
        return 1.0

    # Keras optimizer hooks ----------------------------------------------------
    def _backend_apply_gradients(self, grads, trainable_variables):
        if self._records_statistics():
            scratch = self._step_scratch
            scratch.variables = list(trainable_variables)
            scratch.indices = [self._get_variable_index(v) for v in trainable_variables]
        super()._backend_apply_gradients(grads, trainable_variables)

    def _clip_gradients(self, grads):
        clipped = super()._clip_gradients(grads)
        if self._records_statistics():
            scratch = self._step_scratch
            scratch.grads, scratch.clipped = grads, clipped
            if "update_ratio" in self._statistics:
                self._before_update(scratch, clipped)
        return clipped

    def _apply_weight_decay(self, variables):
        with self._after_weight_norms():
            super()._apply_weight_decay(variables)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        hyperparameters = self._step_hyperparameters(learning_rate)
        if (self._records_statistics() and self.record_every == 1
                and not self._sums_follow_update()):
            self._velocity_sums_before_update()
        super()._backend_update_step(grads, trainable_variables, hyperparameters)
        if self._records_statistics():
            self._record(trainable_variables, hyperparameters)
        self._step_scratch = threading.local()

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        # TensorFlow only. The update kernels wait for the reductions of the old state,
        # but not the gradients' all-reduce before them (an `IdentityN` of all gradients
        # under the default strategy): given a control input, it would hold every
        # update until the last gradient is computed, instead of each update starting
        # as soon as its own gradient is ready.
        with self._after_weight_norms():
            super()._distributed_tf_update_step(distribution, grads_and_vars, learning_rate)


def _velocity_sums_now(velocities, sources):
    """`[Σ v² of the velocities at `sources`, Σ v² of all]`, with the step's reductions."""
    return ops.stack(st.velocity_sums(st.square_norms(velocities), sources, True))


class _ReadCache:
    """The latest read and the host's compiled functions (`finish`, TensorFlow's
    `snapshots`): a plain object, so that storing them in it does not make TensorFlow's
    attribute tracking wrap them (about 0.3 ms per read on the optimizer)."""

    __slots__ = ("key", "value", "finish_key", "finish", "snapshots")

    def __init__(self):
        self.key = self.value = self.finish_key = self.finish = None
        self.snapshots = {}  # TensorFlow: concrete functions of `_tf_snapshot`
