"""The shared base of this package's optimizers."""

import keras
from keras import ops

from keras_momentum.optimizers import _hyperparameters as hp
from keras_momentum.optimizers import _velocity_storage as storage
from keras_momentum.optimizers._adaptive_clipping import AdaptiveClipping
from keras_momentum.optimizers.instrumentation import InstrumentationMixin

WEIGHT_DECAY_MODES = ("decoupled", "coupled")


class MomentumOptimizer(InstrumentationMixin, AdaptiveClipping, keras.optimizers.Optimizer):
    """Base class: schedulable hyperparameters, weight-decay modes, non-finite skipping.

    Subclasses list the names of their schedulable hyperparameters in
    `scheduled_hyperparameters`; each is an attribute holding a float or a
    `LearningRateSchedule`. Once per update, the base evaluates them at
    `optimizer.iterations` and hands `update_step(gradient, variable, hyper)` a dict
    `hyper` with `"learning_rate"` (multiplier included) and one entry per name, each a
    float32 scalar (None for an unset weight decay), so a schedule costs a few scalar
    operations per step and never a retrace.

    Weight decay `λ` (float or schedule) is applied by `update_step` through
    `_coupled_gradient` and `_decoupled_decay`:

    * `weight_decay_mode="coupled"`: L2 regularisation, `g ← g + λ·θ` before momentum
      (torch.optim.SGD's `weight_decay`);
    * `weight_decay_mode="decoupled"`: `θ ← θ − η·λ·θ` beside the gradient step (Keras's
      base behaviour; Loshchilov & Hutter, 2019).

    Variables excluded with `exclude_from_weight_decay` are never decayed.

    `skip_nonfinite=True` skips every update whose gradients hold an inf or NaN: weights,
    slots and `iterations` stay as they were, and `nonfinite_steps` counts the skips (also
    logged by `GradientNormLogger`). Under a `tf.distribute` strategy (TensorFlow only) the
    replicas decide together: an inf or NaN in any replica's gradients skips the update on
    every replica.

    `adaptive_clipnorm=λ` clips each output unit's gradient to at most `λ` times its
    weights' norm (at least 1e-3), after Keras's `clipnorm`/`clipvalue`/`global_clipnorm`
    (Brock et al., 2021; see `_adaptive_clipping`).

    Optimizers that keep momentum velocities set `supports_velocity_options` and take
    `velocity_dtype` (storage of the velocities: None for the weight's dtype, `"float32"`,
    `"bfloat16"` or block-wise `"int8"`; see `_velocity_storage`) and `cautious` (Liang et
    al., 2024); the others reject both.
    """

    scheduled_hyperparameters = ("weight_decay",)
    # `(mode, why)` for optimizers whose weight decay has one form only (LARS, ScheduleFreeSGD):
    # they take no `weight_decay_mode` argument, and their config has none.
    fixed_weight_decay_mode = None
    # Whether `velocity_dtype` and `cautious` are arguments (optimizers with momentum
    # velocities whose update each defines its cautious mask).
    supports_velocity_options = False

    def __init__(
        self,
        learning_rate,
        weight_decay=None,
        weight_decay_mode=None,
        skip_nonfinite=False,
        adaptive_clipnorm=None,
        velocity_dtype=None,
        cautious=False,
        **kwargs,
    ):
        learning_rate = _check_learning_rate(learning_rate)
        if not self.supports_velocity_options:
            for name, value, default in (("velocity_dtype", velocity_dtype, None),
                                         ("cautious", cautious, False)):
                if value is not default:
                    raise ValueError(
                        f"`{name}` is not an argument of {type(self).__name__}, got "
                        f"{name}={value!r}; it is defined for optimizers with momentum "
                        "velocities (SGD, QHM, AggMo, LARS)"
                    )
        velocity_dtype = storage.check_velocity_dtype(velocity_dtype)
        if not isinstance(cautious, bool):
            raise TypeError(f"`cautious` must be a bool, got {cautious!r}")
        if adaptive_clipnorm is not None:
            adaptive_clipnorm = hp.check_number(
                "adaptive_clipnorm", adaptive_clipnorm, low=0.0, low_open=True
            )
        if weight_decay is not None:
            weight_decay = hp.check_hyperparameter("weight_decay", weight_decay, low=0.0)
        if self.fixed_weight_decay_mode is not None:
            fixed, why = self.fixed_weight_decay_mode
            if weight_decay_mode is not None:
                raise ValueError(
                    f"`weight_decay_mode` is not an argument of {type(self).__name__}, got "
                    f"weight_decay_mode={weight_decay_mode!r}; {why}"
                )
            weight_decay_mode = fixed
        elif weight_decay_mode is None:
            weight_decay_mode = "decoupled"
        hp.check_choice("weight_decay_mode", weight_decay_mode, WEIGHT_DECAY_MODES)
        if not isinstance(skip_nonfinite, bool):
            raise TypeError(f"`skip_nonfinite` must be a bool, got {skip_nonfinite!r}")
        for name in ("clipnorm", "clipvalue", "global_clipnorm"):
            # Keras accepts any value here; a bound <= 0 would flip or zero every gradient.
            if kwargs.get(name) is not None:
                hp.check_number(name, kwargs[name], low=0.0, low_open=True)
        super().__init__(learning_rate=learning_rate, weight_decay=None, **kwargs)
        self.weight_decay = weight_decay
        self.weight_decay_mode = weight_decay_mode
        self.skip_nonfinite = skip_nonfinite
        self.adaptive_clipnorm = adaptive_clipnorm
        self.velocity_dtype = velocity_dtype
        self.cautious = cautious
        if skip_nonfinite:
            with keras.name_scope(self.name, caller=self):
                self.nonfinite_steps = keras.Variable(
                    0, name="nonfinite_steps", dtype="int32", trainable=False,
                    aggregation="only_first_replica",
                )

    # ------------------------------------------------------- hyperparameters
    def _step_hyperparameters(self, learning_rate):
        step = self.iterations
        values = {"learning_rate": learning_rate}
        for name in self.scheduled_hyperparameters:
            value = getattr(self, name)
            # float32 scalars on every backend, whether constant or scheduled.
            values[name] = None if value is None else ops.cast(hp.evaluate(value, step), "float32")
        return values

    def _hyperparameter_values(self, hyperparameters):
        return {k: v for k, v in hyperparameters.items() if v is not None}

    def _hyperparameter_names(self):
        names = {"learning_rate"}
        names.update(n for n in self.scheduled_hyperparameters if getattr(self, n) is not None)
        return names

    # -------------------------------------------------------------- velocity
    @property
    def has_velocity(self):
        """A velocity slot is kept unless `momentum` is the constant 0."""
        momentum = getattr(self, "momentum", 0.0)
        return hp.is_schedule(momentum) or momentum != 0

    def _add_velocities(self, variables):
        """One velocity per variable (named after its path) in `self.velocities`, or none;
        with `velocity_dtype="int8"`, their block scales in `self.velocity_scales`."""
        self.velocities, self.velocity_scales = (
            self._add_velocity_slots(variables, "velocity") if self.has_velocity else ([], [])
        )

    def _add_velocity_slots(self, variables, name):
        """`(velocities, scales)` stored as `velocity_dtype` says, aligned with `variables`."""
        return storage.add_velocities(self, variables, name, self.velocity_dtype)

    def _velocity_variables(self):
        """The kept velocity variables whose values are the velocities: int8 codes are left
        out (their values are `_velocity_values()`), so that nothing reads them as such."""
        return [v for v, scales in self._velocity_slots() if scales is None]

    def _velocity_slots(self):
        """`(velocity, int8 block scales or None)` for each kept velocity, in a stable order
        (variables in build order; AggMo: per beta, then per variable)."""
        velocities = getattr(self, "velocities", [])
        scales = getattr(self, "velocity_scales", None) or [None] * len(velocities)
        return [(v, s) for v, s in zip(velocities, scales) if v is not None]

    def _velocity_values(self):
        """The stored velocities as float32 tensors (int8 dequantised), in `_velocity_slots()`
        order, which is `_velocity_variables()`'s unless the storage is int8: what
        diagnostics take norms of."""
        return [storage.read(v, s, "float32") for v, s in self._velocity_slots()]

    # -------------------------------------------------------------- clipping
    def _clipping_configured(self):
        """Whether any gradient clipping is set (Keras's three kinds or `adaptive_clipnorm`)."""
        return any(
            getattr(self, name, None) is not None
            for name in ("clipnorm", "clipvalue", "global_clipnorm", "adaptive_clipnorm")
        )

    # ---------------------------------------------------------- weight decay
    def _apply_weight_decay(self, variables):
        # Keras's decoupled decay is replaced by `_coupled_gradient`/`_decoupled_decay`.
        return

    def _held_back_weight_decay(self, variables):
        return

    def _decays(self, variable, hyper):
        return hyper.get("weight_decay") is not None and self._use_weight_decay(variable)

    def _coupled_gradient(self, gradient, variable, hyper):
        """`g + λ·θ` in coupled mode for a decayed variable, else `g`."""
        if self.weight_decay_mode != "coupled" or not self._decays(variable, hyper):
            return gradient
        decay = ops.cast(hyper["weight_decay"], variable.dtype)
        return ops.add(ops.convert_to_tensor(gradient), ops.multiply(decay, variable))

    def _decoupled_decay(self, variable, hyper):
        """`θ ← θ − η·λ·θ` in decoupled mode for a decayed variable."""
        if self.weight_decay_mode != "decoupled" or not self._decays(variable, hyper):
            return
        rate = ops.multiply(
            ops.cast(hyper["learning_rate"], variable.dtype),
            ops.cast(hyper["weight_decay"], variable.dtype),
        )
        self.assign_sub(variable, ops.multiply(rate, variable))

    # ------------------------------------------------------ non-finite steps
    def apply(self, grads, trainable_variables=None):
        if not self.skip_nonfinite:
            return super().apply(grads, trainable_variables)
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
        from keras_momentum.optimizers import _skip  # noqa: PLC0415 (backend-specific)

        parent = super(MomentumOptimizer, self)
        _skip.apply_if_finite(self, lambda g: parent.apply(g, trainable_variables), grads)

    # -------------------------------------------------------- serialisation
    def get_config(self):
        config = super().get_config()
        config["weight_decay"] = hp.serialize(self.weight_decay)
        if self.fixed_weight_decay_mode is None:
            config["weight_decay_mode"] = self.weight_decay_mode
        config["skip_nonfinite"] = self.skip_nonfinite
        config["adaptive_clipnorm"] = self.adaptive_clipnorm
        if self.supports_velocity_options:
            config["velocity_dtype"] = self.velocity_dtype
            config["cautious"] = self.cautious
        for name in self.scheduled_hyperparameters:
            config[name] = hp.serialize(getattr(self, name))
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for name in cls.scheduled_hyperparameters:
            if name in config:
                config[name] = hp.deserialize(config[name], custom_objects)
        return super().from_config(config, custom_objects=custom_objects)


def _check_learning_rate(learning_rate):
    if hp.is_schedule(learning_rate):
        return learning_rate
    if callable(learning_rate) and not isinstance(learning_rate, keras.Variable):
        return learning_rate
    return hp.check_number("learning_rate", learning_rate, low=0.0)
