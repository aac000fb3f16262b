"""Dense gradients for optimizers whose rules have no sparse form."""

from keras import ops


def dense_gradient(gradient, dtype):
    """`gradient` as a dense tensor of `dtype`; `IndexedSlices` rows are scattered (summed)."""
    if hasattr(gradient, "indices") and hasattr(gradient, "values"):
        indices = ops.expand_dims(gradient.indices, -1)
        gradient = ops.scatter(indices, gradient.values, gradient.dense_shape)
    return ops.cast(gradient, dtype)
