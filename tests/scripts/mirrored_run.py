"""Trains the same model on one device and under `MirroredStrategy` over two logical CPUs.

Run by `test_distributed.py` in a subprocess (the logical devices must be configured before
TensorFlow initialises):

    python mirrored_run.py OUT.npz

For every case of `CASES` and every mode (`fit` and a custom loop with `strategy.run` and
`optimizer.apply_gradients`), trains once without a strategy and once under the strategy
with the same global batch, and saves the final weights, velocities (the stored values, as
float32), `iterations`, `nonfinite_steps` and the recorded statistics to OUT.npz under
`<case>/<mode>/<device>/...`.
The comparisons are made by the test.
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_momentum import optimizers, schedules  # noqa: E402
from keras_momentum.optimizers import diagnostics  # noqa: E402

GLOBAL_BATCH = 8
STEPS = 6
NAN_STEP = 2  # the batch with a NaN input in the `*_nan` cases
NAN_ROW = GLOBAL_BATCH - 1  # in the second replica's half of that batch


def _warmup_cosine():
    return schedules.Warmup(schedules.CosineDecay(0.1, 10), warmup_steps=3)


CASES = {
    "fused": lambda: optimizers.SGD(_warmup_cosine(), momentum=0.9, nesterov=True),
    # Dampening has no fused kernel: the generic path, with every hyperparameter scheduled.
    "generic": lambda: optimizers.SGD(
        _warmup_cosine(), momentum=schedules.Linear(0.5, 0.9, 5), weight_decay=1e-2,
        formulation="pytorch", dampening=0.1,
    ),
    "fused_nan": lambda: optimizers.SGD(_warmup_cosine(), momentum=0.9, skip_nonfinite=True),
    "generic_nan": lambda: optimizers.SGD(
        _warmup_cosine(), momentum=0.9, skip_nonfinite=True, fused=False
    ),
    "lars": lambda: optimizers.LARS(_warmup_cosine(), weight_decay=1e-3),
    # Velocities stored in int8 and bfloat16 (the generic path), cautious steps.
    "int8_cautious": lambda: optimizers.SGD(
        _warmup_cosine(), momentum=0.9, velocity_dtype="int8", cautious=True
    ),
    "bfloat16_pytorch": lambda: optimizers.SGD(
        _warmup_cosine(), momentum=0.9, formulation="pytorch", velocity_dtype="bfloat16"
    ),
}


def data(nan):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(STEPS * GLOBAL_BATCH, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 2))).astype("float32")
    if nan:
        x[NAN_STEP * GLOBAL_BATCH + NAN_ROW, 0] = np.nan
    return x, y


def new_model(case):
    keras.utils.set_random_seed(0)
    # Named layers: per-variable statistics are keyed by variable path.
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="tanh", name="hidden"),
            keras.layers.Dense(2, name="output"),
        ],
        name="net",
    )
    optimizer = CASES[case]()
    diagnostics.attach(optimizer).request(
        "test", ["hyperparameters", "gradient_norms", "velocity_norm"], 1
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model


def train_fit(case, x, y):
    model = new_model(case)
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    return model


def train_custom(case, x, y, strategy):
    model = new_model(case)
    optimizer = model.optimizer
    # Variables cannot be created inside `strategy.run`: build before the first step.
    optimizer.build(model.trainable_variables)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    dataset = strategy.experimental_distribute_dataset(dataset)

    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            per_example = tf.reduce_mean(tf.square(model(xb, training=True) - yb), axis=-1)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=GLOBAL_BATCH)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    @tf.function
    def step(xb, yb):
        strategy.run(replica_step, args=(xb, yb))

    for xb, yb in dataset:
        step(xb, yb)
    return model


def state(model):
    optimizer = model.optimizer
    out = {f"weight/{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    for i, velocity in enumerate(optimizer._velocity_values()):
        out[f"velocity/{i}"] = keras.ops.convert_to_numpy(velocity)
    out["iterations"] = keras.ops.convert_to_numpy(optimizer.iterations)
    if optimizer.skip_nonfinite:
        out["nonfinite_steps"] = keras.ops.convert_to_numpy(optimizer.nonfinite_steps)
    for name, value in optimizer.recorder.latest().items():
        out[f"statistic/{name}"] = np.asarray(value)
    return out


def main(path):
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    results = {}
    for case in CASES:
        x, y = data(nan=case.endswith("_nan"))
        for device, strategy in (("single", tf.distribute.get_strategy()), ("mirrored", mirrored)):
            with strategy.scope():
                for mode, model in (
                    ("fit", train_fit(case, x, y)),
                    ("custom", train_custom(case, x, y, strategy)),
                ):
                    for key, value in state(model).items():
                        results[f"{case}/{mode}/{device}/{key}"] = value
    np.savez(path, **results)


if __name__ == "__main__":
    main(sys.argv[1])
