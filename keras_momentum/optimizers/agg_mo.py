"""Aggregated momentum: several heavy-ball velocities with different damping, averaged."""

import keras
from keras import ops

from keras_momentum.optimizers import _hyperparameters as hp
from keras_momentum.optimizers import _velocity_storage as storage
from keras_momentum.optimizers._cautious import mask_disagreeing
from keras_momentum.optimizers._dense import dense_gradient
from keras_momentum.optimizers.base import MomentumOptimizer


@keras.saving.register_keras_serializable(package="keras_momentum")
class AggMo(MomentumOptimizer):
    """Aggregated momentum: the average of K heavy-ball velocities with damping `β_1..β_K`.

    With gradient `g`, parameter `θ`, learning rate `η` and one velocity `v_i` per
    damping coefficient `β_i` (all zero before the first update), following the
    paper's sign convention:

        v_i ← β_i·v_i − g               for i = 1..K
        θ ← θ + (η/K)·Σ_i v_i

    Small `β_i` react quickly and damp the oscillations that a large `β_i` alone would
    cause, so a large damping coefficient (0.99 or 0.999) can be used safely. The default
    `betas=(0.0, 0.9, 0.99)` is the paper's recommended setting, and `η` is the step of
    the averaged velocity (the paper's `γ`).

    `pytorch_optimizer.AggMo` keeps buffers `b_i = −v_i` (`b_i ← β_i·b_i + g`,
    `θ ← θ − (η/K)·Σ_i b_i`): the trajectories are identical, only the sign of the
    stored velocities (which the diagnostics' velocity norm does not see) differs.
    Sparse `IndexedSlices` gradients are densified.

    Weight decay `λ`: `"coupled"` adds `λ·θ` to `g` before the rules above (L2
    regularisation, `pytorch_optimizer.AggMo`'s default); `"decoupled"` (default) applies
    `θ ← θ − η·λ·θ` beside the step (`pytorch_optimizer.AggMo(weight_decouple=True)`).

    `cautious=True` (Liang et al., 2024) masks the step `Δθ = (η/K)·Σ_i v_i`, not the
    velocities: with `m_j = 1` where `Δθ_j·g_j < 0` (the step descends), else 0,
    `θ ← θ + Δθ ⊙ m / max(mean(m), 10⁻³)`. `velocity_dtype` stores every `v_i` as
    `SGD` stores its velocity (int8: one set of block scales per `v_i`).

    Args:
        learning_rate: float >= 0, a `LearningRateSchedule`, or a zero-argument callable.
            Defaults to 1e-3.
        betas: non-empty sequence of damping coefficients, each a float in [0, 1).
            Defaults to `(0.0, 0.9, 0.99)`.
        weight_decay: None, a float >= 0 or a schedule.
        weight_decay_mode: `"decoupled"` (default) or `"coupled"`.
        velocity_dtype: None (the weight's dtype), `"float32"`, `"bfloat16"` or
            `"int8"`: how the velocities are stored (see `SGD`). Defaults to None.
        cautious: bool, mask the step's components that disagree in sign with the
            gradient (above). Defaults to False.
        adaptive_clipnorm: None or a float > 0: clip each output unit's gradient to this
            multiple of its weights' norm (Brock et al., 2021). Defaults to None.
        skip_nonfinite: skip updates whose gradients are not finite. Defaults to False.
        **kwargs: Keras's optimizer arguments (`clipnorm`, `clipvalue`,
            `global_clipnorm`, `use_ema`, `ema_momentum`, `ema_overwrite_frequency`,
            `loss_scale_factor`, `gradient_accumulation_steps`, `name`).

    Reference:
        Lucas, Sun, Zemel & Grosse, "Aggregated Momentum: Stability Through Passive
        Damping", ICLR 2019.
    """

    supports_velocity_options = True

    def __init__(
        self,
        learning_rate=1e-3,
        betas=(0.0, 0.9, 0.99),
        weight_decay=None,
        weight_decay_mode="decoupled",
        **kwargs,
    ):
        betas = _check_betas(betas)
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            **kwargs,
        )
        self.betas = betas

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        names = [f"velocity_{i}" for i in range(len(self.betas))]
        # One list per beta, each with one velocity per trainable variable.
        self.velocities, self.velocity_scales = self._add_velocity_slots(variables, names)

    def _velocity_slots(self):
        return [
            (v, s)
            for per_beta, scales in zip(self.velocities, self.velocity_scales)
            for v, s in zip(per_beta, scales)
            if v is not None
        ]

    def update_step(self, gradient, variable, hyper):
        dtype = variable.dtype if self.velocity_dtype is None else storage.compute_dtype(variable)
        gradient = dense_gradient(gradient, dtype)
        gradient = self._coupled_gradient(gradient, variable, hyper)
        self._decoupled_decay(variable, hyper)
        index = self._get_variable_index(variable)
        total = None
        for beta, per_beta, scales in zip(self.betas, self.velocities, self.velocity_scales):
            velocity = storage.read(per_beta[index], scales[index], dtype)
            new_velocity = ops.subtract(ops.multiply(ops.cast(beta, dtype), velocity), gradient)
            storage.write(self, per_beta[index], scales[index], new_velocity)
            total = new_velocity if total is None else ops.add(total, new_velocity)
        scale = ops.divide(ops.cast(hyper["learning_rate"], dtype), len(self.betas))
        step = ops.multiply(scale, total)
        if self.cautious:
            step = mask_disagreeing(step, gradient, subtracted=False)
        self.assign_add(variable, ops.cast(step, variable.dtype))

    def get_config(self):
        config = super().get_config()
        config["betas"] = list(self.betas)
        return config


def _check_betas(betas):
    sequence = not isinstance(betas, (str, bytes, dict)) and hasattr(betas, "__len__")
    if not sequence or len(betas) == 0:
        raise ValueError(
            f"`betas` must be a non-empty sequence of numbers in [0, 1), got {betas!r}"
        )
    return tuple(
        hp.check_number(f"betas[{i}]", beta, 0.0, 1.0, high_open=True)
        for i, beta in enumerate(betas)
    )
