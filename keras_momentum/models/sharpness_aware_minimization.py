"""Sharpness-aware minimisation (SAM) and its adaptive form (ASAM) as a model wrapper."""

import math
import numbers

import keras

from keras_momentum.models import _sam_step

_TRAIN_STEPS = {
    "tensorflow": _sam_step.tensorflow_train_step,
    "jax": _sam_step.jax_train_step,
    "torch": _sam_step.torch_train_step,
}


@keras.saving.register_keras_serializable(package="keras_momentum")
class SharpnessAwareMinimization(keras.Model):
    """Trains `model` with sharpness-aware gradients; compile and fit it as any model.

    Each training step on a batch with loss `L`, for the trainable tensors `w` taken together:

        g = ∇L(w)
        ε = ρ · g / (‖g‖ + eps)                       (SAM, adaptive=False)
        ε = ρ · w² ⊙ g / (‖|w| ⊙ g‖ + eps)            (ASAM, adaptive=True)
        the optimizer applies ∇L(w + ε) to w

    where `‖·‖` is the Euclidean norm over all trainable tensors together and `⊙` is the
    elementwise product. The weights are never moved to `w + ε`: the second gradient is taken
    at the perturbed values, so the compiled optimizer (any optimizer, this package's or
    Keras's) sees one gradient per step through `optimizer.apply`. A step costs two forward and
    backward passes.

    The loss and metrics reported are those of the first pass. State updates (batch
    normalisation's moving statistics, random seeds, loss metrics) are those of the first
    pass; the second pass starts from the state before the step, so it sees the same dropout
    masks and moves no statistics. With `rho=0` the wrapper trains as `model` would.

    Loss scaling (`LossScaleOptimizer`, which `compile` builds under a `mixed_float16`
    policy, or an optimizer's `loss_scale_factor`) scales both passes' losses; `ε` is computed
    from the unscaled first gradient and the optimizer unscales the second, as in Keras's own
    train steps. A step whose first gradient is not finite gives a non-finite second gradient,
    which a `LossScaleOptimizer` skips. Under `tf.distribute`, `ε` is computed from the first
    gradient summed over replicas (the gradient of the global batch), so every replica
    perturbs the weights alike; the second gradient is summed by the optimizer as usual.

    `sam.model` is the wrapped model, for inference and export; it shares its variables with
    the wrapper. `save` and `keras.models.load_model` of the wrapper keep the wrapped model,
    `rho`, `adaptive`, `eps`, the compile configuration and the optimizer's state.

    Args:
        model: a `keras.Model` (or layer) to train. It must be built before training or
            buildable from the first batch, as for `fit` on `model` itself.
        rho: float >= 0, the radius `ρ` of the perturbation. Defaults to 0.05, the SAM
            paper's common choice; ASAM is usually run with a larger one (0.5 to 2).
        adaptive: bool, ASAM's scale-invariant perturbation. Defaults to False.
        eps: float > 0 added to the norm, guarding against a zero gradient. Defaults to 1e-12.
        **kwargs: `keras.Model` arguments (`name`, ...).

    Reference:
        Foret et al., "Sharpness-Aware Minimization for Efficiently Improving
        Generalization", ICLR 2021; Kwon et al., "ASAM: Adaptive Sharpness-Aware
        Minimization for Scale-Invariant Learning of Deep Neural Networks", ICML 2021.
    """

    def __init__(self, model, rho=0.05, adaptive=False, eps=1e-12, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(model, keras.layers.Layer):
            raise ValueError(f"`model` must be a keras.Model or layer, got {model!r}")
        if isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not (
            math.isfinite(rho) and rho >= 0
        ):
            raise ValueError(f"`rho` must be a finite float >= 0, got {rho!r}")
        if not isinstance(adaptive, bool):
            raise ValueError(f"`adaptive` must be True or False, got {adaptive!r}")
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (
            math.isfinite(eps) and eps > 0
        ):
            raise ValueError(f"`eps` must be a finite float > 0, got {eps!r}")
        self.model = model
        self.rho = float(rho)
        self.adaptive = adaptive
        self.eps = float(eps)
        if model.built:
            self.built = True

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def train_step(self, *args):
        backend = keras.backend.backend()
        if backend not in _TRAIN_STEPS:
            raise NotImplementedError(
                f"SharpnessAwareMinimization supports the backends {sorted(_TRAIN_STEPS)}, "
                f"running {backend!r}"
            )
        return _TRAIN_STEPS[backend](self, *args)

    def get_config(self):
        config = super().get_config()
        config.update(
            model=keras.saving.serialize_keras_object(self.model),
            rho=self.rho,
            adaptive=self.adaptive,
            eps=self.eps,
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(
            config["model"], custom_objects=custom_objects
        )
        return cls(**config)
