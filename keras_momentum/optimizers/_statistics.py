"""In-graph computation of the per-update statistics, their storage, and the host's finish.

The train step records as little as it can: squared norms, one reduction per tensor, and
the hyperparameters, assembled into one raw row (`RAW`) that goes straight into a ring on
the device. Each operation costs dispatch time in the step (a few µs on a 2-core CPU),
so square roots, sums over variables and the update ratio are left to the host, which
computes them for many rows at once when it reads the ring (`finish`, NumPy).

A raw row is one float32 row: the update number (split in two float32 parts, exact up to
2**44 updates), the scalars of `RAW` (NaN where not recorded) and the squared gradient norm
of each trainable variable. Rows go round a ring of `RECORD_SLOTS` rows, the k-th record
(counting the updates that record, every `every`-th) into row k mod `RECORD_SLOTS`, so the
host reads many records in one transfer, long after they were made.

The velocities' squared norms after an update (for `velocity_norm` and for an update ratio
whose `Δθ` is a multiple of the velocities) are in the row of that update when not every
update records (`velocity_lag` 0: the step computes them after its update), and under JAX
always (XLA fuses them with the update). When every update records on TensorFlow or
PyTorch, the next update computes them before it changes the velocities, off the end of
the step, and puts them in its own row (`velocity_lag` 1); the host finishes the latest
record from the current velocities, or waits for the next update.

Histograms live in a second array, `(variables, 2 + BINS)`: low edge, high edge, then the
counts of `BINS` equal buckets, of the latest update that recorded them.
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
    "clipped_squares",  # Σ g² after clipping; SAME_AS_GRADIENT when nothing clips
    "moved_squares",  # ‖Δθ‖² of the variables whose Δθ is not a multiple of a velocity
    "weight_squares",  # ‖θ‖² before the update
    "velocity_scale_squared",  # c² where Δθ = c·v for the others
    "nonfinite_steps",
    "velocity_source_squares",  # Σ v² of the velocities that are some Δθ
    "velocity_squares",  # Σ v² of all velocities
    "velocity_lag",  # 0: the two above follow this row's update; 1: the previous update
)
HEADER = ("step_high", "step_low")
STEP_SPLIT = 2**20
HISTOGRAM_BINS = 30
RECORD_SLOTS = 256
SAME_AS_GRADIENT = -1.0
_H = len(HEADER)
_COLUMN = {name: _H + i for i, name in enumerate(RAW)}


def record_size(variable_count):
    return _H + len(RAW) + variable_count


def finish(rows, velocities, per_variable):
    """The records of raw rows: `{name: column}` for every `SCALARS` name, and the
    `(records, variables)` gradient norms when `per_variable` (else None).

    `rows` is a `(records, record_size)` array of raw rows; `velocities` the
    `(records, 2)` velocity sums of each row's update (`velocity_columns`).
    """
    rows = np.asarray(rows, np.float64)

    def column(name):
        return rows[:, _COLUMN[name]]

    gradient_squares = rows[:, _H + len(RAW):]
    gradient = np.sum(gradient_squares, axis=1)
    clipped = np.where(column("clipped_squares") == SAME_AS_GRADIENT, gradient,
                       column("clipped_squares"))
    moved = column("moved_squares") + column("velocity_scale_squared") * velocities[:, 0]
    columns = {
        "learning_rate": column("learning_rate"),
        "momentum": column("momentum"),
        "weight_decay": column("weight_decay"),
        "gradient_norm/global": np.sqrt(gradient),
        "gradient_norm/global_clipped": np.sqrt(clipped),
        "update_ratio/global": np.sqrt(moved / np.maximum(column("weight_squares"), 1e-24)),
        "velocity_norm/global": np.sqrt(velocities[:, 1]),
        "nonfinite_steps": column("nonfinite_steps"),
    }
    columns = {name: values.astype(np.float32) for name, values in columns.items()}
    norms = np.sqrt(gradient_squares).astype(np.float32) if per_variable else None
    return columns, norms


def velocity_columns(rows, steps):
    """Each row's update's velocity sums, `(records, 2)`, and whether they are known.

    A row whose statistics need no velocity (`velocity_lag` NaN) holds its own (0 for
    the sources, NaN for the total); otherwise they are in the row of that update (lag
    0) or of the next one (lag 1), which may not be in `rows` yet. `steps` increase.
    """
    rows = np.asarray(rows, np.float64)
    sums = rows[:, [_COLUMN["velocity_source_squares"], _COLUMN["velocity_squares"]]]
    lag = rows[:, _COLUMN["velocity_lag"]]
    own = np.isnan(lag)
    carriers = np.flatnonzero(~own)
    targets = steps[carriers] - lag[carriers].astype(np.int64)  # the updates they describe
    order = np.argsort(targets, kind="stable")
    targets, carriers = targets[order], carriers[order]
    position = np.minimum(np.searchsorted(targets, steps), max(len(targets) - 1, 0))
    found = np.zeros(len(steps), dtype=bool)
    if len(targets):
        found = targets[position] == steps
    known = own | found
    velocities = np.full((len(steps), 2), np.nan)
    velocities[own] = sums[own]
    if len(targets):
        velocities[found] = sums[carriers[position[found]]]
    return velocities, known


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


def write_row(ring, step, row, single_replica):
    """Writes `row` into the slot of update `step` when every update records.

    On TensorFlow on one replica, in place (one scatter into the variable); elsewhere
    the ring is assigned whole.
    """
    if keras.backend.backend() == "tensorflow" and single_replica:
        import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

        slot = ops.reshape(ops.mod(ops.cast(step, "int32"), ring.shape[0]), (1,))
        ring.value.scatter_update(tf.IndexedSlices(ops.expand_dims(row, 0), slot))
        return
    ring.assign(ring_row(ring, step, 1, row))


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


def velocity_sums(squares, sources, total):
    """`[Σ v² of the velocities at `sources`, Σ v² of all]` from each velocity's `Σ v²`;
    the second is NaN unless `total`."""
    whole = ops.sum(squares) if total else ops.convert_to_tensor(float("nan"), "float32")
    if not sources:
        return [ops.convert_to_tensor(0.0, "float32"), whole]
    if total and list(sources) == list(range(squares.shape[0])):
        return [whole, whole]  # every velocity is some Δθ (SGD): one sum for both
    return [gathered_sum(squares, sources), whole]


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
