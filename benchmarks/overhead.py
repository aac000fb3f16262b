"""What the diagnostics callbacks cost in training speed.

Identical models (same configuration and seed) train side by side in one process: without
diagnostics, with LearningRateLogger and GradientNormLogger at update_freq=1, and at
update_freq=100. Each variant has `instances` separately built copies, because on this kind of
machine two identical models can differ by several percent for as long as they live (where
their buffers landed in memory); a variant's speed is the median over all its copies and
rounds, and the spread of the copies without diagnostics is reported as the noise floor.

Two settings are measured, because Keras runs batch-end callbacks differently in them:

* `alone`: the diagnostics are the only batch-level callbacks. They are `async_safe`, so Keras
  hands batch ends to a worker thread and the training loop does not wait for them.
* `beside_sync`: every model also has a batch-end callback that is not async-safe (as
  `keras.callbacks.TensorBoard` is); Keras then calls all batch ends in the training loop and
  waits for each batch's logs.

Copies are built in a rotated order: copy i of a setting builds the variants starting with
the i-th (`build_order`). In A/A tests (identical models without diagnostics, their train
functions timed side by side, 3 copies each) the models built after the first ran slower
than it: the second-built by 2.8, 2.5, 1.4 and 0.0 % in four runs, the last-built by up to
2.2 %. Always building the variant without diagnostics first would credit that to it.

The copies form groups: copy i of every variant of one setting. After a warm-up round
(tracing), every round runs each group, in an order shuffled per round, and within a group
each variant for `steps` steps back to back, in a shuffled order. A fit is timed from
`on_train_begin` to `on_train_end` by a callback with no batch hooks, so the callbacks' own
set-up and final writes count, and the timing itself changes nothing in how Keras dispatches.

On a shared machine one 100-step fit can run 10-15 % slower than the next for reasons
that have nothing to do with it (another process, a frequency change). Two figures are
reported per variant: the ratio of the median speeds over all copies and rounds, and the
median over all groups and rounds of the paired ratio (the variant's speed over the speed
without diagnostics in the same group and round, measured within about two seconds of
each other), which cancels load changes slower than a group.
"""

import os
import random
import statistics
import time

import keras
import numpy as np

from benchmarks import runtime
from benchmarks.configs import CONFIGS
from benchmarks.training import build_model, compile_model, diagnostics_callbacks
from keras_momentum.optimizers import instrument

UPDATE_FREQS = (1, 100)
SETTINGS = ("alone", "beside_sync")
IN_GRAPH = "in_graph_1"  # statistics of every update in the step, no logger


class FitClock(keras.callbacks.Callback):
    """Seconds from `on_train_begin` to `on_train_end`; no batch hooks."""

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start


class SyncBatchEnd(keras.callbacks.Callback):
    """A batch-end callback Keras must call in the training loop (not `async_safe`)."""

    def on_train_batch_end(self, batch, logs=None):
        return


