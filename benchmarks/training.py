"""One training run of a benchmark: the MLP, timing, diagnostics, and the numbers it reports."""

import dataclasses
import importlib.util
import math
import os
import time

import keras

from benchmarks import runtime
from benchmarks.configs import batch_size_for, callbacks_for, wrap_model_for
from keras_momentum.callbacks import GradientNormLogger, LearningRateLogger, ScheduleFreeEvaluation
from keras_momentum.optimizers import ScheduleFreeSGD, instrument

HIDDEN_UNITS = (512, 256)
DROPOUT = 0.3
EVAL_BATCH_SIZE = 1024
# Diagnostics every 10th update: at every update they cost about a tenth of this small
# model's 4 ms step on 2 CPU cores (see RESULTS.md); every 10th costs a few percent.
DIAGNOSTICS_UPDATE_FREQ = 10


@dataclasses.dataclass(frozen=True)
class RunSpec:
    config: str
    precision: str
    seed: int

    @property
    def name(self):
        return f"{self.config}-{self.precision}-seed{self.seed}"


def build_model(num_inputs=784, num_classes=10):
    """784-512-256-10 ReLU MLP with dropout 0.3 after each hidden layer.

    The softmax runs in float32 whatever the dtype policy, as mixed precision asks.
    """
    layers = [keras.Input((num_inputs,))]
    for units in HIDDEN_UNITS:
        layers += [keras.layers.Dense(units, activation="relu"), keras.layers.Dropout(DROPOUT)]
    layers += [keras.layers.Dense(num_classes), keras.layers.Activation("softmax", dtype="float32")]
    return keras.Sequential(layers, name="mnist_mlp")


def compile_model(model, optimizer):
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])


def diagnostics_callbacks(log_dir, update_freq, **gradient_options):
    """Both loggers; `gradient_options` go to `GradientNormLogger` (e.g. `update_ratio=False`)."""
    return [
        LearningRateLogger(log_dir, update_freq=update_freq),
        GradientNormLogger(log_dir, update_freq=update_freq, per_layer=True, **gradient_options),
    ]


class EpochClock(keras.callbacks.Callback):
    """Times each epoch's training steps (evaluation excluded) and its first step."""

    def __init__(self):
        super().__init__()
        self.train_seconds = []
        self.first_step_seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._first_step_end = None
        self._train_end = None

    def on_train_batch_end(self, batch, logs=None):
        if self._first_step_end is None:
            self._first_step_end = time.perf_counter()

    def on_test_begin(self, logs=None):
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        end = self._train_end or time.perf_counter()
        self.train_seconds.append(end - self._start)
        self.first_step_seconds.append(self._first_step_end - self._start)


