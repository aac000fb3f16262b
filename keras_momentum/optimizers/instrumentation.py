"""Per-update statistics and a learning-rate multiplier for any Keras optimizer.

`InstrumentationMixin` is the one mechanism behind the diagnostics callbacks and the
plateau reducer. Every optimizer of this package inherits it; a built-in Keras optimizer
gets it through `instrument(optimizer)`, which returns an equivalent optimizer of a
registered subclass (`keras_momentum>InstrumentedAdam`, ...), so models saved with it load
without `custom_objects`.

What it adds:

* `learning_rate_multiplier`: a float32 scalar variable (initially 1) that is part of the
  optimizer's saved state. The learning rate used for update t is
  `base(t) * learning_rate_multiplier`, where `base` is the float, schedule or callable
  given as `learning_rate`; `optimizer.learning_rate` returns that product. Schedules are
  evaluated at `optimizer.iterations`, the number of updates done, which under
  `gradient_accumulation_steps` counts real updates, not micro-batches.
* Statistics of the latest update, recorded inside the compiled train step, only for the
  kinds that `enable_statistics` switched on before the step was traced: an optimizer
  nobody asked for statistics adds no operation to the step. Their storage is created in
  `build` whatever is enabled, so the optimizer's variable list (and so every checkpoint)
  does not depend on which callbacks were attached.
* Strict loading: a saved optimizer state whose variable count or shapes differ raises
  a `ValueError` instead of being skipped with a warning; so does loading into an
  optimizer that is not built yet (build it on the model's trainable variables first).
"""

import threading

import keras
from keras import ops

from keras_momentum.optimizers._dense import is_indexed_slices

STATISTICS = (
    "hyperparameters",
    "gradient_norms",
    "per_variable_norms",
    "update_ratio",
    "velocity_norm",
    "histograms",
)
SCALARS = (
    "learning_rate",
    "momentum",
    "weight_decay",
    "gradient_norm/global",
    "gradient_norm/global_clipped",
    "update_ratio/global",
    "velocity_norm/global",
)
HISTOGRAM_BINS = 30


