"""The work a train step does to record statistics, traced into the step.

`StepStatistics` holds the parts of `InstrumentationMixin` that build the in-step
computation: norms of the old state before the update (`_before_update`,
`_after_weight_norms`, and `_velocity_sums_before_update` when every update records) and
the raw row of an update (`_raw_row`), written into the ring by `_record`. The step does
only reductions and one row assembly; the host finishes the rows (`_statistics.finish`).
The Keras hooks that call them, the storage and the host-side reading stay in
`instrumentation.py`.
"""

import contextlib

import keras
from keras import ops

from keras_momentum.optimizers import _statistics as st


class StepStatistics:
    """In-step recording of `InstrumentationMixin`; relies on its attributes and hooks."""

    def _before_update(self, scratch, clipped):
        """`‖θ‖²` of each variable, and copies of those whose `Δθ` is not otherwise known.

        Computed on the updates that record only (where the backend allows a
        conditional); copies make TensorFlow's in-place update kernels copy the weights.
        When every `Δθ` is known and not every update records (or under JAX, see
        `_sums_follow_update`), nothing happens here: the record recovers `θ = θ' - Δθ`
        from the new weights instead, which saves this conditional on the updates that
        do not record.
        """
        variables = scratch.variables
        scratch.sources = [self._update_source(v, g) for v, g in zip(variables, clipped)]
        copied = [i for i, source in enumerate(scratch.sources) if source is None]
        if not copied and (self.record_every != 1 or self._sums_follow_update()):
            scratch.weight_squares = None
            return

        def compute():
            return [st.square_norms(variables), *[ops.copy(variables[i]) for i in copied]]

        def zeros():
            return [
                ops.zeros((len(variables),), "float32"),
                *[ops.zeros(variables[i].shape, variables[i].dtype) for i in copied],
            ]

        step = ops.add(self.iterations, 1)
        condition = st.record_condition(step, self.record_every)
        before = st.computed(condition, compute, zeros, st.replica_count() == 1)
        scratch.weight_squares = before[0]
        scratch.copies = dict(zip(copied, before[1:]))

    def _after_weight_norms(self):
        """On TensorFlow, orders what follows after the reductions of the old state.

        Those are `‖θ‖²` before the update and, when every update records, `Σ v²` of
        the velocities the previous update left. The update kernels then find the
        weights and velocities referenced by nobody else and update them in place (and
        the reductions see the old values).
        """
        scratch = self._step_scratch
        before = [
            tensor
            for tensor in (getattr(scratch, "weight_squares", None),
                           getattr(scratch, "previous_velocity_squares", None))
            if tensor is not None
        ]
        if not before or keras.backend.backend() != "tensorflow":
            return contextlib.nullcontext()
        import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

        return tf.control_dependencies(before)

    def _sums_follow_update(self):
        """Whether, when every update records, the state's norms are taken after the update.

        Under JAX, XLA fuses the reductions of the new velocities and of `θ' − Δθ` with
        the update that writes them: on the benchmark's MLP (2 CPU cores) a step with
        statistics ran at 0.89–0.90 of the plain step's speed this way, 0.85–0.88
        reducing the old state first. TensorFlow's executor runs the reductions of the
        old state at the start of the step, beside the forward pass, while reductions
        after the update kernels lengthen the end of the step (0.92 against 0.95 there);
        PyTorch runs every operation in turn, where taking `θ' − Δθ` would add a pass.
        """
        return keras.backend.backend() == "jax"

    def _velocity_sums_before_update(self):
        """When every update records (not under JAX, see `_sums_follow_update`): the
        previous update's velocity sums, for this row.

        Velocity norms and the update ratio need the velocities after an update. Reading
        them at the end of that update's step would wait for its last update kernel;
        the next update reads them at the start of its step instead, before changing
        them, off the critical path, and its row carries them (`velocity_lag` 1). The
        velocities do not change in between: only updates change them (skipped updates
        and micro-batches under accumulation do not).
        """
        scratch = self._step_scratch
        scratch.velocity_sums = self._velocity_sums(scratch, lag=1.0)

    def _velocity_sums(self, scratch, lag):
        """`[Σ v² of the source velocities, Σ v² of all, lag]` for a raw row; `[0, NaN,
        NaN]` when no recorded statistic needs the velocities."""
        nan = ops.convert_to_tensor(float("nan"), "float32")
        zero = ops.convert_to_tensor(0.0, "float32")
        sources = self._velocity_sources(scratch)
        velocity_norm = self._records_velocity_norm()
        if not (sources or velocity_norm):
            return [zero, nan, nan]
        squares = st.square_norms(self._velocity_variables())
        scratch.previous_velocity_squares = squares  # orders the update kernels after it
        return [*st.velocity_sums(squares, sources, velocity_norm),
                ops.convert_to_tensor(lag, "float32")]

    def _record(self, trainable_variables, hyperparameters):
        # Runs before `apply` counts this update: it is update number iterations + 1.
        step = ops.add(self.iterations, 1)
        single_replica = st.replica_count() == 1
        scratch = self._step_scratch
        every = self.record_every
        ring = self._statistics_record
        if every == 1:
            if self._sums_follow_update():
                sums = self._velocity_sums(scratch, lag=0.0)
            else:
                sums = scratch.velocity_sums
            row = self._raw_row(step, scratch, trainable_variables, hyperparameters, sums)
            st.write_row(ring, step, row, single_replica)
        elif every:
            def record():
                # After this update, in its own row.
                sums = self._velocity_sums(scratch, lag=0.0)
                row = self._raw_row(step, scratch, trainable_variables, hyperparameters, sums)
                return [(ring, st.ring_row(ring, step, every, row))]

            st.when(st.record_condition(step, every), record, single_replica)
        if "histograms" in self._statistics:
            def rows():
                grads = st.sum_over_replicas(scratch.grads)
                histograms = ops.stack([st.histogram(g) for g in grads])
                shape = (self._statistics_histograms.shape[0] - 1,
                         self._statistics_histograms.shape[1])
                rows = st.scatter_rows(scratch.indices, histograms, shape)
                header = ops.pad(ops.stack(st.step_header(step)), [[0, shape[1] - 2]])
                return [(self._statistics_histograms,
                         ops.concatenate([ops.expand_dims(header, 0), rows]))]

            condition = st.record_condition(step, self._statistics["histograms"])
            st.when(condition, rows, single_replica)

    def _records_velocity_norm(self):
        return "velocity_norm" in self._statistics and bool(self._velocity_variables())

    def _velocity_sources(self, scratch):
        """Positions among `_velocity_variables()` of the velocities that are some `Δθ`.

        Also kept (`_traced_velocity_sources`) for the host, which finishes the latest
        record when it cannot wait for the next update.
        """
        sources = []
        if "update_ratio" in self._statistics:
            position = {id(v): i for i, v in enumerate(self._velocity_variables())}
            sources = [
                position[id(source)]
                for source in scratch.sources
                if source is not None and not isinstance(source, str)
            ]
        self._traced_velocity_sources = sources
        return sources

    def _raw_row(self, step, scratch, trainable_variables, hyperparameters, velocity_sums):
        """The raw row of this update (`st.RAW`), in few operations (each costs dispatch
        time): norms stay squared, one reduction per tensor, sums over variables and
        square roots are the host's."""
        kinds = self._statistics
        nan = ops.convert_to_tensor(float("nan"), "float32")
        raw = dict.fromkeys(st.RAW, nan)
        if "hyperparameters" in kinds:
            for name, value in self._hyperparameter_values(hyperparameters).items():
                if name in raw:
                    raw[name] = ops.cast(value, "float32")
        squares = None
        if kinds.keys() & {"gradient_norms", "per_variable_norms"}:
            squares = st.square_norms(st.sum_over_replicas(scratch.grads))
        clipped_squares = []

        def clipped():
            if not clipped_squares:
                if scratch.clipped is scratch.grads and squares is not None:
                    clipped_squares.append(squares)
                else:
                    grads = st.sum_over_replicas(scratch.clipped)
                    clipped_squares.append(st.square_norms(grads))
            return clipped_squares[0]

        if "gradient_norms" in kinds:
            if scratch.clipped is scratch.grads:
                raw["clipped_squares"] = ops.convert_to_tensor(st.SAME_AS_GRADIENT, "float32")
            else:
                raw["clipped_squares"] = ops.sum(clipped())
        if "update_ratio" in kinds:
            scale_squared = ops.square(ops.cast(self._update_scale(hyperparameters), "float32"))
            raw["moved_squares"] = self._update_squares(
                scratch, trainable_variables, scale_squared, clipped
            )
            raw["velocity_scale_squared"] = scale_squared
            weight_squares = scratch.weight_squares
            if weight_squares is None:
                weight_squares = self._weight_squares_before(
                    scratch, trainable_variables, hyperparameters
                )
            raw["weight_squares"] = ops.sum(weight_squares)
        if getattr(self, "skip_nonfinite", False):
            raw["nonfinite_steps"] = ops.cast(self.nonfinite_steps, "float32")
        (raw["velocity_source_squares"], raw["velocity_squares"],
         raw["velocity_lag"]) = velocity_sums
        count = len(self._trainable_variables)
        if squares is not None:
            per_variable = st.scatter_rows(scratch.indices, squares, (count,))
        else:
            per_variable = ops.zeros((count,), "float32")
        return ops.concatenate([ops.stack([*st.step_header(step), *raw.values()]), per_variable])

    def _weight_squares_before(self, scratch, variables, hyperparameters):
        """`‖θ‖²` before this update, from the new weights and the known `Δθ = c·s`."""
        scale = self._update_scale(hyperparameters)
        grads = None
        if any(isinstance(source, str) for source in scratch.sources):
            grads = st.sum_over_replicas(scratch.clipped)  # what the update applied
        before = []
        for i, (variable, source) in enumerate(zip(variables, scratch.sources)):
            source = grads[i] if isinstance(source, str) else source
            step = ops.multiply(ops.cast(scale, variable.dtype), source)
            before.append(ops.subtract(variable, step))
        return st.square_norms(before)

    def _update_squares(self, scratch, variables, scale_squared, clipped):
        """`‖Δθ‖²` summed over the variables this update changed, but for those whose `Δθ`
        is a multiple of a velocity (`st.finish` adds them)."""
        copied, from_gradient = [], []
        for i, (variable, source) in enumerate(zip(variables, scratch.sources)):
            if source is None:
                copied.append(ops.subtract(variable, scratch.copies[i]))
            elif isinstance(source, str):
                from_gradient.append(i)
        terms = []
        if from_gradient:
            terms.append(ops.multiply(scale_squared, st.gathered_sum(clipped(), from_gradient)))
        if copied:
            terms.append(ops.sum(st.square_norms(copied)))
        if not terms:
            return ops.zeros((), "float32")
        return terms[0] if len(terms) == 1 else ops.sum(ops.stack(terms))
