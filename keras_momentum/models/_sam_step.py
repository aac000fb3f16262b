"""The train steps of `SharpnessAwareMinimization`, one per backend, around one shared core.

Both passes are stateless (`keras.StatelessScope`): the weights are never perturbed in place,
so nothing has to be restored, and each pass's state updates (batch-normalisation statistics,
random seeds, loss metrics) come back as values. The step keeps those of the first pass and
drops those of the second, which starts from the state before the step: it sees the dropout
masks of the first pass and moves no statistics.
"""

import keras
from keras import ops


def perturbation(gradients, weights, rho, adaptive, eps):
    """ε = ρ·g/(‖g‖ + eps), or ρ·w²⊙g/(‖|w|⊙g‖ + eps) when adaptive; norms over all tensors."""
    if adaptive:
        scaled = [ops.abs(w) * g for w, g in zip(weights, gradients)]
        directions = [w * w * g for w, g in zip(weights, gradients)]
    else:
        scaled = directions = gradients
    norm = ops.sqrt(sum(ops.sum(ops.square(s)) for s in scaled))
    factor = rho / (norm + eps)
    return [d * ops.cast(factor, d.dtype) for d in directions]


def training_loss(model, trainable, non_trainable, metrics, optimizer_state, x, y, sample_weight):
    """`model`'s scaled training loss with its variables read from the given values.

    Returns `(scaled_loss, (loss, y_pred, non_trainable, metrics))`, the last two being the
    state after the pass. `optimizer_state` (JAX) supplies the loss scale; None reads it from
    the optimizer's variables.
    """
    mapping = [
        *zip(model.trainable_variables, trainable),
        *zip(model.non_trainable_variables, non_trainable),
        *zip(model.metrics_variables, metrics),
    ]
    if optimizer_state is not None:
        mapping += zip(model.optimizer.variables, optimizer_state)
    with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
        y_pred = model(x, training=True)
        loss = model.compute_loss(x, y, y_pred, sample_weight, training=True)
        scaled_loss = model.optimizer.scale_loss(loss)
    non_trainable = [scope.get_current_value(v) for v in model.non_trainable_variables]
    metrics = [scope.get_current_value(v) for v in model.metrics_variables]
    return scaled_loss, (loss, y_pred, non_trainable, metrics)


def loss_scale(optimizer, optimizer_state=None):
    """The factor `optimizer.scale_loss` multiplies the loss by (1 without loss scaling)."""
    one = ops.ones((), dtype="float32")
    if optimizer_state is None:
        return optimizer.scale_loss(one)
    with keras.StatelessScope(state_mapping=list(zip(optimizer.variables, optimizer_state))):
        return optimizer.scale_loss(one)


def sharpness_aware_gradient(model, value_and_grad, weights, optimizer_state=None,
                             sum_over_replicas=None):
    """First pass at `weights`, perturbation, second pass at `weights + ε`.

    `value_and_grad(weights) -> (aux, gradients)` runs one pass (`training_loss`'s aux, and the
    gradients of the scaled loss). Returns the first pass's aux and the second pass's gradients,
    still scaled: the optimizer unscales them, as it does in Keras's own train steps.
    """
    aux, gradients = value_and_grad(weights)
    scale = loss_scale(model.optimizer, optimizer_state)
    gradients = [
        ops.zeros_like(w) if g is None else g / ops.cast(scale, g.dtype)
        for w, g in zip(weights, gradients)
    ]
    if sum_over_replicas is not None:
        gradients = sum_over_replicas(gradients)
    epsilon = perturbation(gradients, weights, model.rho, model.adaptive, model.eps)
    _, second = value_and_grad([w + e for w, e in zip(weights, epsilon)])
    return aux, second


def _batch_size(x):
    return ops.shape(next(i for i in keras.tree.flatten(x) if i is not None))[0]


def _assign_changed(variables, before, after):
    """Writes the values a pass changed back to the variables (the others are left alone)."""
    for variable, old, new in zip(variables, before, after):
        if new is not old:
            variable.assign(new)


def tensorflow_train_step(model, data):
    import tensorflow as tf

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if not model.built:
        # Without a strategy Keras builds the model while tracing the first step; the
        # passes need its variables before they start. Inference mode changes no state.
        model(x, training=False)
    trainable = [tf.convert_to_tensor(v.value) for v in model.trainable_variables]
    non_trainable = [tf.convert_to_tensor(v.value) for v in model.non_trainable_variables]
    metrics = [tf.convert_to_tensor(v.value) for v in model.metrics_variables]

    def value_and_grad(weights):
        with tf.GradientTape() as tape:
            tape.watch(weights)
            scaled_loss, aux = training_loss(
                model, weights, non_trainable, metrics, None, x, y, sample_weight
            )
        return aux, tape.gradient(scaled_loss, weights)

    def sum_over_replicas(gradients):
        # Each replica's loss is already divided by the number of replicas (Keras's
        # `compute_loss` under a strategy), so the sum is the global batch's gradient.
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return gradients
        return context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)

    aux, second = sharpness_aware_gradient(
        model, value_and_grad, trainable, sum_over_replicas=sum_over_replicas
    )
    loss, y_pred, new_non_trainable, new_metrics = aux
    _assign_changed(model.non_trainable_variables, non_trainable, new_non_trainable)
    _assign_changed(model.metrics_variables, metrics, new_metrics)
    model.optimizer.apply(second, model.trainable_variables)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    model._loss_tracker.update_state(
        loss * ops.cast(replicas, loss.dtype), sample_weight=_batch_size(x)
    )
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def jax_train_step(model, state, data):
    import jax

    trainable, non_trainable, optimizer_state, metrics = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)

    def scaled_loss(weights):
        return training_loss(
            model, weights, non_trainable, metrics, optimizer_state, x, y, sample_weight
        )

    def value_and_grad(weights):
        (_, aux), gradients = jax.value_and_grad(scaled_loss, has_aux=True)(weights)
        return aux, gradients

    aux, second = sharpness_aware_gradient(model, value_and_grad, trainable, optimizer_state)
    loss, y_pred, non_trainable, metrics = aux
    trainable, optimizer_state = model.optimizer.stateless_apply(
        optimizer_state, second, trainable
    )
    with keras.StatelessScope(state_mapping=list(zip(model.metrics_variables, metrics))) as scope:
        model._loss_tracker.update_state(loss, sample_weight=_batch_size(x))
        logs = model.compute_metrics(x, y, y_pred, sample_weight)
    metrics = [scope.get_current_value(v) for v in model.metrics_variables]
    return logs, (trainable, non_trainable, optimizer_state, metrics)


def torch_train_step(model, data):
    import torch

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    trainable = [v.value.detach() for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    metrics = [v.value for v in model.metrics_variables]

    def value_and_grad(weights):
        weights = [w.detach().requires_grad_() for w in weights]
        scaled_loss, aux = training_loss(
            model, weights, non_trainable, metrics, None, x, y, sample_weight
        )
        return aux, list(torch.autograd.grad(scaled_loss, weights, allow_unused=True))

    aux, second = sharpness_aware_gradient(model, value_and_grad, trainable)
    loss, y_pred, new_non_trainable, new_metrics = aux
    _assign_changed(model.non_trainable_variables, non_trainable, new_non_trainable)
    _assign_changed(model.metrics_variables, metrics, new_metrics)
    model.optimizer.apply(second, model.trainable_variables)
    model._loss_tracker.update_state(loss, sample_weight=_batch_size(x))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
