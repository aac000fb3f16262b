"""One worker of a two-process `MultiWorkerMirroredStrategy` run on 127.0.0.1.

Run by `test_distributed.py`, twice, with `TF_CONFIG` naming this process's task:

    python multi_worker_run.py OUT_DIR LOG_DIR

Trains a small model with this package's SGD (warmup + cosine schedule, a momentum
schedule, `skip_nonfinite=True`), `ReduceLROnPlateau` and both diagnostics loggers writing
to the shared LOG_DIR, in a custom loop (`strategy.run` + `optimizer.apply_gradients`, the
callbacks driven by a `CallbackList`): Keras 3's `fit` does not run under this strategy
(keras-team/keras#20585). Each worker trains on its half of every global batch (sharding by
data), so together the workers train on the same global batches as one process would; one
batch an epoch has a NaN in worker 1's half only, so both must skip it together.

Writes OUT_DIR/worker_<index>.npz with the final weights, velocities, `iterations`,
`nonfinite_steps`, the learning-rate multiplier, `is_chief` and the process id; after the
distributed run the chief also trains the same model without a strategy on the full global
batches (`reference/...` entries).
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# The strategy must exist before any other TensorFlow operation runs.
STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_momentum import callbacks, optimizers, schedules  # noqa: E402
from keras_momentum.callbacks._chief import is_chief  # noqa: E402

GLOBAL_BATCH = 8
STEPS_PER_EPOCH = 4
EPOCHS = 3
NAN_BATCH = 1


def data():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(STEPS_PER_EPOCH * GLOBAL_BATCH, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 2))).astype("float32")
    # Only worker 1's half of batch NAN_BATCH holds a NaN: every worker must skip it.
    x[NAN_BATCH * GLOBAL_BATCH + GLOBAL_BATCH - 1, 0] = np.nan
    return x, y


def new_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(2)]
    )
    learning_rate = schedules.Warmup(schedules.CosineDecay(0.1, 20), warmup_steps=4)
    optimizer = optimizers.SGD(
        learning_rate, momentum=schedules.Linear(0.5, 0.9, 6), skip_nonfinite=True
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model


def plateau():
    # The loss falls every epoch, so in mode "max" every epoch after the first is a plateau.
    return callbacks.ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=0)


def global_batches(x, y):
    # Sharding by data: `experimental_distribute_dataset` splits every global batch
    # between the replicas, and each worker keeps its replica's half.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    return dataset.with_options(options)


def state(model, prefix):
    optimizer = model.optimizer
    out = {f"{prefix}weight/{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    for i, velocity in enumerate(optimizer.velocities):
        out[f"{prefix}velocity/{i}"] = keras.ops.convert_to_numpy(velocity)
    out[f"{prefix}iterations"] = keras.ops.convert_to_numpy(optimizer.iterations)
    out[f"{prefix}nonfinite_steps"] = keras.ops.convert_to_numpy(optimizer.nonfinite_steps)
    out[f"{prefix}multiplier"] = keras.ops.convert_to_numpy(optimizer.plateau_state)[0]
    return out


def train_step_function(model):
    optimizer = model.optimizer

    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            per_example = tf.reduce_mean(tf.square(model(xb, training=True) - yb), axis=-1)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=GLOBAL_BATCH)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def step(xb, yb):
        losses = STRATEGY.run(replica_step, args=(xb, yb))
        return STRATEGY.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return step


def train_distributed(x, y, log_dir):
    with STRATEGY.scope():
        model = new_model()
        model.optimizer.build(model.trainable_variables)
    step = train_step_function(model)
    dataset = STRATEGY.experimental_distribute_dataset(global_batches(x, y))
    hooks = keras.callbacks.CallbackList(
        [
            plateau(),
            callbacks.LearningRateLogger(log_dir, flush_secs=0.5),
            callbacks.GradientNormLogger(log_dir, flush_secs=0.5),
        ],
        model=model,
    )
    hooks.on_train_begin()
    for epoch in range(EPOCHS):
        hooks.on_epoch_begin(epoch)
        losses = []
        for batch, (xb, yb) in enumerate(dataset):
            hooks.on_train_batch_begin(batch)
            losses.append(float(step(xb, yb)))
            hooks.on_train_batch_end(batch, {"loss": losses[-1]})
        hooks.on_epoch_end(epoch, {"loss": float(np.nanmean(losses))})
    hooks.on_train_end()
    return model


def train_reference(x, y):
    model = new_model()
    hooks = keras.callbacks.CallbackList([plateau()], model=model)
    hooks.on_train_begin()
    for epoch in range(EPOCHS):
        losses = []
        for batch in range(STEPS_PER_EPOCH):
            rows = slice(batch * GLOBAL_BATCH, (batch + 1) * GLOBAL_BATCH)
            losses.append(float(model.train_on_batch(x[rows], y[rows])))
        hooks.on_epoch_end(epoch, {"loss": float(np.nanmean(losses))})
    return model


def main(out_dir, log_dir):
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    x, y = data()
    model = train_distributed(x, y, log_dir)
    out = state(model, "")
    out["is_chief"] = np.asarray(is_chief(model))
    out["pid"] = np.asarray(os.getpid())
    out["workers"] = np.asarray(STRATEGY.num_replicas_in_sync)
    if task["index"] == 0:
        out.update(state(train_reference(x, y), "reference/"))
    np.savez(os.path.join(out_dir, f"worker_{task['index']}.npz"), **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
