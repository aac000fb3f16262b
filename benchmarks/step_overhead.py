"""The in-graph part of the diagnostics' cost, timed execution by execution.

A fit-level pair (`overhead.py`) sees everything the loggers add, but two 100-step fits of
one model on a shared 2-core machine differ by several percent by themselves. Here one
model gets three train functions of its own: two traced without statistics (an A/A pair,
whose ratio shows the instrument's own bias) and one that records every update's
statistics (what both loggers ask for at `update_freq=1`). They take turns in blocks of
`block` executions of one batch, in an order shuffled per cycle, so slow drifts of the
machine fall on all three alike; each execution is timed until its outputs are ready.
Part of what a step costs may show in the step after it (alternating single executions
read TensorFlow's recording step 1–2 points cheaper than blocks of ten in our runs, about
the size of the noise): the first execution of each block is run but not counted. The
in-graph cost is the ratio of median execution times, statistics-free (both functions
pooled) over recording, with a bootstrap interval.

At `update_freq=1` on TensorFlow a recording update also reduces the velocities the
previous update left (`velocity_lag` 1). The last recording update of a block is followed
by another function's, so its record is never finished; the work per step is the same.
"""

import random
import tempfile
import time

import keras
import numpy as np

from benchmarks import runtime
from benchmarks.configs import CONFIGS
from benchmarks.overhead import own_train_function, statistics_free
from benchmarks.training import build_model, compile_model, diagnostics_callbacks
from keras_momentum.optimizers import diagnostics, instrument

FUNCTIONS = ("plain_a", "plain_b", "recording")


