"""Quasi-hyperbolic momentum."""

import keras
from keras import ops

from keras_momentum.optimizers import _hyperparameters as hp
from keras_momentum.optimizers import _velocity_storage as storage
from keras_momentum.optimizers._cautious import mask_disagreeing
from keras_momentum.optimizers._dense import dense_gradient
from keras_momentum.optimizers.base import MomentumOptimizer


@keras.saving.register_keras_serializable(package="keras_momentum")
class QHM(MomentumOptimizer):
    """Quasi-hyperbolic momentum: a weighted mix of the plain gradient and its average.

    With gradient `g`, parameter `θ`, buffer `b` (zero before the first update),
    learning rate `η`, momentum `β` (possibly a schedule, evaluated at the update count)
    and immediate-discount factor `ν`:

        b ← β·b + (1 − β)·g
        θ ← θ − η·((1 − ν)·g + ν·b)

    The buffer is an exponential moving average of gradients (weights `(1 − β)·β^k`),
    not the sum `Σ β^k·g` of heavy-ball momentum. `ν = 0` gives plain gradient descent,
    `ν = 1` gives momentum with a normalised buffer; in between, the step is
    "quasi-hyperbolic". The defaults `β = 0.999`, `ν = 0.7` are the paper's recommended
    starting point (`pytorch_optimizer.QHM` defaults to `β = 0`, `ν = 1`, plain SGD).

    The buffer starts at zero and is not bias-corrected, as in the paper and in
    `pytorch_optimizer.QHM`, so with `β` close to 1 the first steps are mostly the
    `(1 − ν)·g` part. Sparse `IndexedSlices` gradients are densified.

    Weight decay `λ`: `"coupled"` adds `λ·θ` to `g` before the rules above (L2
    regularisation, `pytorch_optimizer.QHM`'s default); `"decoupled"` (default) applies
    `θ ← θ − η·λ·θ` beside the step (`pytorch_optimizer.QHM(weight_decouple=True)`).

    `cautious=True` (Liang et al., 2024) masks the step `u = (1 − ν)·g + ν·b`, not the
    buffer: with `m_i = 1` where `u_i·g_i > 0`, else 0,
    `θ ← θ − η·u ⊙ m / max(mean(m), 10⁻³)` (as `SGD`'s PyTorch formulation does).
    `velocity_dtype` stores the buffer as `SGD` stores its velocity; with bfloat16 and
    `β` near 1 (the default 0.999) the buffer's decay `(1 − β)·b` is below bfloat16's
    rounding step, so prefer float32 or int8 there (see `_velocity_storage`).

    Args:
        learning_rate: float >= 0, a `LearningRateSchedule`, or a zero-argument callable.
            Defaults to 1e-3.
        momentum: `β`, float in [0, 1) or a schedule. Defaults to 0.999.
        nu: `ν`, float in [0, 1]. Defaults to 0.7.
        weight_decay: None, a float >= 0 or a schedule.
        weight_decay_mode: `"decoupled"` (default) or `"coupled"`.
        velocity_dtype: None (the weight's dtype), `"float32"`, `"bfloat16"` or
            `"int8"`: how the buffer is stored (see `SGD`). Defaults to None.
        cautious: bool, mask the step's components that disagree in sign with the
            gradient (above). Defaults to False.
        adaptive_clipnorm: None or a float > 0: clip each output unit's gradient to this
            multiple of its weights' norm (Brock et al., 2021). Defaults to None.
        skip_nonfinite: skip updates whose gradients are not finite. Defaults to False.
        **kwargs: Keras's optimizer arguments (`clipnorm`, `clipvalue`,
            `global_clipnorm`, `use_ema`, `ema_momentum`, `ema_overwrite_frequency`,
            `loss_scale_factor`, `gradient_accumulation_steps`, `name`).

    Reference:
        Ma & Yarats, "Quasi-hyperbolic momentum and Adam for deep learning", ICLR 2019.
    """

    scheduled_hyperparameters = ("momentum", "weight_decay")
    supports_velocity_options = True

    def __init__(
        self,
        learning_rate=1e-3,
        momentum=0.999,
        nu=0.7,
        weight_decay=None,
        weight_decay_mode="decoupled",
        **kwargs,
    ):
        momentum = hp.check_hyperparameter("momentum", momentum, 0.0, 1.0, high_open=True)
        nu = hp.check_number("nu", nu, 0.0, 1.0)
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            **kwargs,
        )
        self.momentum = momentum
        self.nu = nu

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.velocities, self.velocity_scales = self._add_velocity_slots(variables, "velocity")

    def update_step(self, gradient, variable, hyper):
        dtype = variable.dtype if self.velocity_dtype is None else storage.compute_dtype(variable)
        gradient = dense_gradient(gradient, dtype)
        gradient = self._coupled_gradient(gradient, variable, hyper)
        self._decoupled_decay(variable, hyper)
        index = self._get_variable_index(variable)
        slot, scales = self.velocities[index], self.velocity_scales[index]
        buffer = storage.read(slot, scales, dtype)
        momentum = ops.cast(hyper["momentum"], dtype)
        learning_rate = ops.cast(hyper["learning_rate"], dtype)
        new_buffer = ops.add(
            ops.multiply(momentum, buffer), ops.multiply(ops.subtract(1.0, momentum), gradient)
        )
        storage.write(self, slot, scales, new_buffer)
        step = ops.add(
            ops.multiply(ops.cast(1.0 - self.nu, dtype), gradient),
            ops.multiply(ops.cast(self.nu, dtype), new_buffer),
        )
        if self.cautious:
            step = mask_disagreeing(step, gradient)
        self.assign_sub(variable, ops.cast(ops.multiply(learning_rate, step), variable.dtype))

    def get_config(self):
        config = super().get_config()
        config["nu"] = self.nu
        return config
