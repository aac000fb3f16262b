"""Cautious masking of an update (Liang et al., 2024), as timm's optimizers apply it.

Components of the update whose sign disagrees with the current gradient are zeroed; the
others are rescaled by the inverse of the kept fraction `f` of the tensor's components
(at least `MIN_FRACTION`, as in timm), so the mean step size stays about the same:

    m_i = 1 if u_i·g_i > 0 else 0       (u subtracted from the weights)
    u ← u ⊙ m / max(mean(m), 10⁻³)

A component where the update or the gradient is exactly zero is masked as well.

Reference:
    Liang, Chen, Liu & Liu, "Cautious Optimizers: Improving Training with One Line of
    Code", arXiv:2411.16085, 2024.
"""

import math

from keras import ops

MIN_FRACTION = 1e-3


def mask_disagreeing(update, gradient, subtracted=True):
    """`update` with the components that do not descend along `gradient` zeroed, the
    rest divided by the kept fraction. `subtracted` says whether the weights move by
    `−update` (a descent direction: keep `u·g > 0`) or by `+update` (keep `u·g < 0`)."""
    product = ops.multiply(update, gradient)
    agrees = ops.greater(product, 0.0) if subtracted else ops.less(product, 0.0)
    mask = ops.cast(agrees, update.dtype)
    # sum / size, not `ops.mean` (on JAX it averages float64 in float32), and `where`, not
    # `ops.maximum` (on PyTorch it returns float32 for float64 scalars).
    kept = ops.divide(ops.sum(mask), ops.cast(math.prod(update.shape), update.dtype))
    fraction = ops.where(ops.greater(kept, MIN_FRACTION), kept, MIN_FRACTION)
    return ops.multiply(update, ops.divide(mask, fraction))
