"""Skipping updates whose gradients are not finite, per backend."""

import keras
from keras import ops

from keras_momentum.optimizers._dense import is_indexed_slices


def all_finite(grads):
    # For IndexedSlices, the rows it holds; torch tensors have a `values()` method instead.
    checks = [
        ops.all(ops.isfinite(g.values if is_indexed_slices(g) else g))
        for g in grads
        if g is not None
    ]
    return ops.all(ops.stack(checks))


def apply_if_finite(optimizer, apply, grads):
    """Runs `apply(grads)` when every gradient is finite, else counts a skipped step."""
    finite = all_finite(grads)
    if keras.backend.backend() == "tensorflow":
        _tf_apply_if_finite(optimizer, apply, grads, finite)
    elif keras.backend.backend() == "jax":
        _select_apply_if_finite(optimizer, lambda: apply(grads), finite)
    else:
        ops.cond(finite, lambda: apply(grads), lambda: _count(optimizer))


def _count(optimizer):
    optimizer.nonfinite_steps.assign_add(1)


def _select_apply_if_finite(optimizer, apply, finite):
    # jax.lax.cond cannot hold variable assignments: update, then select old or new.
    variables = list(optimizer._trainable_variables) + optimizer.variables
    before = [ops.copy(v) for v in variables]
    apply()
    for variable, old in zip(variables, before):
        variable.assign(ops.where(finite, variable.value, old))
    optimizer.nonfinite_steps.assign_add(ops.cast(ops.logical_not(finite), "int32"))


def _tf_apply_if_finite(optimizer, apply, grads, finite):
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        # Each replica sees only its own gradients, and the update all-reduces them: every
        # replica must take the same branch, skipping when any replica's gradients are not
        # finite (else the sum is not finite either).
        nonfinite = tf.cast(tf.logical_not(finite), tf.float32)
        finite = tf.equal(context.all_reduce(tf.distribute.ReduceOp.SUM, nonfinite), 0.0)
    if context is None or tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, lambda: _run(lambda: apply(grads)), lambda: _run(lambda: _count(optimizer)))
        return

    # A cond whose branch calls merge_call must itself run in cross-replica context; the
    # gradients travel through merge_call so that each replica applies its own.
    def in_cross_replica(distribution, finite_per_replica, grads_per_replica):
        first = distribution.experimental_local_results(finite_per_replica)[0]
        tf.cond(
            first,
            lambda: _run(
                lambda: distribution.extended.call_for_each_replica(apply, args=(grads_per_replica,))
            ),
            lambda: _run(lambda: _count(optimizer)),
        )

    context.merge_call(in_cross_replica, args=(finite, list(grads)))


def _run(function):
    function()
    return tf_no_op()


def tf_no_op():
    import tensorflow as tf  # noqa: PLC0415

    return tf.constant(0)
