"""In-graph computation of the per-update statistics, and their storage layout.

An update first leaves a raw record (`RAW`): its scalars with norms still squared, and the
parts of `update_ratio` other than the velocities' norms. `finish` turns it into the
record, given the squared norms of the velocities after the update; when every update
records, that happens at the start of the next update (whose graph reads the velocities
before changing them, off the end of the step), else right away.

A record is one float32 row: the update number it belongs to (split in two float32 parts,
exact up to 2**44 updates), the scalars of `SCALARS` (NaN where not recorded) and one
gradient norm per trainable variable. Records go round a ring of `RECORD_SLOTS` rows, the
k-th record (counting the updates that record, every `every`-th) into row k mod
`RECORD_SLOTS`, so a host can read many records in one transfer, long after they were
made. Histograms live in a second array, `(variables, 2 + BINS)`: low edge, high edge,
then the counts of `BINS` equal buckets, of the latest update that recorded them.
"""

import keras
import numpy as np
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
    "nonfinite_steps",
)
RAW = (
    "learning_rate",
    "momentum",
    "weight_decay",
    "gradient_squares",
    "clipped_squares",
    "moved_squares",  # ‖Δθ‖² of the variables whose Δθ is not a multiple of a velocity
    "weight_squares",  # ‖θ‖² before the update
    "velocity_scale_squared",  # c² where Δθ = c·v for the others
    "nonfinite_steps",
)
HEADER = ("step_high", "step_low")
STEP_SPLIT = 2**20
HISTOGRAM_BINS = 30
RECORD_SLOTS = 64


def record_size(variable_count):
    return len(HEADER) + len(SCALARS) + variable_count


def raw_size(variable_count):
    return len(HEADER) + len(RAW) + variable_count


def finish(raw, velocity_squares, sources, velocity_norm):
    """The record of a raw record, given `Σ v²` of each velocity after that update.

    `sources` are the positions (in `velocity_squares`) of the velocities whose multiples
    are the update's `Δθ`; `velocity_norm` says whether `velocity_norm/global` is recorded.
    `velocity_squares` may be None when neither needs it.
    """
    h = len(HEADER)
    moved = raw[h + 5]
    if sources:
        moved = ops.add(moved, ops.multiply(raw[h + 7], gathered_sum(velocity_squares, sources)))
    ratio = ops.sqrt(ops.divide(moved, ops.maximum(raw[h + 6], 1e-24)))
    if velocity_norm:
        velocity = ops.sqrt(ops.sum(velocity_squares))
    else:
        velocity = ops.convert_to_tensor(float("nan"), "float32")
    return ops.concatenate([
        raw[:h + 3],
        ops.sqrt(raw[h + 3:h + 5]),
        ops.stack([ratio, velocity]),
        raw[h + 8:h + 9],
        ops.sqrt(raw[h + 9:]),
    ])


def header_step(row):
    """The update number of a record or raw record (an int32 tensor)."""
    high = ops.cast(row[0], "int32")
    return ops.add(ops.multiply(high, STEP_SPLIT), ops.cast(row[1], "int32"))


def when(condition, compute, single_replica):
    """Assigns `compute()`'s `(variable, value)` pairs only when `condition` holds.

    `condition` None means always. Where a conditional branch may hold assignments
    (TensorFlow on one replica, PyTorch) the computation itself is skipped on other steps;
    on JAX (whose `lax.cond` cannot assign) and across replicas it runs every step and the
    old value is kept.
    """
    if condition is None:
        for variable, value in compute():
            variable.assign(value)
        return
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


def decode_steps(records):
    """The update number of each row of a `(rows, record size)` array, as int64."""
    records = np.asarray(records)
    return records[:, 0].astype(np.int64) * STEP_SPLIT + records[:, 1].astype(np.int64)


def computed(condition, compute, zeros, single_replica):
    """`compute()` (a list of tensors) where `condition` holds, else `zeros()`.

    `condition` None means always. The computation is skipped on other steps where the
    backend has a conditional (TensorFlow on one replica, PyTorch), and runs every step
    otherwise (its value is then only used on the steps that record).
    """
    if condition is None:
        return compute()
    backend = keras.backend.backend()
    if backend == "torch" or (backend == "tensorflow" and single_replica):
        return ops.cond(condition, compute, zeros)
    return compute()


def compiled(function):
    """`function` compiled for repeated calls from the host: `tf.function` on TensorFlow,
    `jax.jit` on JAX; PyTorch runs it eagerly."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

        return tf.function(function, autograph=False)
    if backend == "jax":
        import jax  # noqa: PLC0415 (JAX backend only)

        return jax.jit(function)
    return function


def record_condition(step, every):
    """Whether update `step` records (a boolean tensor), or None when every update does."""
    if every == 1:
        return None
    return ops.equal(ops.mod(step, every), 0)


def ring_row(ring, step, every, row):
    """`ring` with `row` in the slot of the record of update `step`."""
    slot = ops.mod(ops.floor_divide(ops.cast(step, "int32"), every), ring.shape[0])
    return ops.scatter_update(ring.value, ops.reshape(slot, (1, 1)), ops.expand_dims(row, 0))


def square_norms(tensors):
    """The float32 vector of `Σ x²` over each tensor's entries: one reduction per tensor.

    TensorFlow's `l2_loss` squares and sums in one pass without a temporary the size of
    the tensor (`square` then `sum` writes and reads one); under JAX, XLA fuses the two.
    """
    values = [_values(t) for t in tensors]
    values = [v.value if isinstance(v, keras.Variable) else v for v in values]
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

        # l2_loss is Σx²/2; one multiplication for all of them.
        return 2.0 * tf.stack([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in values])
    if backend == "torch":
        import torch  # noqa: PLC0415 (PyTorch backend only)

        norms = [torch.linalg.vector_norm(v, dtype=torch.float32) for v in values]
        return torch.square(torch.stack(norms))
    return ops.stack([ops.sum(ops.square(ops.cast(v, "float32"))) for v in values])


def gathered_sum(vector, rows):
    """`Σ vector[rows]`, with no gather when `rows` is all of `vector` in order."""
    if list(rows) == list(range(vector.shape[0])):
        return ops.sum(vector)
    return ops.sum(ops.take(vector, ops.array(rows, "int32")))


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
