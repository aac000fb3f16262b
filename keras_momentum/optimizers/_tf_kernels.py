"""TensorFlow's fused training kernels for `SGD` (TensorFlow backend only)."""

import keras
import tensorflow as tf

FUSED_DTYPES = (tf.float16, tf.float32, tf.float64)


def apply_sgd(optimizer, gradient, variable, velocity, hyper):
    """Applies one SGD update with a fused kernel; False when no kernel is exact."""
    if isinstance(gradient, tf.IndexedSlices):
        return False
    # The kernels update a slot of the weight's dtype in place; other storage (a
    # `velocity_dtype` such as bfloat16 or int8) takes the generic path.
    if velocity is not None and velocity.dtype != variable.dtype:
        return False
    if isinstance(variable, keras.Variable):
        variable = variable.value
    if variable.dtype not in FUSED_DTYPES:
        return False
    dtype = variable.dtype
    learning_rate = tf.cast(hyper["learning_rate"], dtype)
    gradient = tf.cast(gradient, dtype)
    if velocity is None:
        tf.raw_ops.ResourceApplyGradientDescent(
            var=variable.handle, alpha=learning_rate, delta=gradient
        )
        return True
    momentum = tf.cast(hyper["momentum"], dtype)
    accumulator = velocity.value.handle
    if optimizer.formulation == "keras":
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=accumulator, lr=learning_rate, grad=gradient,
            momentum=momentum, use_nesterov=optimizer.nesterov,
        )
        return True
    if optimizer.dampening == 0:
        tf.raw_ops.ResourceApplyMomentum(
            var=variable.handle, accum=accumulator, lr=learning_rate, grad=gradient,
            momentum=momentum, use_nesterov=optimizer.nesterov,
        )
        return True
    return False
