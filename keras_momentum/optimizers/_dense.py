"""Dense gradients for optimizers whose rules have no sparse form."""

from keras import ops


def is_indexed_slices(gradient):
    """True for TensorFlow's `IndexedSlices` (rows + indices), the sparse gradient of a lookup."""
    # `dense_shape` singles out IndexedSlices: torch tensors have `indices()` methods too.
    return hasattr(gradient, "dense_shape") and hasattr(gradient, "indices")


def dense_gradient(gradient, dtype):
    """`gradient` as a dense tensor of `dtype`; `IndexedSlices` rows are scattered (summed)."""
    if is_indexed_slices(gradient):
        indices = ops.expand_dims(gradient.indices, -1)
        gradient = ops.scatter(indices, gradient.values, gradient.dense_shape)
    return ops.cast(gradient, dtype)