class InstrumentationMixin:
    """Adds a learning-rate multiplier and in-step statistics to a Keras optimizer."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._statistics = frozenset()
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
        count = len(variables)
        self._statistics_scalars = self._statistics_variable("scalars", (len(SCALARS),))
        self._statistics_norms = self._statistics_variable("per_variable_norms", (count,))
        self._statistics_histograms = self._statistics_variable(
            "histograms", (count, HISTOGRAM_BINS)
        )
        self._statistics_ranges = self._statistics_variable("histogram_ranges", (count, 2))

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
    def enable_statistics(self, *kinds):
        """Switches on recording of `kinds` (any of `STATISTICS`) for steps traced later.

        Statistics already enabled stay enabled. Callbacks call this from `set_model` and
        make the model retrace its train function.
        """
        for kind in kinds:
            if kind not in STATISTICS:
                choices = ", ".join(repr(k) for k in STATISTICS)
                raise ValueError(f"`kinds` must be among {choices}, got {kind!r}")
        self._statistics = self._statistics | frozenset(kinds)

    @property
    def enabled_statistics(self):
        return self._statistics

    def read_statistics(self, values=None):
        """Host copies of the enabled statistics of the latest update, by name.

        Optimizers with `skip_nonfinite=True` also report `"nonfinite_steps"`, the number
        of updates skipped so far, whatever statistics are enabled.

        `values` optionally maps optimizer variables' paths to current values, for
        backends (JAX) whose training loop holds state outside the variables.
        """
        def read(variable):
            if values is not None and variable.path in values:
                return keras.ops.convert_to_numpy(values[variable.path])
            # The variable, not `.value`: a distributed value cannot be converted inside
            # its strategy's scope.
            return keras.ops.convert_to_numpy(variable)

        out = {}
        if not self.built:
            return out
        scalars = read(self._statistics_scalars)
        wanted = self._recorded_scalar_names()
        for i, name in enumerate(SCALARS):
            if name in wanted:
                out[name] = float(scalars[i])
        paths = unique_paths(self._trainable_variables)
        if getattr(self, "skip_nonfinite", False):
            # Updates skipped so far for non-finite gradients (`MomentumOptimizer`).
            out["nonfinite_steps"] = int(read(self.nonfinite_steps))
        if "per_variable_norms" in self._statistics:
            norms = read(self._statistics_norms)
            for path, norm in zip(paths, norms):
                out[f"gradient_norm/{path}"] = float(norm)
        if "histograms" in self._statistics:
            out["histograms"] = {
                path: (ranges, counts)
                for path, ranges, counts in zip(
                    paths, read(self._statistics_ranges), read(self._statistics_histograms)
                )
            }
        return out

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
        scratch = self._step_scratch
        scratch.indices = [self._get_variable_index(v) for v in trainable_variables]
        if "update_ratio" in self._statistics:
            scratch.before = [ops.copy(v) for v in trainable_variables]
        super()._backend_apply_gradients(grads, trainable_variables)

    def _clip_gradients(self, grads):
        if not self._statistics & {"gradient_norms", "per_variable_norms", "histograms"}:
            return super()._clip_gradients(grads)
        scratch = self._step_scratch
        summed = _sum_over_replicas(grads)
        scratch.squares = [_sum_of_squares(g) for g in summed]
        if "histograms" in self._statistics:
            scratch.histograms = [_histogram(g) for g in summed]
        clipped = super()._clip_gradients(grads)
        if clipped is grads:
            scratch.clipped_norm = ops.sqrt(ops.sum(ops.stack(scratch.squares)))
        else:
            clipped_sum = _sum_over_replicas(clipped)
            scratch.clipped_norm = ops.sqrt(ops.sum(ops.stack([_sum_of_squares(g) for g in clipped_sum])))
        return clipped

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        hyperparameters = self._step_hyperparameters(learning_rate)
        super()._backend_update_step(grads, trainable_variables, hyperparameters)
        if self._statistics:
            self._record(trainable_variables, hyperparameters)

    def _record(self, trainable_variables, hyperparameters):
        scratch = self._step_scratch
        scalars = {}
        if "hyperparameters" in self._statistics:
            scalars.update(self._hyperparameter_values(hyperparameters))
        if hasattr(scratch, "squares"):
            scalars["gradient_norm/global"] = ops.sqrt(ops.sum(ops.stack(scratch.squares)))
            scalars["gradient_norm/global_clipped"] = scratch.clipped_norm
        if "update_ratio" in self._statistics:
            after = [ops.copy(v) for v in trainable_variables]
            moved = ops.sum(ops.stack([_sum_of_squares(a - b) for a, b in zip(after, scratch.before)]))
            size = ops.sum(ops.stack([_sum_of_squares(b) for b in scratch.before]))
            scalars["update_ratio/global"] = ops.sqrt(moved) / ops.maximum(ops.sqrt(size), 1e-12)
        velocities = self._velocity_variables()
        if "velocity_norm" in self._statistics and velocities:
            scalars["velocity_norm/global"] = ops.sqrt(
                ops.sum(ops.stack([_sum_of_squares(v) for v in velocities]))
            )
        if scalars:
            stored = ops.convert_to_tensor(self._statistics_scalars)
            row = [
                ops.cast(scalars[name], "float32") if name in scalars else stored[i]
                for i, name in enumerate(SCALARS)
            ]
            self._statistics_scalars.assign(ops.stack(row))
        count = len(self._trainable_variables)
        if "per_variable_norms" in self._statistics:
            self._statistics_norms.assign(
                _scatter_rows(scratch.indices, ops.sqrt(ops.stack(scratch.squares)), (count,))
            )
        if "histograms" in self._statistics:
            ranges = ops.stack([r for r, _ in scratch.histograms])
            counts = ops.stack([c for _, c in scratch.histograms])
            self._statistics_ranges.assign(_scatter_rows(scratch.indices, ranges, (count, 2)))
            self._statistics_histograms.assign(
                _scatter_rows(scratch.indices, counts, (count, HISTOGRAM_BINS))
            )
        self._step_scratch = threading.local()


def unique_paths(variables):
    """The variables' paths, with `_1`, `_2`, ... appended to repeats, in order.

    Keras lets two variables share a path (two layers of one name built outside a model),
    and `read_statistics` keys per-variable values by path. `global` and `global_clipped`
    are avoided too: they name the global norms in the same key space.
    """
    taken = {"global", "global_clipped"}
    paths = []
    for variable in variables:
        path, repeat = variable.path, 0
        while path in taken:
            repeat += 1
            path = f"{variable.path}_{repeat}"
        taken.add(path)
        paths.append(path)
    return paths


def _sum_over_replicas(grads):
    """The gradients summed over the replicas of a `tf.distribute` strategy, else `grads`.

    Each replica clips and records its own share of the batch's gradient; the update
    applies their sum (all-reduced after clipping), so the statistics describe that sum.
    """
    if keras.backend.backend() != "tensorflow":
        return grads
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return grads
    return context.all_reduce(tf.distribute.ReduceOp.SUM, list(grads))


def _values(gradient):
    # IndexedSlices: the stored rows. Rows repeated in `indices` are counted apart.
    return gradient.values if is_indexed_slices(gradient) else gradient


def _sum_of_squares(tensor):
    return ops.sum(ops.square(ops.cast(_values(tensor), "float32")))


def _histogram(gradient):
    values = ops.reshape(ops.cast(_values(gradient), "float32"), (-1,))
    low, high = ops.min(values), ops.max(values)
    width = ops.maximum(high - low, 1e-30)
    bins = ops.clip(ops.floor((values - low) / width * HISTOGRAM_BINS), 0, HISTOGRAM_BINS - 1)
    counts = ops.segment_sum(ops.ones_like(values), ops.cast(bins, "int32"), HISTOGRAM_BINS)
    return ops.stack([low, high]), counts


def _scatter_rows(indices, rows, shape):
    """A zero tensor of `shape` whose rows `indices` hold `rows` (stacked per gradient)."""
    if list(indices) == list(range(shape[0])):
        return rows
    return ops.scatter(ops.expand_dims(ops.array(indices, "int32"), -1), rows, shape)


_INSTRUMENTED = {}


def instrumented_class(optimizer_class):
    """The registered subclass of `optimizer_class` that carries `InstrumentationMixin`."""
    if issubclass(optimizer_class, InstrumentationMixin):
        return optimizer_class
    if optimizer_class not in _INSTRUMENTED:
        name = f"Instrumented{optimizer_class.__name__}"
        subclass = type(
            name,
            (InstrumentationMixin, optimizer_class),
            {
                "__module__": __name__,
                "__doc__": f"`{optimizer_class.__name__}` with keras_momentum's "
                "learning-rate multiplier and statistics recording.",
            },
        )
        keras.saving.register_keras_serializable(package="keras_momentum", name=name)(subclass)
        _INSTRUMENTED[optimizer_class] = subclass
    return _INSTRUMENTED[optimizer_class]


def instrument(optimizer):
    """Returns an equivalent, unbuilt copy of a Keras optimizer that records statistics.

    Use it for built-in optimizers (`keras.optimizers.Adam`, `SGD`, `AdamW`, ...) so that
    `GradientNormLogger`, `LearningRateLogger` and `ReduceLROnPlateau` work with them.
    Optimizers of this package are returned as they are.

    Example: `model.compile(optimizer=instrument(keras.optimizers.Adam(1e-3)), ...)`.
    """
    if isinstance(optimizer, InstrumentationMixin):
        return optimizer
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            f"`optimizer` must be a keras.optimizers.Optimizer instance, got {optimizer!r}"
        )
    if hasattr(optimizer, "inner_optimizer"):
        raise TypeError(
            f"`optimizer` is a {type(optimizer).__name__} wrapping another optimizer; "
            "instrument the optimizer it wraps before wrapping it (compile() wraps in a "
            "LossScaleOptimizer automatically under mixed_float16)"
        )
    if optimizer.built:
        raise ValueError(
            f"`optimizer` {optimizer.name!r} is already built; instrument it before "
            "compiling or training"
        )
    return instrumented_class(type(optimizer)).from_config(optimizer.get_config())


for _name in (
    "SGD", "Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Adagrad", "Adadelta",
    "Adafactor", "Ftrl", "Lion", "Lamb", "Muon",
):
    if hasattr(keras.optimizers, _name):
        instrumented_class(getattr(keras.optimizers, _name))
