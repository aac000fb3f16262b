"""Lookahead: slow weights that periodically pull a wrapped optimizer's weights back."""

import keras
from keras import ops

from keras_momentum.optimizers import _hyperparameters as hp


@keras.saving.register_keras_serializable(package="keras_momentum")
class Lookahead(keras.optimizers.Optimizer):
    """Wraps any Keras optimizer; every `k` of its updates, interpolates towards slow weights.

    The wrapped ("inner") optimizer updates the model's weights, the fast weights `θ`,
    as usual. The Lookahead keeps slow weights `φ`, equal to `θ` before the first inner
    update, and after every `k`-th inner update (k = `sync_period`) does

        φ ← φ + α·(θ − φ)
        θ ← φ

    with `α` = `slow_step_size`. Only updates the inner optimizer really makes count
    towards `k`: micro-batches under `gradient_accumulation_steps` and steps that the
    inner optimizer skips (non-finite gradients with `skip_nonfinite=True`, or a
    `LossScaleOptimizer` inside) do not. The inner optimizer's own state (momentum,
    ...) is left as it is at a synchronisation, like `pytorch_optimizer.Lookahead`'s
    default `pullback_momentum="none"`.

    Like `keras.optimizers.LossScaleOptimizer`, the wrapper delegates `learning_rate`
    (reading and setting), `iterations` (the inner optimizer's update count) and
    `scale_loss` to the inner optimizer, which is kept as `inner_optimizer`. The slow
    weights and the wrapper's count of inner updates are optimizer variables, saved
    with the model and restored by `keras.models.load_model` together with the inner
    optimizer (serialised in `get_config`). Gradient clipping, weight decay, EMA and
    loss scaling are options of the inner optimizer, not of the wrapper.

    Synchronisations run inside the compiled train step: under `ops.cond` on the
    TensorFlow and PyTorch backends, and as `ops.where` selections on JAX, whose
    conditionals cannot hold variable assignments.

    Args:
        optimizer: the `keras.optimizers.Optimizer` instance to wrap (a built-in Keras
            optimizer or one of this package's).
        sync_period: `k`, integer >= 1. Defaults to 5, the paper's value.
        slow_step_size: `α`, float in (0, 1]; 1 makes the wrapper a no-op. Defaults to
            0.5, the paper's value.
        name: the optimizer's name.

    Reference:
        Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back",
        NeurIPS 2019.
    """

    def __init__(self, optimizer, sync_period=5, slow_step_size=0.5, name=None, **kwargs):
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                f"`optimizer` must be a keras.optimizers.Optimizer instance, got {optimizer!r}"
            )
        if isinstance(sync_period, bool) or not isinstance(sync_period, int) or sync_period < 1:
            raise ValueError(f"`sync_period` must be an integer >= 1, got {sync_period!r}")
        slow_step_size = hp.check_number(
            "slow_step_size", slow_step_size, 0.0, 1.0, low_open=True
        )
        if kwargs:
            names = ", ".join(f"`{key}`={value!r}" for key, value in kwargs.items())
            raise ValueError(
                f"Lookahead does not take {names}; set options such as clipping, weight "
                "decay or EMA on the wrapped optimizer"
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = optimizer
        self.sync_period = sync_period
        self.slow_step_size = slow_step_size

    def build(self, variables):
        if self.built:
            return
        self.inner_optimizer.build(variables)
        super().build(variables)
        self.slow_weights = self.add_optimizer_variables(variables, "slow")

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "`trainable_variables` must be given to the first `apply` of an unbuilt "
                    "Lookahead (or call `optimizer.build(trainable_variables)` first)"
                )
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
        variables = self._trainable_variables
        if trainable_variables is not None:
            variables = list(trainable_variables)
        pairs = [
            (variable, self.slow_weights[self._get_variable_index(variable)])
            for variable in variables
        ]
        pairs = [(fast, slow) for fast, slow in pairs if slow is not None]
        # `_iterations` counts the inner updates made under this wrapper.
        _assign_if(
            ops.equal(self._iterations, 0), lambda: [(slow, fast.value) for fast, slow in pairs]
        )
        # A copy: on TensorFlow, converting the variable itself would read it later.
        before = ops.copy(self.inner_optimizer.iterations)
        self.inner_optimizer.apply(grads, trainable_variables)
        updated = ops.not_equal(self.inner_optimizer.iterations, before)
        count = self._iterations + ops.cast(updated, self._iterations.dtype)
        self._iterations.assign(count)
        synchronise = ops.logical_and(updated, ops.equal(count % self.sync_period, 0))
        _assign_if(synchronise, lambda: self._synchronised(pairs))

    def _synchronised(self, pairs):
        assignments = []
        for fast, slow in pairs:
            step_size = ops.cast(self.slow_step_size, slow.dtype)
            new_slow = ops.add(slow.value, ops.multiply(step_size, fast.value - slow.value))
            assignments += [(slow, new_slow), (fast, new_slow)]
        return assignments

    # ------------------------------------------------------------ delegation
    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    # -------------------------------------------------------- serialisation
    def load_own_variables(self, store):
        # Keras skips a mismatched state with a warning; losing slow weights silently
        # would change training, so refuse instead.
        if len(store.keys()) != len(self.variables):
            raise ValueError(
                f"Cannot load the state of optimizer {self.name!r}: the saved state has "
                f"{len(store.keys())} variables but this Lookahead (with its inner "
                f"optimizer) has {len(self.variables)}; is it built on the same variables?"
            )
        for i, variable in enumerate(self.variables):
            variable.assign(store[str(i)])

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "sync_period": self.sync_period,
            "slow_step_size": self.slow_step_size,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["optimizer"] = keras.saving.deserialize_keras_object(
            config["optimizer"], custom_objects=custom_objects
        )
        return cls(**config)


def _assign_if(condition, assignments):
    """Assigns the `(variable, value)` pairs that `assignments()` returns if `condition`."""
    if keras.backend.backend() == "jax":
        for variable, value in assignments():
            variable.assign(ops.where(condition, value, variable.value))
        return

    def assign():
        for variable, value in assignments():
            variable.assign(value)

    ops.cond(condition, assign, lambda: None)