def measure_step_overhead(config, precision, dataset, *, batch_size, executions, seed,
                          block=10):
    """Per-execution times of the three functions, `executions` counted each, and their
    ratios."""
    if isinstance(block, bool) or not isinstance(block, int) or block < 2:
        raise ValueError(f"`block` must be an int >= 2, got {block!r}")
    keras.backend.clear_session()
    samples = 16 * batch_size
    x = np.resize(dataset.x_train, (samples, dataset.x_train.shape[1]))
    y = np.resize(dataset.y_train, (samples,))
    with runtime.dtype_policy(precision):
        keras.utils.set_random_seed(seed)
        model = build_model()
        optimizer = instrument(CONFIGS[config](executions, 1))
        compile_model(model, optimizer)
        model.fit(x[:batch_size], y[:batch_size], batch_size=batch_size, verbose=0)
        functions = _train_functions(model, optimizer)
        run = _Runner(model, x, y, batch_size)
        recording_updates = []

        def timed(name):
            seconds = run(functions[name])
            if name == "recording":
                recording_updates.append(run.updates)
            return seconds

        for name in FUNCTIONS:  # traces, then warms each function
            for _ in range(3):
                timed(name)
        order = random.Random(seed)
        seconds = {name: [] for name in FUNCTIONS}
        for _ in range(-(-executions // (block - 1))):
            for name in order.sample(FUNCTIONS, len(FUNCTIONS)):
                timed(name)  # pays for what the previous block left
                seconds[name] += [timed(name) for _ in range(block - 1)]
        run.finish()
    plain = seconds["plain_a"] + seconds["plain_b"]
    rng = np.random.default_rng(seed)
    return {
        "config": config,
        "precision": precision,
        "executions": len(seconds["recording"]),
        "block": block,
        "median_ms": {name: 1e3 * float(np.median(s)) for name, s in seconds.items()},
        "recording_ratio": _speed_ratio(plain, seconds["recording"]),
        "recording_interval": _ratio_interval(plain, seconds["recording"], rng),
        "a_a_ratio": _speed_ratio(seconds["plain_a"], seconds["plain_b"]),
        "a_a_interval": _ratio_interval(seconds["plain_a"], seconds["plain_b"], rng),
        # Proof that only the recording function recorded: the updates the ring holds.
        "records_match": _recorded_steps(optimizer) == _ring_steps(recording_updates),
    }


def format_step_overhead(result):
    low, high = result["recording_interval"]
    a_low, a_high = result["a_a_interval"]
    times = ", ".join(f"{name} {ms:.2f} ms" for name, ms in result["median_ms"].items())
    return (
        f"In-graph cost, execution by execution ({result['config']}, {result['precision']}, "
        f"3 functions x {result['executions']} executions in shuffled blocks of "
        f"{result['block']}; median times {times}):\n"
        f"  recording every update's statistics: {result['recording_ratio']:.3f} "
        f"({low:.3f}-{high:.3f}) of the statistics-free speed\n"
        f"  two statistics-free functions (A/A): {result['a_a_ratio']:.3f} "
        f"({a_low:.3f}-{a_high:.3f})"
    )


def _train_functions(model, optimizer):
    """Two statistics-free train functions and one recording every update's statistics,
    each traced from a train step of its own."""
    functions = {name: statistics_free(own_train_function(model), optimizer)
                 for name in ("plain_a", "plain_b")}
    with tempfile.TemporaryDirectory() as unused:
        for logger in diagnostics_callbacks(unused, 1):
            logger.set_model(model)  # asks the optimizer for what the loggers record
    functions["recording"] = own_train_function(model)
    return functions


class _Runner:
    """Calls a train function on the next batch as the backend's trainer does, and waits
    for its outputs; returns the seconds."""

    def __init__(self, model, x, y, batch_size):
        self.model = model
        self.backend = keras.backend.backend()
        self.updates = int(model.optimizer.iterations)
        batches = [(x[i:i + batch_size], y[i:i + batch_size])
                   for i in range(0, len(x) - batch_size + 1, batch_size)]
        if self.backend == "tensorflow":
            import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

            dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
            self.iterator = iter(dataset.repeat())
        else:
            self.batches = [tuple(keras.ops.convert_to_tensor(a) for a in batch)
                            for batch in batches]
        if self.backend == "jax":
            self.state = model._get_jax_state(  # what Keras's JAX `fit` passes along
                trainable_variables=True, non_trainable_variables=True,
                optimizer_variables=True, metrics_variables=True, purge_model_variables=False)

    def __call__(self, function):
        start = time.perf_counter()
        if self.backend == "tensorflow":
            logs = function(self.iterator)
        elif self.backend == "jax":
            import jax  # noqa: PLC0415 (JAX backend only)

            batch = self.batches[self.updates % len(self.batches)]
            logs, self.state = function(self.state, iter([batch]))
            jax.block_until_ready(logs)
        else:
            logs = function([self.batches[self.updates % len(self.batches)]])
        keras.ops.convert_to_numpy(logs["loss"])
        self.updates += 1
        return time.perf_counter() - start

    def finish(self):
        """Puts JAX's state back into the model's variables."""
        if self.backend == "jax":
            model = self.model
            owners = (model.trainable_variables, model.non_trainable_variables,
                      model.optimizer.variables, model.metrics_variables)
            for variables, values in zip(owners, self.state):
                for variable, value in zip(variables, values):
                    variable.assign(value)


def _recorded_steps(optimizer):
    return sorted(int(s) for s in optimizer.recorder.read()[0])


def _ring_steps(updates):
    """The updates a ring holds after each of `updates` recorded (every update records:
    update u goes to slot u mod RECORD_SLOTS)."""
    slots = {update % diagnostics.RECORD_SLOTS: update for update in updates}
    return sorted(slots.values())


def _speed_ratio(baseline, subject):
    return float(np.median(baseline) / np.median(subject))


def _ratio_interval(baseline, subject, rng, level=0.9, resamples=2000):
    """Bootstrap `level` interval of `_speed_ratio`, each group resampled on its own."""
    baseline, subject = np.asarray(baseline), np.asarray(subject)
    low_draws = rng.integers(0, len(baseline), (resamples, len(baseline)))
    high_draws = rng.integers(0, len(subject), (resamples, len(subject)))
    ratios = np.median(baseline[low_draws], axis=1) / np.median(subject[high_draws], axis=1)
    tail = (1 - level) / 2
    return [float(np.quantile(ratios, tail)), float(np.quantile(ratios, 1 - tail))]
