"""Adaptive gradient clipping (AGC), unit-wise, after Keras's own clipping.

Each unit's gradient `G_u` (a slice of the gradient, see `unit_axes`) is rescaled so
that its norm is at most `λ·max(‖W_u‖, ε)`, with `W_u` the same slice of the weights,
`λ = adaptive_clipnorm` and `ε = 1e-3`:

    G_u ← G_u                                    if ‖G_u‖ < λ·max(‖W_u‖, ε)
    G_u ← G_u · λ·max(‖W_u‖, ε) / max(‖G_u‖, 1e-6)   otherwise

Units are those of optax's `adaptive_grad_clip`, so the clipped gradients are the same
numbers: a tensor with at most one dimension longer than 1 (a bias, a scale, a kernel of
shape `(1, n)`) is one unit; a larger one has a unit per index of its last axis, its
norm taken over all other axes (Keras's kernels keep output units last: `Dense` `(in,
out)`, `Conv2D` `(h, w, in, out)`). For rank-3 kernels optax's default reduces axis 0
only (multi-head linear weights); we reduce axes 0 and 1 (Keras's `Conv1D` `(width, in,
out)`), optax's `adaptive_grad_clip(λ, axis=(0, 1))`.

Keras's `_clip_gradients(grads)` receives the gradients only. The variables they belong
to are the ones `_backend_apply_gradients(grads, trainable_variables)` was given (after
Keras dropped those without a gradient), and the clipping runs inside it, after gradient
accumulation: `AdaptiveClipping._backend_apply_gradients` hands that list to
`_clip_gradients` for the duration of the call, per thread (MirroredStrategy runs each
replica's step in its own thread). Like `clipnorm`, the clipping acts on each replica's
gradient before the replicas' gradients are summed. Sparse `IndexedSlices` gradients are
densified.

Reference:
    Brock, De, Smith & Simonyan, "High-Performance Large-Scale Image Recognition Without
    Normalization", ICML 2021.
"""

import threading

from keras import ops

from keras_momentum.optimizers._dense import dense_gradient, is_indexed_slices

WEIGHT_EPSILON = 1e-3  # the paper's and optax's ε: zero-initialised weights still move
DIVISION_EPSILON = 1e-6  # optax's guard against a zero gradient norm


def unit_axes(shape):
    """The axes each unit's norm is taken over: all, or all but the last."""
    if sum(1 for d in shape if d != 1) <= 1:
        return tuple(range(len(shape)))
    return tuple(range(len(shape) - 1))


def clip(gradient, variable, adaptive_clipnorm):
    """`gradient` with each unit's norm at most `adaptive_clipnorm·max(‖W_u‖, ε)`."""
    if is_indexed_slices(gradient):
        gradient = dense_gradient(gradient, gradient.values.dtype)
    dtype = "float64" if variable.dtype == "float64" else "float32"
    values = ops.cast(gradient, dtype)
    axes = unit_axes(tuple(variable.shape))
    gradient_norm = _unit_norm(values, axes)
    weight_norm = _unit_norm(ops.cast(variable, dtype), axes)
    max_norm = ops.multiply(adaptive_clipnorm, ops.maximum(weight_norm, WEIGHT_EPSILON))
    clipped = ops.multiply(
        values, ops.divide(max_norm, ops.maximum(gradient_norm, DIVISION_EPSILON))
    )
    return ops.cast(ops.where(ops.less(gradient_norm, max_norm), values, clipped), gradient.dtype)


def _unit_norm(values, axes):
    return ops.sqrt(ops.sum(ops.square(values), axis=axes, keepdims=True))


class AdaptiveClipping:
    """Mixin: `_clip_gradients` applies Keras's clipping, then AGC when
    `self.adaptive_clipnorm` is set (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clipping_variables = threading.local()

    def _backend_apply_gradients(self, grads, trainable_variables):
        if self.adaptive_clipnorm is None:
            return super()._backend_apply_gradients(grads, trainable_variables)
        self._clipping_variables.value = list(trainable_variables)
        try:
            return super()._backend_apply_gradients(grads, trainable_variables)
        finally:
            self._clipping_variables.value = None

    def _clip_gradients(self, grads):
        grads = super()._clip_gradients(grads)
        if self.adaptive_clipnorm is None:
            return grads
        variables = getattr(self._clipping_variables, "value", None)
        if variables is None:
            raise RuntimeError(
                "adaptive clipping needs the variables of the gradients: call "
                "`_clip_gradients` from within `_backend_apply_gradients`"
            )
        return [
            g if g is None else clip(g, v, self.adaptive_clipnorm)
            for g, v in zip(grads, variables)
        ]