class Progress:
    """Plain-text progress over all runs: one line per finished epoch with an ETA."""

    def __init__(self, total_epochs):
        self.total_epochs = total_epochs
        self.done_epochs = 0
        self.start = time.perf_counter()

    def elapsed(self):
        return time.perf_counter() - self.start

    def callback(self, run_index, run_count, spec, epochs):
        progress = self

        class ProgressLine(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                progress.done_epochs += 1
                elapsed = progress.elapsed()
                remaining = elapsed / progress.done_epochs * (
                    progress.total_epochs - progress.done_epochs)
                print(
                    f"[run {run_index}/{run_count}] {spec.name} epoch {epoch + 1}/{epochs} "
                    f"loss {logs['loss']:.4f} acc {logs['accuracy']:.4f} "
                    f"test_loss {logs['val_loss']:.4f} test_acc {logs['val_accuracy']:.4f} "
                    f"| elapsed {format_seconds(elapsed)} ETA {format_seconds(remaining)}",
                    flush=True,
                )

        return ProgressLine()


def format_seconds(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


def evaluation_callbacks(optimizer):
    """Schedule-free SGD is validated at its averaged weights, as users should."""
    if isinstance(optimizer, ScheduleFreeSGD):
        return [ScheduleFreeEvaluation()]
    return []


def train_run(spec, dataset, *, build_model, make_optimizer, epochs, batch_size, target_accuracy,
              tensorboard_dir, progress_callback):
    """Trains one configuration once and returns its record for results.json.

    `build_model()` returns a fresh model; `make_optimizer` is the configuration's factory
    (see `benchmarks.configs`).
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(spec.seed)
    batch_size = batch_size_for(make_optimizer, batch_size)
    train_size = len(dataset.x_train)
    steps_per_epoch = math.ceil(train_size / batch_size)
    log_dir = os.path.join(tensorboard_dir, spec.name)
    clock = EpochClock()
    with runtime.dtype_policy(spec.precision):
        runtime.reset_gpu_peak_memory()
        model = wrap_model_for(make_optimizer, build_model())
        optimizer = make_optimizer(steps_per_epoch, epochs)
        own_callbacks = callbacks_for(make_optimizer, steps_per_epoch, epochs, dataset.x_train)
        optimizer_config = keras.optimizers.serialize(optimizer)
        # Built-in optimizers (Adam) need `instrument` to record what the diagnostics read;
        # this package's own are returned unchanged.
        compile_model(model, instrument(optimizer))
        callbacks = [
            clock,
            *evaluation_callbacks(optimizer),
            *own_callbacks,
            *diagnostics_callbacks(log_dir, update_freq=DIAGNOSTICS_UPDATE_FREQ),
            *keras_tensorboard(log_dir),
            progress_callback,
        ]
        fitted = model.fit(
            dataset.x_train, dataset.y_train, batch_size=batch_size, epochs=epochs,
            validation_data=(dataset.x_test, dataset.y_test),
            validation_batch_size=EVAL_BATCH_SIZE, callbacks=callbacks, verbose=0,
        )
        logs = fitted.history
        if own_callbacks:
            # SWA's average enters the model at the end of training: the last epoch's test
            # figures are those of the averaged weights.
            test_loss, test_accuracy = model.evaluate(
                dataset.x_test, dataset.y_test, batch_size=EVAL_BATCH_SIZE, verbose=0)
            logs["val_loss"][-1], logs["val_accuracy"][-1] = test_loss, test_accuracy
    history = [
        {
            "epoch": epoch + 1,
            "loss": float(logs["loss"][epoch]),
            "accuracy": float(logs["accuracy"][epoch]),
            "test_loss": float(logs["val_loss"][epoch]),
            "test_accuracy": float(logs["val_accuracy"][epoch]),
            "epoch_time_s": clock.train_seconds[epoch],
        }
        for epoch in range(epochs)
    ]
    reached = next((row["epoch"] for row in history
                    if row["test_accuracy"] >= target_accuracy), None)
    return {
        "config": spec.config,
        "optimizer": optimizer_config,
        "precision": spec.precision,
        "seed": spec.seed,
        "dataset": dataset.name,
        "train_size": train_size,
        "test_size": len(dataset.x_test),
        "batch_size": batch_size,
        "steps_per_epoch": steps_per_epoch,
        "backend": keras.backend.backend(),
        "device": runtime.describe_device(),
        "final_test_accuracy": history[-1]["test_accuracy"],
        "best_test_accuracy": max(row["test_accuracy"] for row in history),
        "target_accuracy": target_accuracy,
        "epochs_to_target": reached,
        "steps_to_target": None if reached is None else reached * steps_per_epoch,
        "seconds_to_target": None if reached is None else sum(clock.train_seconds[:reached]),
        **throughput(clock, train_size, batch_size),
        "peak_rss_bytes": runtime.peak_rss_bytes(),
        "peak_gpu_bytes": runtime.gpu_peak_memory_bytes(),
        "optimizer_slot_bytes": runtime.slot_bytes(model.optimizer),
        "tensorboard_dir": log_dir,
        "history": history,
    }


def keras_tensorboard(log_dir):
    """Keras's `TensorBoard` callback (losses, metrics), which needs TensorFlow's summary ops;
    without TensorFlow installed (a JAX-only GPU machine) only our loggers write."""
    if importlib.util.find_spec("tensorflow") is None:
        return []
    return [keras.callbacks.TensorBoard(log_dir, write_graph=False)]


def throughput(clock, train_size, batch_size):
    """Training samples per second, leaving out the first epoch (tracing and compiling).

    With a single epoch only its first step is left out.
    """
    if len(clock.train_seconds) > 1:
        samples = train_size * (len(clock.train_seconds) - 1)
        seconds = sum(clock.train_seconds[1:])
        window = f"epochs 2-{len(clock.train_seconds)}"
    else:
        samples = train_size - min(batch_size, train_size)
        seconds = clock.train_seconds[0] - clock.first_step_seconds[0]
        window = "epoch 1 after its first step"
    return {
        "samples_per_second": samples / seconds if samples and seconds > 0 else None,
        "throughput_window": window,
    }