def measure_overhead(config, precision, dataset, *, batch_size, steps, rounds, instances,
                     log_dir, seed, breakdown=False, progress=print):
    """Returns steps/s without and with diagnostics, and their ratios, for results.json.

    `breakdown=True` adds the variant `in_graph_1`: the statistics both loggers ask for,
    recorded on every update inside the train step, with no logger attached. Its cost is
    the in-graph part of update_freq=1's; the rest is the host's.
    """
    keras.backend.clear_session()
    samples = steps * batch_size
    x = np.resize(dataset.x_train, (samples, dataset.x_train.shape[1]))
    y = np.resize(dataset.y_train, (samples,))
    variants = {"without": None, **{f"update_freq_{freq}": freq for freq in UPDATE_FREQS}}
    if breakdown:
        variants[IN_GRAPH] = 1
    copies = []  # ((setting, variant), copy index, model, callbacks), built interleaved
    with runtime.dtype_policy(precision):
        for index in range(instances):
            for setting in SETTINGS:
                for name in build_order(list(variants), index):
                    freq = variants[name]
                    keras.utils.set_random_seed(seed)
                    model = build_model()
                    compile_model(model, instrument(CONFIGS[config](steps, rounds + 1)))
                    callbacks = [] if freq is None else diagnostics_callbacks(
                        os.path.join(log_dir, f"{setting}-{name}-{index}"), freq
                    )
                    if name == IN_GRAPH:
                        for callback in callbacks:
                            callback.set_model(model)  # asks the optimizer for statistics
                        callbacks = []
                    if setting == "beside_sync":
                        callbacks.append(SyncBatchEnd())
                    copies.append(((setting, name), index, model, callbacks))
        speeds = {(key, index): [] for key, index, _, _ in copies}
        groups = {}  # (setting, copy index) -> that copy of every variant
        for copy in copies:
            groups.setdefault((copy[0][0], copy[1]), []).append(copy)
        order = random.Random(seed)
        for round_index in range(rounds + 1):
            for group in order.sample(list(groups.values()), len(groups)):
                for key, index, model, callbacks in order.sample(group, len(group)):
                    clock = FitClock()
                    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
                              callbacks=[clock, *callbacks])
                    if round_index > 0:
                        speeds[(key, index)].append(steps / clock.seconds)
            if progress is not None:
                progress(f"  overhead round {round_index}/{rounds}"
                         + (" (warm-up)" if round_index == 0 else ""))
    # The in-graph copies prove their statistics were on: records they hold on the device.
    in_graph_records = [
        len(model.optimizer.read_records()["steps"])
        for (_, name), _, model, _ in copies if name == IN_GRAPH
    ]
    result = {
        "config": config,
        "precision": precision,
        "steps_per_measurement": steps,
        "rounds": rounds,
        "instances": instances,
        "steps_per_second": {},
        "ratio_with_to_without": {},
        "paired_ratio": {},
        "copy_ratios": {},
        "in_graph_records": min(in_graph_records) if in_graph_records else None,
        "steps_per_second_all": {
            f"{setting}-{name}-{index}": values
            for ((setting, name), index), values in speeds.items()
        },
    }
    for setting in SETTINGS:
        pooled = {
            name: [v for ((s, n), _), values in speeds.items() if (s, n) == (setting, name)
                   for v in values]
            for name in variants
        }
        medians = {name: statistics.median(values) for name, values in pooled.items()}
        base = medians["without"]
        result["steps_per_second"][setting] = medians
        result["ratio_with_to_without"][setting] = {
            name: medians[name] / base for name in variants if name != "without"
        }
        result["paired_ratio"][setting] = {
            name: statistics.median(
                with_ / without
                for i in range(instances)
                for with_, without in zip(speeds[((setting, name), i)],
                                          speeds[((setting, "without"), i)])
            )
            for name in variants if name != "without"
        }
        # Each copy's median over the pooled median without diagnostics; the spread of the
        # "without" copies is what identical models differ by.
        result["copy_ratios"][setting] = {
            name: [statistics.median(speeds[((setting, name), i)]) / base
                   for i in range(instances)]
            for name in variants
        }
    return result


def build_order(names, index):
    """The order in which copy `index` builds the variants `names`: rotated by `index`."""
    shift = index % len(names)
    return names[shift:] + names[:shift]


def format_overhead(result):
    """Lines for stdout: each update_freq's speed as a ratio to the speed without diagnostics."""
    lines = [
        f"Diagnostics overhead ({result['config']}, {result['precision']}, "
        f"{result['instances']} copies x {result['rounds']} rounds x "
        f"{result['steps_per_measurement']} steps, shuffled, median; ratio of medians to "
        "without, and median of the ratios paired in time):",
    ]
    titles = {"alone": "diagnostics the only batch callbacks",
              "beside_sync": "beside a synchronous batch callback"}
    for setting in SETTINGS:
        speeds = result["steps_per_second"][setting]
        copies = result["copy_ratios"][setting]
        lines.append(f"  {titles[setting]}:")
        lines.append(f"    without diagnostics  {speeds['without']:8.1f} steps/s"
                     f"{'':29}copies {_ratios(copies['without'])}")
        for name, ratio in result["ratio_with_to_without"][setting].items():
            label = "in graph only, uf=1" if name == IN_GRAPH else name.replace("_freq_", "_freq=")
            lines.append(
                f"    {label:<20} {speeds[name]:8.1f} steps/s  ratio {ratio:.3f}  "
                f"paired {result['paired_ratio'][setting][name]:.3f}  "
                f"copies {_ratios(copies[name])}"
            )
    return "\n".join(lines)


def _ratios(values):
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"
