"""Layer-wise adaptive rate scaling (LARS)."""

import re

import keras
from keras import ops

from keras_momentum.optimizers import _hyperparameters as hp
from keras_momentum.optimizers import _velocity_storage as storage
from keras_momentum.optimizers._cautious import mask_disagreeing
from keras_momentum.optimizers._dense import dense_gradient
from keras_momentum.optimizers.base import MomentumOptimizer


@keras.saving.register_keras_serializable(package="keras_momentum")
class LARS(MomentumOptimizer):
    """Momentum SGD whose step for each weight tensor is scaled by a trust ratio.

    With gradient `g`, weight tensor `θ`, velocity `v` (zero before the first update),
    global learning rate `η`, momentum `m` and weight decay `λ` (each possibly a
    schedule evaluated at the update count), trust coefficient `τ` and `ε`:

        r = τ·‖θ‖ / (‖g‖ + λ·‖θ‖ + ε)       (r = 1 when ‖θ‖ = 0 or ‖g‖ = 0)
        v ← m·v + η·r·(g + λ·θ)
        θ ← θ − v                           (nesterov=False)
        θ ← θ − (m·v + η·r·(g + λ·θ))       (nesterov=True, with the new v)

    Norms are Frobenius norms of the whole tensor, so each tensor (a "layer" in the
    paper) gets its own local rate `η·r`. Tensors excluded from adaptation (biases and
    normalisation scales: every variable with at most one dimension, plus those whose
    path matches a pattern in `exclude_from_adaptation`) take the plain momentum step
    with `r = 1` and no weight decay. Variables excluded through Keras's
    `exclude_from_weight_decay()` are adapted with `λ = 0`.

    Formulation: this is Algorithm 1 of the paper. The velocity holds steps (the
    learning rate enters before the momentum average, as in Keras's SGD, PaddlePaddle's
    `LarsMomentum`, optax's `lars` and the TensorFlow `LARSOptimizer` with a
    `skip_list` that MLPerf ResNet-50 submissions use, from which `ε` and the rule
    `r = 1` for a zero norm also come). The denominator is `‖g‖ + λ·‖θ‖`, not the norm
    of the decayed gradient `‖g + λ·θ‖` that optax uses. `pytorch_optimizer.LARS`
    applies the learning rate after the momentum average (`b ← m·b + r·(g + λ·θ)`,
    `θ ← θ − η·b`): the two agree exactly while `η` is constant and differ under a
    learning-rate schedule, where our velocity carries past rates. They also differ when
    `‖g‖ = 0` but `λ·‖θ‖ > 0` (`pytorch_optimizer` then uses `r = τ/λ`, we use
    `r = 1`), and by `ε`, which it lacks. Excluding tensors with at most one dimension
    is the common practice (`pytorch_optimizer`, SimCLR, MLPerf), not the paper's.
    Sparse `IndexedSlices` gradients are densified.

    `cautious=True` (Liang et al., 2024) masks the step, not the velocity: with `u = v`
    (or `m·v + η·r·(g + λ·θ)` with Nesterov) and `c_i = 1` where `u_i` agrees in sign
    with the gradient that enters the velocity, `(g + λ·θ)_i` (`g_i` for a tensor
    excluded from adaptation), else 0: `θ ← θ − u ⊙ c / max(mean(c), 10⁻³)`. Without a
    velocity (`momentum=0`) it changes nothing. `velocity_dtype` stores the velocity as
    `SGD` stores its own.

    Args:
        learning_rate: `η`: float >= 0, a `LearningRateSchedule`, or a zero-argument
            callable. There is no default: LARS is used with large rates that depend on
            the batch size (the paper scales a base rate linearly with it).
        momentum: `m`, float in [0, 1) or a schedule. Defaults to 0.9, the paper's value.
        weight_decay: `λ`, None, a float >= 0 or a schedule; coupled as above (inside the
            trust ratio), so there is no `weight_decay_mode`. Defaults to 0.
        trust_coefficient: `τ > 0`. Defaults to 0.001, the paper's value.
        nesterov: bool, Nesterov momentum; needs a non-zero `momentum`.
        epsilon: `ε >= 0`, guards the division. Defaults to 1e-8.
        exclude_from_adaptation: None, a regular expression, or a list of them; variables
            whose `path` matches one (`re.search`) are excluded from adaptation and decay
            in addition to those with at most one dimension.
        velocity_dtype: None (the weight's dtype), `"float32"`, `"bfloat16"` or
            `"int8"`: how the velocity is stored (see `SGD`). Defaults to None.
        cautious: bool, mask the step's components that disagree in sign with the
            gradient (above). Defaults to False.
        adaptive_clipnorm: None or a float > 0: clip each output unit's gradient to this
            multiple of its weights' norm (Brock et al., 2021). Defaults to None.
        skip_nonfinite: skip updates whose gradients are not finite. Defaults to False.
        **kwargs: Keras's optimizer arguments (`clipnorm`, `clipvalue`,
            `global_clipnorm`, `use_ema`, `ema_momentum`, `ema_overwrite_frequency`,
            `loss_scale_factor`, `gradient_accumulation_steps`, `name`).

    Reference:
        You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks",
        arXiv:1708.03888, 2017.
    """

    scheduled_hyperparameters = ("momentum", "weight_decay")
    fixed_weight_decay_mode = ("coupled", "its weight decay is always coupled, inside the trust ratio")
    supports_velocity_options = True

    def __init__(
        self,
        learning_rate,
        momentum=0.9,
        weight_decay=0.0,
        trust_coefficient=0.001,
        nesterov=False,
        epsilon=1e-8,
        exclude_from_adaptation=None,
        **kwargs,
    ):
        momentum = hp.check_hyperparameter("momentum", momentum, 0.0, 1.0, high_open=True)
        trust_coefficient = hp.check_number(
            "trust_coefficient", trust_coefficient, low=0.0, low_open=True
        )
        epsilon = hp.check_number("epsilon", epsilon, low=0.0)
        if not isinstance(nesterov, bool):
            raise TypeError(f"`nesterov` must be a bool, got {nesterov!r}")
        if nesterov and momentum == 0:
            raise ValueError(
                "`nesterov` requires a non-zero `momentum`, got nesterov=True, momentum=0.0"
            )
        patterns = _check_patterns(exclude_from_adaptation)
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            **kwargs,
        )
        self.momentum = momentum
        self.trust_coefficient = trust_coefficient
        self.nesterov = nesterov
        self.epsilon = epsilon
        self.exclude_from_adaptation = patterns

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._add_velocities(variables)
        self._adapted = [self._is_adapted(v) for v in variables]

    def _is_adapted(self, variable):
        if len(variable.shape) <= 1:
            return False
        path = getattr(variable, "path", variable.name)
        return not any(re.search(pattern, path) for pattern in self.exclude_from_adaptation)

    def update_step(self, gradient, variable, hyper):
        dtype = variable.dtype if self.velocity_dtype is None else storage.compute_dtype(variable)
        gradient = dense_gradient(gradient, dtype)
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(hyper["learning_rate"], dtype)
        if self._adapted[index]:
            gradient = self._adapted_gradient(gradient, variable, hyper)
        if not self.has_velocity:
            self.assign_sub(variable, ops.cast(ops.multiply(learning_rate, gradient), variable.dtype))
            return
        slot, scales = self.velocities[index], self.velocity_scales[index]
        velocity = storage.read(slot, scales, dtype)
        momentum = ops.cast(hyper["momentum"], dtype)
        step = ops.multiply(learning_rate, gradient)
        new_velocity = ops.add(ops.multiply(momentum, velocity), step)
        storage.write(self, slot, scales, new_velocity)
        update = ops.add(ops.multiply(momentum, new_velocity), step) if self.nesterov else new_velocity
        if self.cautious:
            update = mask_disagreeing(update, gradient)
        self.assign_sub(variable, ops.cast(update, variable.dtype))

    def _adapted_gradient(self, gradient, variable, hyper):
        """`r·(g + λ·θ)` for a tensor under adaptation."""
        weight_norm = ops.sqrt(ops.sum(ops.square(variable)))
        gradient_norm = ops.sqrt(ops.sum(ops.square(gradient)))
        denominator = ops.add(gradient_norm, ops.cast(self.epsilon, variable.dtype))
        if self._decays(variable, hyper):
            decay = ops.cast(hyper["weight_decay"], variable.dtype)
            denominator = ops.add(denominator, ops.multiply(decay, weight_norm))
            gradient = ops.add(gradient, ops.multiply(decay, variable))
        ratio = ops.divide(
            ops.multiply(ops.cast(self.trust_coefficient, variable.dtype), weight_norm),
            denominator,
        )
        both_nonzero = ops.logical_and(ops.greater(weight_norm, 0), ops.greater(gradient_norm, 0))
        ratio = ops.where(both_nonzero, ratio, ops.ones_like(ratio))
        return ops.multiply(ratio, gradient)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "trust_coefficient": self.trust_coefficient,
                "nesterov": self.nesterov,
                "epsilon": self.epsilon,
                "exclude_from_adaptation": list(self.exclude_from_adaptation) or None,
            }
        )
        return config


def _check_patterns(patterns):
    if patterns is None:
        return ()
    if isinstance(patterns, str):
        patterns = (patterns,)
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
        raise TypeError(
            "`exclude_from_adaptation` must be None, a string or a list of strings, "
            f"got {patterns!r}"
        )
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"`exclude_from_adaptation` must hold regular expressions, got {pattern!r} "
                f"({error})"
            ) from None
    return tuple(patterns)
