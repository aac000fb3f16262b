"""Training with stochastic weight averaging that `test_swa.py` kills with SIGKILL and resumes.

    python swa_resume_run.py killed    WORK
    python swa_resume_run.py resumed   WORK
    python swa_resume_run.py reference WORK

Trains a small model with batch normalisation (this package's SGD, float rate, momentum)
for 6 epochs with `BackupAndRestore(WORK/backup)` (epoch backups) followed by
`StochasticWeightAveraging(start_epoch=1, swa_learning_rate=0.01, anneal_epochs=3,
batch_norm_data=x)`, on the backend of the environment, with fixed seeds and no shuffling.

`killed`: at batch 2 of epoch 3 (the average then holds epochs 1 and 2, the last backup
epochs 1 only, with the weights of epoch 2) writes `WORK/ready.json` and sleeps until killed.
`resumed`: starts again from the backup and writes the final state to `WORK/resumed.npz`,
with `restored_count`, the number of epochs averaged right after the restore.
`reference`: trains without interruption (in `WORK/reference`), writes `WORK/reference.npz`.
A state is the model's weights (`weight/<i>`) and the optimizer's variables (`optimizer/<i>`).
"""

import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_momentum import optimizers  # noqa: E402
from keras_momentum.callbacks import StochasticWeightAveraging  # noqa: E402

BATCH, STEPS_PER_EPOCH, EPOCHS = 8, 6, 6
KILL_EPOCH, KILL_BATCH = 3, 2


def data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(STEPS_PER_EPOCH * BATCH, 4)).astype("float32")
    y = np.tanh(x @ rng.normal(size=(4, 2))).astype("float32")
    return x, y


def new_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(8), keras.layers.BatchNormalization(),
        keras.layers.ReLU(), keras.layers.Dense(2),
    ])
    model.compile(optimizers.SGD(0.1, momentum=0.9), "mse")
    return model


def state(model):
    out = {f"weight/{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    for i, variable in enumerate(model.optimizer.variables):
        out[f"optimizer/{i}"] = keras.ops.convert_to_numpy(variable)
    return out


class KillPoint(keras.callbacks.Callback):
    def __init__(self, work, swa):
        super().__init__()
        self.work, self.swa, self.epoch = work, swa, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) != (KILL_EPOCH, KILL_BATCH):
            return
        marker = os.path.join(self.work, "ready.json")
        with open(marker + ".tmp", "w") as f:
            json.dump({"pid": os.getpid(), "averaged_at_kill": self.swa.averaged_epochs}, f)
        os.replace(marker + ".tmp", marker)
        while True:
            time.sleep(1)


class Restored(keras.callbacks.Callback):
    """After BackupAndRestore and the averaging callback: the count just restored."""

    def __init__(self, swa):
        super().__init__()
        self.swa, self.count = swa, None

    def on_train_begin(self, logs=None):
        self.count = self.swa.averaged_epochs


def train(work, extra):
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415

        tf.config.experimental.enable_op_determinism()
    x, y = data()
    model = new_model()
    swa = StochasticWeightAveraging(1, swa_learning_rate=0.01, anneal_epochs=3, batch_norm_data=x)
    callbacks = [keras.callbacks.BackupAndRestore(os.path.join(work, "backup")), swa]
    callbacks += [make(swa) for make in extra]
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)
    return model, callbacks


def main(argv):
    mode, work = argv[0], argv[1]
    if mode == "killed":
        train(work, [lambda swa: KillPoint(work, swa)])
        raise SystemExit("the kill point was never reached")
    if mode == "resumed":
        model, callbacks = train(work, [Restored])
        np.savez(os.path.join(work, "resumed.npz"), restored_count=callbacks[-1].count, **state(model))
        return
    model, _ = train(os.path.join(work, "reference"), [])
    np.savez(os.path.join(work, "reference.npz"), restored_count=-1, **state(model))


if __name__ == "__main__":
    main(sys.argv[1:])
