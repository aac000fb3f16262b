"""Training that `test_resume.py` kills with SIGKILL and starts again.

    python resume_run.py killed  WORK SAVE_FREQ EPOCH BATCH
    python resume_run.py resumed WORK SAVE_FREQ [--reference]

Trains a small model with this package's SGD (warmup + cosine schedule, Nesterov momentum,
weight decay, `skip_nonfinite=True`; batch 1 of every epoch holds a NaN), the plateau
reducer, both diagnostics loggers (`WORK/logs`) and `keras.callbacks.BackupAndRestore`
(`WORK/backup`, `save_freq` "epoch" or a number of batches), with fixed seeds, no
shuffling and deterministic ops.

`killed`: after every backup, writes the state just backed up, as held in memory, to
`WORK/backed_up.npz`. At batch BATCH of epoch EPOCH it waits for the loggers' background
flush, writes `WORK/ready.json` (pid and update count) and sleeps until killed.

`resumed`: writes the state right after `BackupAndRestore` restored it to
`WORK/restored.npz` and the final state to `WORK/resumed.npz`. With `--reference` it then
trains a fresh model without interruption, logging to `WORK/reference_logs`, and writes
`WORK/reference.npz`.

A state holds the model's weights (`weight/<i>`), every optimizer variable (`optimizer/<i>`,
in `optimizer.variables` order, which is also the order in which Keras saves them: update
count, learning-rate multiplier, velocities, `nonfinite_steps`, statistics), and by name
`iterations`, `multiplier`, `nonfinite_steps` and `velocity_count`.
"""

import hashlib
import json
import os
import sys
import time

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_momentum import callbacks, optimizers, schedules  # noqa: E402

BATCH = 8
STEPS_PER_EPOCH = 6
EPOCHS = 4
NAN_BATCH = 1
# The plateau reducer (patience 2) watches this signal: epochs 1 and 2 do not improve, so it
# reduces at the end of epoch 2, after the kill, only if the resumed run kept the count of
# epoch 1 (the reducer's counters are optimizer state).
SIGNAL = (1.0, 2.0, 2.0, 0.25)
FLUSH_SECS = 0.2


def data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(STEPS_PER_EPOCH * BATCH, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 2))).astype("float32")
    x[NAN_BATCH * BATCH + 1, 0] = np.nan
    return x, y


def new_model():
    keras.utils.set_random_seed(0)
    # Named layers: the reference run in the same process logs under the same tags.
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="tanh", name="hidden"),
            keras.layers.Dense(2, name="output"),
        ],
        name="net",
    )
    learning_rate = schedules.Warmup(schedules.CosineDecay(0.1, 30), warmup_steps=5)
    optimizer = optimizers.SGD(
        learning_rate, momentum=0.9, nesterov=True, weight_decay=1e-3, skip_nonfinite=True
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model


def state(model):
    out = {f"weight/{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    for i, variable in enumerate(model.optimizer._state_variables()):
        out[f"optimizer/{i}"] = keras.ops.convert_to_numpy(variable)
    optimizer = model.optimizer
    out["iterations"] = keras.ops.convert_to_numpy(optimizer.iterations)
    out["multiplier"] = keras.ops.convert_to_numpy(optimizer.plateau_state)
    out["nonfinite_steps"] = keras.ops.convert_to_numpy(optimizer.nonfinite_steps)
    out["velocity_count"] = np.asarray(len(optimizer.velocities))
    return out


def save_state(model, path):
    np.savez(path + ".tmp.npz", **state(model))
    os.replace(path + ".tmp.npz", path)


class Signal(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        logs["signal"] = SIGNAL[epoch]


class BackupWitness(keras.callbacks.Callback):
    """Placed after BackupAndRestore: dumps the in-memory state whenever a backup was written."""

    def __init__(self, work):
        super().__init__()
        self.work = work
        backup = os.path.join(work, "backup")
        self.files = [os.path.join(backup, n) for n in ("latest.weights.h5", "training_metadata.json")]
        self.seen = None

    def _check(self):
        # The backup's bytes, not its modification time, whose resolution may be too coarse.
        if not all(os.path.exists(f) for f in self.files):
            return
        digest = hashlib.sha256()
        for name in self.files:
            with open(name, "rb") as f:
                digest.update(f.read())
        if digest.digest() != self.seen:
            self.seen = digest.digest()
            save_state(self.model, os.path.join(self.work, "backed_up.npz"))

    def on_train_batch_end(self, batch, logs=None):
        self._check()

    def on_epoch_end(self, epoch, logs=None):
        self._check()


class KillPoint(keras.callbacks.Callback):
    def __init__(self, work, epoch, batch):
        super().__init__()
        self.work, self.epoch, self.batch = work, epoch, batch
        self.current = None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) != (self.epoch, self.batch):
            return
        time.sleep(5 * FLUSH_SECS)  # the loggers' flush thread hands their records to the OS
        iterations = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        marker = os.path.join(self.work, "ready.json")
        with open(marker + ".tmp", "w") as f:
            json.dump({"pid": os.getpid(), "iterations": iterations}, f)
        os.replace(marker + ".tmp", marker)
        while True:
            time.sleep(1)


class Pace(keras.callbacks.Callback):
    """Batches of at least flush_secs / 2: the loggers then read every record before the
    next batch (they read at least that often), so the kill loses none of them."""

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(FLUSH_SECS / 2)


class Restored(keras.callbacks.Callback):
    """Placed after BackupAndRestore: dumps the state it restored."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_train_begin(self, logs=None):
        save_state(self.model, self.path)


def save_freq(text):
    return text if text == "epoch" else int(text)


def train(work, frequency, log_dir, extra):
    x, y = data()
    model = new_model()
    model.fit(
        x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
        callbacks=[
            Signal(),
            # Before BackupAndRestore: an epoch-end backup then holds the reduced rate.
            callbacks.ReduceLROnPlateau(monitor="signal", mode="min", factor=0.5, patience=2),
            keras.callbacks.BackupAndRestore(os.path.join(work, "backup"), save_freq=frequency),
            Pace(),
            # After it: the loggers start counting from the restored update count.
            callbacks.LearningRateLogger(log_dir, flush_secs=FLUSH_SECS),
            callbacks.GradientNormLogger(log_dir, flush_secs=FLUSH_SECS),
            *extra,
        ],
    )
    return model


def main(argv):
    mode, work, frequency = argv[0], argv[1], save_freq(argv[2])
    tf.config.experimental.enable_op_determinism()
    if mode == "killed":
        epoch, batch = int(argv[3]), int(argv[4])
        extra = [BackupWitness(work), KillPoint(work, epoch, batch)]
        train(work, frequency, os.path.join(work, "logs"), extra)
        raise SystemExit("the kill point was never reached")
    restored = Restored(os.path.join(work, "restored.npz"))
    model = train(work, frequency, os.path.join(work, "logs"), [restored])
    save_state(model, os.path.join(work, "resumed.npz"))
    if "--reference" in argv:
        reference_work = os.path.join(work, "reference")
        model = train(reference_work, frequency, os.path.join(work, "reference_logs"), [])
        save_state(model, os.path.join(work, "reference.npz"))


if __name__ == "__main__":
    main(sys.argv[1:])
