"""What this package adds to an optimizer: plateau state, strict loading, diagnostics hooks.

`InstrumentationMixin` sits in front of `keras.optimizers.Optimizer` in every optimizer of
this package; `instrument(optimizer)` puts it in front of Keras's own (`instrumented.py`).

State. `optimizer.variables` are Keras's (`iterations`, the learning-rate variable when the
rate is a float, the slots) plus `plateau_state`, one float32 vector
`[factor, best, wait, cooldown]`. `factor` multiplies a learning-rate schedule or callable;
`best`, `wait` and `cooldown` are `ReduceLROnPlateau`'s counters (`best` is NaN before the
first epoch), kept here so that a checkpoint restores them with the weights. A float
learning rate is never multiplied: `optimizer.learning_rate` is then Keras's variable, which
the plateau reducers (ours and Keras's) and `LearningRateScheduler` assign.

Diagnostics. While a logger is attached the optimizer carries a `diagnostics.Recorder`; the
two Keras hooks below hand it the gradients (`_clip_gradients`) and the update
(`_backend_update_step`). Its buffers are never saved (`save_own_variables`).
"""

import keras
import numpy as np
from keras import ops

PLATEAU_FIELDS = ("factor", "best", "wait", "cooldown")
_Schedule = keras.optimizers.schedules.LearningRateSchedule


class InstrumentationMixin:
    """Adds `plateau_state`, strict loading and the diagnostics hooks to a Keras optimizer."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recorder = None  # a diagnostics.Recorder while a logger is attached
        with keras.name_scope(self.name, caller=self):
            self.plateau_state = keras.Variable(
                [1.0, float("nan"), 0.0, 0.0],
                name="plateau_state",
                dtype="float32",
                trainable=False,
                aggregation="only_first_replica",
            )

    # ---------------------------------------------------------- learning rate
    def _get_current_learning_rate(self):
        rate = self._learning_rate
        if isinstance(rate, keras.Variable):
            return rate  # Keras's own variable: assignable, never multiplied
        if isinstance(rate, _Schedule):
            rate = rate(self.iterations)
        elif callable(rate):
            rate = rate()
        return ops.multiply(ops.cast(rate, "float32"), self.plateau_state[0])

    @property
    def plateau_factor(self):
        """The factor `ReduceLROnPlateau` applies to a scheduled learning rate (1 at first)."""
        return self.plateau_state[0]

    # ------------------------------------------------------------------ state
    def _state_variables(self):
        """`self.variables` without the diagnostics buffers: what checkpoints hold."""
        if self.recorder is None:
            return self.variables
        buffers = {id(v) for v in self.recorder.buffers}
        return [v for v in self.variables if id(v) not in buffers]

    def build(self, variables):
        if self.built:
            return
        # What `build` adds (slots, accumulators) comes after these.
        self._unbuilt_variable_count = len(self._state_variables())
        super().build(variables)
        if self.recorder is not None:
            self.recorder.create_buffers()

    def save_own_variables(self, store):
        for i, variable in enumerate(self._state_variables()):
            store[str(i)] = variable.numpy()

    def load_own_variables(self, store):
        """Loads a saved state, or raises `ValueError` and changes nothing.

        A state saved before the optimizer was built (no slots yet) loads into a built
        optimizer: its variables are restored and the slots keep their initial zeros, as
        a fresh optimizer would have them. Any other difference in the number of
        variables or in a shape raises.
        """
        own = self._state_variables()
        saved = len(store.keys())
        unbuilt = len(own) - self._slot_count()
        if saved == unbuilt and self.built:
            own = own[:unbuilt]
        elif saved != len(own):
            hint = (
                " It is not built yet: build it on the model's trainable variables first, "
                "`model.optimizer.build(model.trainable_variables)` (as "
                "keras.callbacks.BackupAndRestore does), then load."
                if not self.built
                else " The model's trainable variables or the optimizer's configuration "
                "differ from those that were saved."
            )
            raise ValueError(
                f"Cannot load the state of optimizer {self.name!r}: the saved state has "
                f"{saved} variables but this optimizer has {len(own)}.{hint}"
            )
        values = [store[str(i)] for i in range(len(own))]
        for i, (variable, value) in enumerate(zip(own, values)):
            if tuple(np.shape(value)) != tuple(variable.shape):
                raise ValueError(
                    f"Cannot load the state of optimizer {self.name!r}: saved variable {i} "
                    f"has shape {tuple(np.shape(value))} but {variable.path!r} has shape "
                    f"{tuple(variable.shape)}."
                )
        for variable, value in zip(own, values):
            variable.assign(value)

    def _slot_count(self):
        """Variables `build` created (slots, accumulators); 0 before `build`."""
        if not self.built:
            return 0
        return len(self._state_variables()) - self._unbuilt_variable_count

    def __reduce__(self):
        # As for Keras's optimizers, a copy comes back unbuilt, from the configuration; its
        # `iterations`, learning-rate variable and plateau state come with it.
        count = self._unbuilt_variable_count if self.built else len(self._state_variables())
        values = [np.asarray(keras.ops.convert_to_numpy(v)) for v in self._state_variables()[:count]]
        return _unpickle, (type(self), self.get_config(), values)

    # ------------------------------------------------------- diagnostics hooks
    def _recording(self):
        """The recorder, while a logger is attached and the step being traced records."""
        recorder = self.recorder
        return recorder if recorder is not None and recorder.records() else None

    def _clipping_configured(self):
        return any(getattr(self, name, None) for name in ("clipnorm", "clipvalue", "global_clipnorm"))

    def _velocity_values(self):
        """The velocities as float32 tensors, for `velocity_norm`; none for Keras's Adam."""
        return [ops.cast(v, "float32") for v in getattr(self, "momentums", []) if v is not None]

    def _clip_gradients(self, grads):
        recorder = self._recording()
        if recorder is not None:
            recorder.record_gradients(self, grads)
        return super()._clip_gradients(grads)

    def _apply_weight_decay(self, variables):
        # Keras decays the weights before `_backend_update_step`; while recording, the
        # decay waits for it, so that `update_ratio`'s copy of the weights precedes it.
        if self._recording() is None:
            super()._apply_weight_decay(variables)

    def _held_back_weight_decay(self, variables):
        super()._apply_weight_decay(variables)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        hyperparameters = self._step_hyperparameters(learning_rate)
        recorder = self._recording()
        if recorder is None:
            return super()._backend_update_step(grads, trainable_variables, hyperparameters)
        before = recorder.before_update(trainable_variables)
        self._held_back_weight_decay(trainable_variables)
        super()._backend_update_step(grads, trainable_variables, hyperparameters)
        recorder.record_update(self, grads, trainable_variables, before,
                               self._hyperparameter_values(hyperparameters))
        return None

    # Hooks that this package's optimizers override ---------------------------
    def _step_hyperparameters(self, learning_rate):
        """What `update_step` receives as its third argument; Keras passes the rate."""
        return learning_rate

    def _hyperparameter_values(self, hyperparameters):
        """`{name: float32 scalar}` of the hyperparameters this update used."""
        values = {"learning_rate": hyperparameters}
        momentum = getattr(self, "momentum", None)
        if isinstance(momentum, (int, float)) and not isinstance(momentum, bool):
            values["momentum"] = momentum
        if self.weight_decay is not None:
            values["weight_decay"] = self.weight_decay
        return values


def _unpickle(cls, config, values):
    optimizer = cls.from_config(config)
    for variable, value in zip(optimizer.variables, values):
        variable.assign(value)
    return optimizer
