"""In-graph computation of the per-update statistics, and their storage layout.

One float32 vector holds a record: the update number it belongs to (split in two float32
parts, exact up to 2**44 updates), the scalars of `SCALARS` (NaN where not recorded) and
one gradient norm per trainable variable. A host
reads it in one transfer. Histograms live in a second array, `(variables, 2 + BINS)`:
low edge, high edge, then the counts of `BINS` equal buckets.
"""

import keras
from keras import ops

from keras_momentum.optimizers._dense import is_indexed_slices

STATISTICS = (
    "hyperparameters",
    "gradient_norms",
    "per_variable_norms",
    "update_ratio",
    "velocity_norm",
    "histograms",
)
SCALARS = (
    "learning_rate",
    "momentum",
    "weight_decay",
    "gradient_norm/global",
    "gradient_norm/global_clipped",
    "update_ratio/global",
    "velocity_norm/global",
)
HEADER = ("step_high", "step_low")
STEP_SPLIT = 2**20
HISTOGRAM_BINS = 30


def record_size(variable_count):
    return len(HEADER) + len(SCALARS) + variable_count


def when(condition, compute, single_replica):
    """Assigns `compute()`'s `(variable, value)` pairs only when `condition` holds.

    Where a conditional branch may hold assignments (TensorFlow on one replica, PyTorch)
    the computation itself is skipped on other steps; on JAX (whose `lax.cond` cannot
    assign) and across replicas it runs every step and the old value is kept.
    """
    backend = keras.backend.backend()
    if backend == "torch" or (backend == "tensorflow" and single_replica):
        def assign():
            for variable, value in compute():
                variable.assign(value)

        ops.cond(condition, assign, lambda: None)
        return
    for variable, value in compute():
        variable.assign(ops.where(condition, value, variable.value))


def step_header(step):
    step = ops.cast(step, "int32")
    high = ops.cast(ops.floor_divide(step, STEP_SPLIT), "float32")
    low = ops.cast(ops.mod(step, STEP_SPLIT), "float32")
    return [high, low]


def decode_step(record):
    return int(record[0]) * STEP_SPLIT + int(record[1])


def global_norm(tensors):
    return ops.sqrt(ops.sum(ops.stack([sum_of_squares(t) for t in tensors])))


def sum_of_squares(tensor):
    return ops.sum(ops.square(ops.cast(_values(tensor), "float32")))


def histogram(gradient):
    values = ops.reshape(ops.cast(_values(gradient), "float32"), (-1,))
    low, high = ops.min(values), ops.max(values)
    width = ops.maximum(high - low, 1e-30)
    bins = ops.clip(ops.floor((values - low) / width * HISTOGRAM_BINS), 0, HISTOGRAM_BINS - 1)
    counts = ops.segment_sum(ops.ones_like(values), ops.cast(bins, "int32"), HISTOGRAM_BINS)
    return ops.concatenate([ops.stack([low, high]), counts])


def scatter_rows(indices, rows, shape):
    """A zero tensor of `shape` whose rows `indices` hold `rows` (stacked per gradient)."""
    if list(indices) == list(range(shape[0])):
        return rows
    return ops.scatter(ops.expand_dims(ops.array(indices, "int32"), -1), rows, shape)


def sum_over_replicas(grads):
    """The gradients summed over the replicas of a `tf.distribute` strategy, else `grads`.

    Each replica clips and records its own share of the batch's gradient; the update
    applies their sum (all-reduced after clipping), so the statistics describe that sum.
    """
    if replica_count() == 1:
        return grads
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, list(grads))


def replica_count():
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def unique_paths(variables):
    """The variables' paths, with `_1`, `_2`, ... appended to repeats, in order.

    Keras lets two variables share a path (two layers of one name built outside a model),
    and statistics are keyed per variable by path. `global` and `global_clipped` are
    avoided too: they name the global norms in the same key space.
    """
    taken = {"global", "global_clipped"}
    paths = []
    for variable in variables:
        path, repeat = variable.path, 0
        while path in taken:
            repeat += 1
            path = f"{variable.path}_{repeat}"
        taken.add(path)
        paths.append(path)
    return paths


def _values(gradient):
    # IndexedSlices: the stored rows. Rows repeated in `indices` are counted apart.
    return gradient.values if is_indexed_slices(gradient) else gradient
