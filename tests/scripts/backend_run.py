"""A small `fit` on a non-TensorFlow backend, on a machine where TensorFlow cannot be imported.

Run by `test_backends.py` with `KERAS_BACKEND=jax` or `torch`:

    python backend_run.py

Before anything else is imported, every `import tensorflow*` is made to fail (a meta-path
finder, and `None` in `sys.modules` so that `importlib.util.find_spec` answers None), as on
a machine without TensorFlow. Trains one Dense layer (mean squared error, so the
gradients have a closed form) with this package's SGD (Keras formulation, momentum 0.9,
a `Warmup` schedule), `ReduceLROnPlateau` and `skip_nonfinite=True` for 3 epochs of 4
batches, and prints one JSON line: the backend, the TensorFlow modules imported (none
expected), the data, the initial and final weights, the update count, the learning-rate
multiplier, `is_chief()` and whether fused TensorFlow kernels were selected.
"""

import importlib.abc
import sys


class HideTensorFlow(importlib.abc.MetaPathFinder):
    """Makes `import tensorflow*` (tensorflow_io, ...) fail."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0].startswith("tensorflow"):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by backend_run.py)")
        return None


sys.meta_path.insert(0, HideTensorFlow())
# `importlib.util.find_spec("tensorflow")` (PyTorch asks) must answer None, not raise.
sys.modules["tensorflow"] = None

import json  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_momentum  # noqa: E402
from keras_momentum import callbacks, optimizers, schedules  # noqa: E402
from keras_momentum.callbacks._chief import is_chief  # noqa: E402

BATCH, STEPS_PER_EPOCH, EPOCHS = 8, 4, 3


def main():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(BATCH * STEPS_PER_EPOCH, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    optimizer = optimizers.SGD(
        schedules.Warmup(0.1, warmup_steps=3), momentum=0.9, skip_nonfinite=True
    )
    model.compile(optimizer=optimizer, loss="mse")
    initial = [w.tolist() for w in model.get_weights()]
    plateau = callbacks.ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=0)
    history = model.fit(
        x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[plateau]
    )
    print(json.dumps({
        "backend": keras.backend.backend(),
        "version": keras_momentum.__version__,
        "tensorflow_modules": sorted(
            name for name, module in sys.modules.items()
            if name.startswith("tensorflow") and module is not None
        ),
        "x": x.tolist(),
        "y": y.tolist(),
        "initial": initial,
        "final": [w.tolist() for w in model.get_weights()],
        "loss": history.history["loss"],
        "iterations": int(keras.ops.convert_to_numpy(optimizer.iterations)),
        "multiplier": float(keras.ops.convert_to_numpy(optimizer.plateau_state)[0]),
        "nonfinite_steps": int(keras.ops.convert_to_numpy(optimizer.nonfinite_steps)),
        "is_chief": is_chief(model),
        "fused_kernels": optimizer._kernels is not None,
    }))


if __name__ == "__main__":
    main()
