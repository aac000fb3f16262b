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
  assignment). An optimizer nobody asked for statistics adds no operation to the step.
  Their storage is created in `build` whatever is enabled, so the optimizer's variable
  list (and so every checkpoint) does not depend on which callbacks were attached.
* Strict loading: a saved optimizer state whose variable count or shapes differ raises
  a `ValueError` instead of being skipped with a warning; so does loading into an
  optimizer that is not built yet (build it on the model's trainable variables first).
"""

import math
import threading

import keras
import numpy as np
from keras import ops

from keras_momentum.optimizers import _statistics as st
from keras_momentum.optimizers._statistics import HISTOGRAM_BINS, SCALARS, STATISTICS  # noqa: F401


class InstrumentationMixin:
    """Adds a learning-rate multiplier and in-step statistics to a Keras optimizer."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._statistics = {}  # kind -> record every n-th update
        self._statistics_cache = (None, None)
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
            "record", (st.record_size(len(variables)),)
        )
        self._statistics_histograms = self._statistics_variable(
            "histograms", (len(variables), 2 + HISTOGRAM_BINS)
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
        for i, variable in enumerate(self.variables):
            value = store[str(i)]
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"Cannot load the state of optimizer {self.name!r}: saved variable {i} "
                    f"has shape {tuple(value.shape)} but {variable.path!r} has shape "
                    f"{tuple(variable.shape)}."
                )
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
    def enable_statistics(self, *kinds, every=1):
        """Records `kinds` (any of `STATISTICS`) on every `every`-th update, from the next trace.

        Statistics already enabled stay enabled; a kind enabled twice is recorded on the
        updates both ask for (the greatest common divisor of the two `every`). Callbacks
        call this from `set_model` and make the model retrace its train function.
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

    @property
    def enabled_statistics(self):
        return frozenset(self._statistics)

    @property
    def statistics_frequencies(self):
        """`{kind: every}` for the enabled statistics."""
        return dict(self._statistics)

    def clear_statistics_cache(self):
        """Makes the next `read_statistics(..., cache_key=...)` transfer again."""
        self._statistics_cache = (None, None)

    def read_statistics(self, values=None, histograms=False, cache_key=None):
        """Host copies of the latest recorded statistics, by name, in one transfer.

        `"step"` is the update the record belongs to (0 before any), `"nonfinite_steps"`
        (optimizers with `skip_nonfinite=True`) the updates skipped so far. With
        `histograms=True`, `"histograms"` maps variable paths to `(range, counts)` as
        of the latest update whose number is a multiple of the histograms' `every`.
        `values` optionally maps optimizer variables' paths to current values, for
        backends (JAX) whose training loop holds state outside the variables. Callers
        passing the same `cache_key` (several callbacks after one batch) share one read
        until `clear_statistics_cache()`.
        """
        key = (cache_key, histograms)
        if cache_key is not None and self._statistics_cache[0] == key:
            return dict(self._statistics_cache[1])

        def read(variable):
            if values is not None and variable.path in values:
                return np.asarray(keras.ops.convert_to_numpy(values[variable.path]))
            # The variable, not `.value`: a distributed value cannot be converted inside
            # its strategy's scope.
            return np.asarray(keras.ops.convert_to_numpy(variable))

        if not self.built:
            return {"step": 0}
        record = read(self._statistics_record)
        out = {"step": st.decode_step(record)}
        if getattr(self, "skip_nonfinite", False):
            out["nonfinite_steps"] = int(read(self.nonfinite_steps))
        scalars = record[len(st.HEADER):len(st.HEADER) + len(SCALARS)]
        wanted = self._recorded_scalar_names()
        out.update({name: float(v) for name, v in zip(SCALARS, scalars) if name in wanted})
        paths = self._statistics_paths()
        if "per_variable_norms" in self._statistics:
            norms = record[len(st.HEADER) + len(SCALARS):]
            out.update({f"gradient_norm/{p}": float(n) for p, n in zip(paths, norms)})
        if histograms and "histograms" in self._statistics:
            rows = read(self._statistics_histograms)
            out["histograms"] = {p: (row[:2], row[2:]) for p, row in zip(paths, rows)}
        self._statistics_cache = (key, out)
        return dict(out)

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

    # Keras optimizer hooks ----------------------------------------------------
    def _backend_apply_gradients(self, grads, trainable_variables):
        if self._statistics:
            scratch = self._step_scratch
            scratch.indices = [self._get_variable_index(v) for v in trainable_variables]
            if "update_ratio" in self._statistics:
                scratch.before = self._snapshot(trainable_variables)
        super()._backend_apply_gradients(grads, trainable_variables)

    def _snapshot(self, variables):
        """Copies of the weights before an update that records `update_ratio`, else zeros.

        Holding a copy makes TensorFlow's in-place update kernels copy the weights, a cost
        worth paying only on the updates that are recorded.
        """
        every = self._statistics["update_ratio"]
        if every == 1:
            return [ops.copy(v) for v in variables]
        recorded = ops.equal(ops.mod(ops.add(self.iterations, 1), every), 0)
        return ops.cond(
            recorded,
            lambda: [ops.copy(v) for v in variables],
            lambda: [ops.zeros(v.shape, v.dtype) for v in variables],
        )

    def _clip_gradients(self, grads):
        clipped = super()._clip_gradients(grads)
        if self._statistics:
            self._step_scratch.grads, self._step_scratch.clipped = grads, clipped
        return clipped

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        hyperparameters = self._step_hyperparameters(learning_rate)
        super()._backend_update_step(grads, trainable_variables, hyperparameters)
        if self._statistics:
            self._record(trainable_variables, hyperparameters)
        self._step_scratch = threading.local()

    def _record(self, trainable_variables, hyperparameters):
        # Runs before `apply` counts this update: it is update number iterations + 1.
        step = ops.add(self.iterations, 1)
        single_replica = st.replica_count() == 1
        scratch = self._step_scratch
        record_every = [n for kind, n in self._statistics.items() if kind != "histograms"]
        if record_every:
            def record():
                row = self._record_row(step, scratch, trainable_variables, hyperparameters)
                return [(self._statistics_record, row)]

            every = math.gcd(*record_every)
            st.when(ops.equal(ops.mod(step, every), 0), record, single_replica)
        if "histograms" in self._statistics:
            def rows():
                grads = st.sum_over_replicas(scratch.grads)
                histograms = ops.stack([st.histogram(g) for g in grads])
                shape = self._statistics_histograms.shape
                rows = st.scatter_rows(scratch.indices, histograms, shape)
                return [(self._statistics_histograms, rows)]

            every = self._statistics["histograms"]
            st.when(ops.equal(ops.mod(step, every), 0), rows, single_replica)

    def _record_row(self, step, scratch, trainable_variables, hyperparameters):
        kinds = self._statistics
        scalars = {}
        if "hyperparameters" in kinds:
            scalars.update(self._hyperparameter_values(hyperparameters))
        squares = None
        if kinds.keys() & {"gradient_norms", "per_variable_norms"}:
            grads = st.sum_over_replicas(scratch.grads)
            squares = ops.stack([st.sum_of_squares(g) for g in grads])
            scalars["gradient_norm/global"] = ops.sqrt(ops.sum(squares))
            if scratch.clipped is scratch.grads:
                scalars["gradient_norm/global_clipped"] = scalars["gradient_norm/global"]
            else:
                clipped = st.sum_over_replicas(scratch.clipped)
                scalars["gradient_norm/global_clipped"] = st.global_norm(clipped)
        if "update_ratio" in kinds:
            before = scratch.before
            moved = st.global_norm([ops.subtract(v, b) for v, b in zip(trainable_variables, before)])
            scalars["update_ratio/global"] = moved / ops.maximum(st.global_norm(before), 1e-12)
        velocities = self._velocity_variables()
        if "velocity_norm" in kinds and velocities:
            scalars["velocity_norm/global"] = st.global_norm(velocities)
        nan = ops.convert_to_tensor(float("nan"), "float32")
        row = st.step_header(step)
        row += [ops.cast(scalars[name], "float32") if name in scalars else nan for name in SCALARS]
        count = len(self._trainable_variables)
        if "per_variable_norms" in kinds:
            norms = st.scatter_rows(scratch.indices, ops.sqrt(squares), (count,))
        else:
            norms = ops.zeros((count,), "float32")
        return ops.concatenate([ops.stack(row), norms])
