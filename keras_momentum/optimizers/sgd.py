"""Stochastic gradient descent with Keras- or PyTorch-style momentum."""

import keras
from keras import ops

from keras_momentum.optimizers import _hyperparameters as hp
from keras_momentum.optimizers import _velocity_storage as storage
from keras_momentum.optimizers._cautious import mask_disagreeing
from keras_momentum.optimizers._dense import dense_gradient, is_indexed_slices
from keras_momentum.optimizers.base import MomentumOptimizer

FORMULATIONS = ("keras", "pytorch")


@keras.saving.register_keras_serializable(package="keras_momentum")
class SGD(MomentumOptimizer):
    """Gradient descent with momentum, Nesterov, dampening and weight-decay modes.

    With gradient `g`, parameter `θ`, velocity `v` (zero before the first update),
    learning rate `η`, momentum `μ` and dampening `d`, each possibly a schedule evaluated
    at the update count `t`:

    `formulation="keras"` (Keras's SGD; velocity holds a step):

        v ← μ·v − η·g
        θ ← θ + v                       (nesterov=False)
        θ ← θ + μ·v − η·g               (nesterov=True, with the new v)

    `formulation="pytorch"` (torch.optim.SGD; velocity holds a gradient average):

        v ← g                           (first update, t = 0)
        v ← μ·v + (1 − d)·g             (later updates)
        θ ← θ − η·v                     (nesterov=False)
        θ ← θ − η·(g + μ·v)             (nesterov=True, with the new v)

    The two agree while `η` is constant and `d = 0`; they differ when `η` changes,
    because the Keras velocity carries past learning rates. Dampening only exists in
    the PyTorch formulation (the Keras velocity is a step, so damping it would just
    rescale the learning rate) and is rejected with `formulation="keras"`.

    Weight decay `λ`: `"coupled"` adds `λ·θ` to `g` before the rules above;
    `"decoupled"` also applies `θ ← θ − η·λ·θ`.

    With `momentum=0` (a constant) no velocity is kept and `θ ← θ − η·g`.

    `cautious=True` (Liang et al., 2024) masks the step, not the velocity, which keeps
    the unmasked value. In the PyTorch formulation, with `u = v` (or `u = g + μ·v` with
    Nesterov) and `m_i = 1` where `u_i·g_i > 0`, else 0:

        θ ← θ − η·u ⊙ m / max(mean(m), 10⁻³)

    exactly timm's `SGDW(caution=True)` (the mean is over the tensor's components). In
    the Keras formulation the step `Δθ = v` (or `μ·v − η·g`) is added, so the kept
    components are those with `Δθ_i·g_i < 0`, and `θ ← θ + Δθ ⊙ m / max(mean(m), 10⁻³)`;
    while `η` is constant and `d = 0` it moves the weights exactly as the PyTorch
    formulation does (`v_keras = −η·v_pytorch`). Without a velocity (`momentum=0`) it
    changes nothing, as in timm. The gradient compared against is `g` after coupled
    weight decay.

    `velocity_dtype` changes how `v` is stored, not the arithmetic, which stays float32;
    the step uses `v` before it is rounded for storage (as optax's `accumulator_dtype`).
    `"bfloat16"` rounds to nearest even, within half an ulp (a relative 2⁻⁹ to 2⁻⁸): a
    write that changes `v` by less is rounded away, so with `μ` above about 0.996 the
    decay `(1 − μ)·v` itself can vanish and small gradients stop registering; stochastic
    rounding, unbiased on average, would matter there. `"int8"` keeps, per block `b` of
    256 consecutive values of the flattened `v`, one float32 scale
    `s_b = max_b |v_i| · fl32(1/127)` and codes `q_i = round(v_i / s_b)` in [−127, 127]
    (ties to even), and reads `v_i ≈ q_i·s_b` (Dettmers et al., 2022, with a linear
    code; see `_velocity_storage`).

    On the TensorFlow backend, dense updates run as single fused kernels where they
    compute exactly the rules above (`ResourceApplyKerasMomentum` for the Keras
    formulation, `ResourceApplyMomentum` for the PyTorch one without dampening,
    `ResourceApplyGradientDescent` without momentum); `fused=False` forces the generic
    `keras.ops` path, which every other case (dampening, `IndexedSlices`, other
    backends, other dtypes, a velocity stored in another dtype than the weight's,
    `cautious=True`) uses. Sparse `IndexedSlices` gradients keep Keras's SGD
    semantics: without momentum only the touched rows change; with momentum, the
    velocity of every row decays and the gradient is scattered into the touched rows
    (with `cautious` or a `velocity_dtype`, the gradient is densified first).

    Args:
        learning_rate: float >= 0, a `LearningRateSchedule`, or a zero-argument callable.
        momentum: float in [0, 1) or a schedule. Defaults to 0.
        nesterov: bool, Nesterov momentum. Needs non-zero momentum and no dampening.
        dampening: float in [0, 1]; PyTorch formulation only. Defaults to 0.
        formulation: `"keras"` or `"pytorch"`, as above. Defaults to `"keras"`.
        weight_decay: None, a float >= 0 or a schedule.
        weight_decay_mode: `"decoupled"` (default) or `"coupled"`.
        fused: None (fused kernels where exact; TensorFlow only, other backends always
            run the generic path), or False (always the generic path).
        velocity_dtype: None (the weight's dtype), `"float32"`, `"bfloat16"` or
            `"int8"`: how the velocity is stored. Defaults to None.
        cautious: bool, mask the step's components that disagree in sign with the
            gradient (above). Defaults to False.
        adaptive_clipnorm: None or a float > 0: clip each output unit's gradient to this
            multiple of its weights' norm (Brock et al., 2021). Defaults to None.
        skip_nonfinite: skip updates whose gradients are not finite. Defaults to False.
        **kwargs: Keras's optimizer arguments (`clipnorm`, `clipvalue`,
            `global_clipnorm`, `use_ema`, `ema_momentum`, `ema_overwrite_frequency`,
            `loss_scale_factor`, `gradient_accumulation_steps`, `name`).

    Reference:
        Polyak, "Some methods of speeding up the convergence of iteration methods", 1964;
        Sutskever et al., "On the importance of initialization and momentum in deep
        learning", ICML 2013 (Nesterov form); Liang et al., "Cautious Optimizers:
        Improving Training with One Line of Code", arXiv:2411.16085, 2024; Dettmers et
        al., "8-bit Optimizers via Block-wise Quantization", ICLR 2022.
    """

    scheduled_hyperparameters = ("momentum", "weight_decay")
    supports_velocity_options = True

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        nesterov=False,
        dampening=0.0,
        formulation="keras",
        weight_decay=None,
        weight_decay_mode="decoupled",
        fused=None,
        **kwargs,
    ):
        momentum = hp.check_hyperparameter("momentum", momentum, 0.0, 1.0, high_open=True)
        dampening = hp.check_number("dampening", dampening, 0.0, 1.0)
        hp.check_choice("formulation", formulation, FORMULATIONS)
        if not isinstance(nesterov, bool):
            raise TypeError(f"`nesterov` must be a bool, got {nesterov!r}")
        if fused not in (None, False):
            raise ValueError(f"`fused` must be None (automatic) or False, got {fused!r}")
        if nesterov and momentum == 0:
            raise ValueError(
                "`nesterov` requires a non-zero `momentum`, got nesterov=True, momentum=0.0"
            )
        if nesterov and dampening != 0:
            raise ValueError(
                f"`nesterov` requires `dampening=0`, got nesterov=True, dampening={dampening!r}"
            )
        if formulation == "keras" and dampening != 0:
            raise ValueError(
                f"`dampening` must be 0 with formulation='keras', got {dampening!r}; "
                "dampening is defined for formulation='pytorch' only"
            )
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            **kwargs,
        )
        self.momentum = momentum
        self.nesterov = nesterov
        self.dampening = dampening
        self.formulation = formulation
        self.fused = fused

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._add_velocities(variables)
        self._kernels = None
        if self.fused is None and not self.cautious and keras.backend.backend() == "tensorflow":
            from keras_momentum.optimizers import _tf_kernels  # noqa: PLC0415

            self._kernels = _tf_kernels

    def update_step(self, gradient, variable, hyper):
        gradient = self._coupled_gradient(gradient, variable, hyper)
        self._decoupled_decay(variable, hyper)
        velocity = None
        if self.has_velocity:
            velocity = self.velocities[self._get_variable_index(variable)]
        if self._kernels is not None and self._kernels.apply_sgd(self, gradient, variable, velocity, hyper):
            return
        learning_rate = ops.cast(hyper["learning_rate"], variable.dtype)
        if velocity is None:
            self.assign_sub(variable, _scale(gradient, learning_rate))
        elif self.cautious or self.velocity_dtype is not None:
            self._general_step(gradient, variable, hyper)
        elif self.formulation == "keras":
            self._keras_step(gradient, variable, velocity, learning_rate, hyper)
        else:
            self._pytorch_step(gradient, variable, velocity, learning_rate, hyper)

    def _keras_step(self, gradient, variable, velocity, learning_rate, hyper):
        momentum = ops.cast(hyper["momentum"], variable.dtype)
        if is_indexed_slices(gradient):
            step = _scale(gradient, learning_rate)
            self.assign(velocity, ops.multiply(velocity, momentum))
            self.assign_sub(velocity, step)
            if self.nesterov:
                self.assign_add(variable, ops.multiply(velocity, momentum))
                self.assign_sub(variable, step)
            else:
                self.assign_add(variable, velocity)
            return
        step = ops.multiply(gradient, learning_rate)
        new_velocity = ops.subtract(ops.multiply(velocity, momentum), step)
        self.assign(velocity, new_velocity)
        if self.nesterov:
            self.assign_add(variable, ops.subtract(ops.multiply(new_velocity, momentum), step))
        else:
            self.assign_add(variable, new_velocity)

    def _pytorch_step(self, gradient, variable, velocity, learning_rate, hyper):
        momentum = ops.cast(hyper["momentum"], variable.dtype)
        if self.dampening != 0:
            # torch.optim.SGD copies the first gradient into the buffer undamped.
            gradient = ops.convert_to_tensor(gradient)
            damped = ops.add(
                ops.multiply(velocity, momentum),
                ops.multiply(ops.cast(1.0 - self.dampening, variable.dtype), gradient),
            )
            self.assign(velocity, ops.where(ops.equal(self.iterations, 0), gradient, damped))
        elif is_indexed_slices(gradient):
            self.assign(velocity, ops.multiply(velocity, momentum))
            self.assign_add(velocity, gradient)
        else:
            self.assign(velocity, ops.add(ops.multiply(velocity, momentum), gradient))
        if self.nesterov:
            self.assign_sub(variable, _scale(gradient, learning_rate))
            self.assign_sub(variable, ops.multiply(velocity, momentum * learning_rate))
        else:
            self.assign_sub(variable, ops.multiply(velocity, learning_rate))

    def _general_step(self, gradient, variable, hyper):
        """The dense rules above in the compute dtype, the velocity read from and written
        to its storage, the step optionally cautious."""
        index = self._get_variable_index(variable)
        velocity, scales = self.velocities[index], self.velocity_scales[index]
        dtype = variable.dtype if self.velocity_dtype is None else storage.compute_dtype(variable)
        gradient = dense_gradient(gradient, dtype)
        old = storage.read(velocity, scales, dtype)
        learning_rate = ops.cast(hyper["learning_rate"], dtype)
        momentum = ops.cast(hyper["momentum"], dtype)
        if self.formulation == "keras":
            step = ops.multiply(gradient, learning_rate)
            new = ops.subtract(ops.multiply(old, momentum), step)
            change = ops.subtract(ops.multiply(new, momentum), step) if self.nesterov else new
            if self.cautious:
                change = mask_disagreeing(change, gradient, subtracted=False)
        else:
            if self.dampening != 0:
                damped = ops.add(
                    ops.multiply(old, momentum),
                    ops.multiply(ops.cast(1.0 - self.dampening, dtype), gradient),
                )
                new = ops.where(ops.equal(self.iterations, 0), gradient, damped)
            else:
                new = ops.add(ops.multiply(old, momentum), gradient)
            direction = ops.add(gradient, ops.multiply(new, momentum)) if self.nesterov else new
            if self.cautious:
                direction = mask_disagreeing(direction, gradient)
            change = ops.negative(ops.multiply(direction, learning_rate))
        storage.write(self, velocity, scales, new)
        self.assign_add(variable, ops.cast(change, variable.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "nesterov": self.nesterov,
                "dampening": self.dampening,
                "formulation": self.formulation,
                "fused": self.fused,
            }
        )
        return config


def _scale(gradient, factor):
    """`factor·gradient`, keeping `IndexedSlices` sparse so only touched rows change."""
    if is_indexed_slices(gradient):
        values = gradient.values * ops.cast(factor, gradient.values.dtype)
        return type(gradient)(values, gradient.indices, gradient.dense_shape)
    return ops.multiply(gradient, factor)
