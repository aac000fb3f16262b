"""Trains SharpnessAwareMinimization on one device and under `MirroredStrategy` over two CPUs.

Run by `test_sam.py` in a subprocess (the logical devices must be configured before TensorFlow
initialises):

    python sam_mirrored_run.py OUT.npz

For SAM and ASAM, fits the same model on the same global batches once without a strategy and
once with two replicas, and saves the final weights under `<variant>/one/<i>` and
`<variant>/two/<i>`. The comparison is made by the test.
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

from keras_momentum.models import SharpnessAwareMinimization  # noqa: E402
from keras_momentum.optimizers import SGD  # noqa: E402

GLOBAL_BATCH, STEPS = 16, 6
VARIANTS = {"sam": {"rho": 0.1}, "asam": {"rho": 1.0, "adaptive": True}}


def train(options, weights, x, y):
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                            keras.layers.Dense(2)])
    net.set_weights(weights)
    sam = SharpnessAwareMinimization(net, **options)
    sam.compile(optimizer=SGD(0.1, momentum=0.9, nesterov=True), loss="mse")
    sam.fit(x, y, batch_size=GLOBAL_BATCH, shuffle=False, verbose=0)
    return sam.get_weights()


def main(out):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(STEPS * GLOBAL_BATCH, 4)).astype("float32")
    y = np.tanh(x @ rng.normal(size=(4, 2))).astype("float32")
    weights = [rng.normal(scale=0.5, size=s).astype("float32") for s in [(4, 8), (8,), (8, 2), (2,)]]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    arrays = {}
    for variant, options in VARIANTS.items():
        for device, scope in (("one", None), ("two", strategy)):
            if scope is None:
                final = train(options, weights, x, y)
            else:
                with scope.scope():
                    final = train(options, weights, x, y)
            arrays.update({f"{variant}/{device}/{i}": w for i, w in enumerate(final)})
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
