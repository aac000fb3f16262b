"""Recomputing batch-normalisation statistics for weights that were never trained as such."""

import keras


def update_batch_norm(model, data, batch_size=None):
    """Sets every batch-normalisation layer's moving statistics to their average over `data`.

    Averaged weights (stochastic weight averaging) were never the weights of a training
    step, so the moving mean and variance the model carries do not describe the
    activations they produce. This runs `model(x, training=True)` on each batch
    `b = 1 .. B` of `data` and makes every trainable `keras.layers.BatchNormalization`
    layer keep the cumulative average of its batch statistics,

        moving_mean = (1/B) Σ_b μ_b,      moving_variance = (1/B) Σ_b σ²_b,

    by setting the layer's `momentum` to `(b − 1)/b` for batch `b` (restored afterwards).
    `μ_b` and `σ²_b` are the statistics the layer normalises batch `b` with: `σ²_b` is the
    biased variance, as in Keras's own moving average, where `torch.optim.swa_utils.update_bn`
    averages the unbiased one (`σ²_b · m_b/(m_b − 1)` for a batch of `m_b` samples).
    Layers with `trainable=False` are left as they are (Keras normalises with their moving
    statistics even in training mode); other layers (dropout included) run in training
    mode, as `update_bn` runs them. Weights and optimizer state are not changed.

    Args:
        model: a built `keras.Model` (or layer).
        data: the batches: a `tf.data.Dataset`, a `keras.utils.PyDataset` or any iterable
            of batches (a list included), each `x` or a tuple/list whose first element
            is `x` (as `(x, y)` or `(x, y, sample_weight)`); or one array (or a dict of
            arrays, for named inputs), cut into batches of `batch_size` in order.
        batch_size: int >= 1, for arrays only; defaults to 32.

    Returns:
        The number of batches seen.

    Reference:
        Izmailov, Podoprikhin, Garipov, Vetrov & Wilson, "Averaging Weights Leads to Wider
        Optima and Better Generalization", UAI 2018 (arXiv:1803.05407), §3.2;
        `torch.optim.swa_utils.update_bn`.
    """
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"`batch_size` must be None or an int >= 1, got {batch_size!r}")
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    count = 0
    try:
        for batch in _batches(data, batch_size):
            count += 1
            for layer in layers:
                layer.momentum = (count - 1) / count  # 0 first: the first batch replaces
            model(_inputs(batch), training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if count == 0:
        raise ValueError(f"`data` gave no batch; got {data!r}")
    return count


def batch_norm_layers(model):
    """The trainable `BatchNormalization` layers of `model`, nested ones included."""
    # `_flatten_layers` also finds layers held by custom layers, which `.layers` misses.
    found = model._flatten_layers(include_self=True, recursive=True)
    return [
        layer for layer in found
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


def _inputs(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _batches(data, batch_size):
    # One array, or a dict of arrays (named inputs); a list or tuple is a sequence of batches.
    leaves = list(data.values()) if isinstance(data, dict) else [data]
    if all(hasattr(leaf, "shape") and hasattr(leaf, "dtype") for leaf in leaves):
        size = batch_size or 32
        count = int(leaves[0].shape[0])
        for start in range(0, count, size):
            yield keras.tree.map_structure(lambda a: a[start:start + size], data)
        return
    if isinstance(data, keras.utils.PyDataset):
        for index in range(len(data)):
            yield data[index]
        return
    if hasattr(data, "as_numpy_iterator") and keras.backend.backend() != "tensorflow":
        data = data.as_numpy_iterator()  # a tf.data.Dataset feeding another backend
    yield from data
