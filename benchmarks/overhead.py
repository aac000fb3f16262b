"""What the diagnostics callbacks cost in training speed.

Each model is its own baseline: it trains alternately with the diagnostics attached
(LearningRateLogger and GradientNormLogger at one `update_freq`) and without them, and the
cost is the ratio of the two speeds. On this kind of machine two separately built identical
models can differ by several percent for as long as they live (where their buffers landed
in memory; in A/A tests the models built after the first ran up to 2.8 % slower than it),
which comparing two models would count as the diagnostics' cost. A `fit` without the
loggers after one with them runs the train function traced without statistics (the loggers
end their fit at `on_train_end`, `TrainFunctionSwitch`), whose graph is
that of an optimizer nobody asked for statistics; the only difference left is a Python call
per execution through the switch.

`instances` models per `update_freq` (statistics of two frequencies on one optimizer would
merge). With `breakdown=True`, `in_graph_1` models alternate between two train functions of
their own, with the statistics of every update (what both loggers record at
`update_freq=1`) and without, and no logger: the in-graph part of the cost; `hooks_1`
models run the recording function of `update_freq=1` in every fit, with the loggers and
without them: the host's part; and `a_a` models alternate between two statistics-free
train functions of their own, traced separately: the resolution of this design, since
two traces of one step can run at different speeds for as long as they live (where their
buffers landed); and `gradient_norms_1` models are fit with and without both loggers at
`update_freq=1`, `GradientNormLogger` leaving out the update ratio and the velocity norm,
so that the step reads the gradients only (not the weights or the velocities).

Two settings are measured, because Keras runs batch-end callbacks differently in them:

* `alone`: the diagnostics are the only batch-level callbacks. They are `async_safe`, so Keras
  hands batch ends to a worker thread and the training loop does not wait for them.
* `beside_sync`: every fit also has a batch-end callback that is not async-safe (as
  `keras.callbacks.TensorBoard` is); Keras then calls all batch ends in the training loop and
  waits for each batch's logs.

After a warm-up round (tracing both train functions of each model), every round takes
the models in an order shuffled per round, and fits each for `steps` steps with and
without, back to back in a shuffled order: the paired ratio (speed with over speed
without) compares two fits about a second apart, on the same buffers. A fit is timed from
the first `on_train_begin` to the last `on_train_end` (marks placed first and last among
its callbacks), so the loggers' set-up and final writes count. Reported per variant: the
median over all models and rounds of the paired ratios with a bootstrap 90 % interval of
that median (drawing models, then pairs within each drawn model, since a model's pairs
share its traces), the quartiles of the ratios, each model's median, and the ratio of
the median speeds.
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
A_A = "a_a"  # two statistics-free traces, no logger
HOOKS = "hooks_1"  # one recording function, with and without the loggers
GRADIENTS = "gradient_norms_1"  # no update ratio or velocity norm: one pass, over the gradients


class FitClock:
    """The seconds of one `fit`: `callbacks(inner)` puts marks before and after `inner`."""

    def __init__(self):
        self.begin = self.end = None
        clock = self

        class Begin(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                clock.begin = time.perf_counter()

        class End(keras.callbacks.Callback):
            def on_train_end(self, logs=None):
                clock.end = time.perf_counter()

        self._marks = (Begin(), End())

    def callbacks(self, inner):
        return [self._marks[0], *inner, self._marks[1]]

    @property
    def seconds(self):
        return self.end - self.begin


class SyncBatchEnd(keras.callbacks.Callback):
    """A batch-end callback Keras must call in the training loop (not `async_safe`)."""

    def on_train_batch_end(self, batch, logs=None):
        return


class _Subject:
    """One model of one setting and variant, fit with or without what the variant adds."""

    def __init__(self, setting, name, index, model, log_dir, update_freq):
        self.key = f"{setting}-{name}-{index}"
        self.setting, self.name, self.index, self.model = setting, name, index, model
        # In-graph models only let the loggers ask the optimizer for their statistics.
        options = {"update_ratio": False, "velocity_norm": False} if name == GRADIENTS else {}
        self.loggers = diagnostics_callbacks(log_dir, update_freq, **options)
        self._functions = None  # IN_GRAPH: (without statistics, with); A_A: two without

    def fit(self, x, y, batch_size, attached):
        """Seconds of one epoch over `x`, with (`attached`) or without the variant's part."""
        inner = self.loggers if attached else []
        if self.name in (IN_GRAPH, A_A):
            self.model.train_function = self._own_function(attached)
            inner = []
        elif self.name == HOOKS and not attached:
            # The function the loggers' switch calls, called without them.
            function = self.model.train_function
            self.model.train_function = getattr(function, "recording", function)
        if self.setting == "beside_sync":
            inner = [*inner, SyncBatchEnd()]
        clock = FitClock()
        self.model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
                       callbacks=clock.callbacks(inner))
        return clock.seconds

    def _own_function(self, second):
        if self._functions is None:
            model = self.model
            free = statistics_free(own_train_function(model), model.optimizer)
            if self.name == A_A:
                other = statistics_free(own_train_function(model), model.optimizer)
            else:
                for logger in self.loggers:
                    logger.set_model(model)  # asks the optimizer for what they record
                model.make_train_function(force=True)
                other = model.train_function
            self._functions = (free, other)
        return self._functions[second]


def own_train_function(model):
    """A train function of `model` traced from a train step of its own: `jax.jit` shares
    traces between wrappers of one function, so two train functions made from one train
    step would run one trace."""
    step = model.train_step
    model.train_step = lambda *args, **kwargs: step(*args, **kwargs)
    try:
        model.make_train_function(force=True)
        return model.train_function
    finally:
        del model.train_step


def statistics_free(function, optimizer):
    """`function` traced (at its first call) as the loggers' plain function is: with the
    optimizer's recorder, if any, not recording."""

    def call(*args, **kwargs):
        recorder = optimizer.recorder
        if recorder is None:
            return function(*args, **kwargs)
        recorder.tracing_records = False
        try:
            return function(*args, **kwargs)
        finally:
            recorder.tracing_records = True

    return call


def measure_overhead(config, precision, dataset, *, batch_size, steps, rounds, instances,
                     log_dir, seed, breakdown=False, progress=print):
    """Returns steps/s with and without diagnostics, and their ratios, for results.json.

    `breakdown=True` adds the variants `in_graph_1`, `hooks_1`, `a_a` and
    `gradient_norms_1` (see the module docstring).
    """
    keras.backend.clear_session()
    samples = steps * batch_size
    x = np.resize(dataset.x_train, (samples, dataset.x_train.shape[1]))
    y = np.resize(dataset.y_train, (samples,))
    variants = {f"update_freq_{freq}": freq for freq in UPDATE_FREQS}
    if breakdown:
        variants[IN_GRAPH] = variants[HOOKS] = variants[A_A] = variants[GRADIENTS] = 1
    subjects = []
    with runtime.dtype_policy(precision):
        for index in range(instances):
            for setting in SETTINGS:
                for name, update_freq in variants.items():
                    keras.utils.set_random_seed(seed)
                    model = build_model()
                    compile_model(model, instrument(CONFIGS[config](steps, rounds + 1)))
                    subjects.append(_Subject(setting, name, index, model, os.path.join(
                        log_dir, f"{setting}-{name}-{index}"), update_freq))
        speeds = {subject.key: {"with": [], "without": []} for subject in subjects}
        order = random.Random(seed)
        for round_index in range(rounds + 1):
            for subject in order.sample(subjects, len(subjects)):
                # The warm-up fits with the loggers first: the fit without them then
                # traces the statistics-free function, which the loggers' fit may not use.
                pair = [True, False] if round_index == 0 else order.sample([True, False], 2)
                for attached in pair:
                    seconds = subject.fit(x, y, batch_size, attached)
                    if round_index > 0:
                        speeds[subject.key]["with" if attached else "without"].append(
                            steps / seconds)
            if progress is not None:
                progress(f"  overhead round {round_index}/{rounds}"
                         + (" (warm-up)" if round_index == 0 else ""))
    # The in-graph models prove their statistics were on: records they hold on the device.
    in_graph_records = [
        len(subject.model.optimizer.recorder.read()[0])
        for subject in subjects if subject.name == IN_GRAPH
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
        "paired_ratio_quartiles": {},
        "paired_ratio_interval": {},
        "copy_ratios": {},
        "in_graph_records": min(in_graph_records) if in_graph_records else None,
        "steps_per_second_all": speeds,
    }
    for setting in SETTINGS:
        for field in ("steps_per_second", "ratio_with_to_without", "paired_ratio",
                      "paired_ratio_quartiles", "paired_ratio_interval", "copy_ratios"):
            result[field][setting] = {}
        for name in variants:
            runs = [speeds[f"{setting}-{name}-{index}"] for index in range(instances)]
            with_ = [v for run in runs for v in run["with"]]
            without = [v for run in runs for v in run["without"]]
            paired = [[a / b for a, b in zip(run["with"], run["without"])] for run in runs]
            pooled = [ratio for ratios in paired for ratio in ratios]
            medians = {"with": statistics.median(with_), "without": statistics.median(without)}
            result["steps_per_second"][setting][name] = medians
            result["ratio_with_to_without"][setting][name] = medians["with"] / medians["without"]
            result["paired_ratio"][setting][name] = statistics.median(pooled)
            result["paired_ratio_quartiles"][setting][name] = _quartiles(pooled)
            result["paired_ratio_interval"][setting][name] = clustered_median_interval(
                paired, seed)
            result["copy_ratios"][setting][name] = [statistics.median(r) for r in paired]
    return result


def clustered_median_interval(groups, seed, level=0.9, resamples=2000):
    """A bootstrap `level` interval of the median of all `groups`' values pooled, each
    resample drawing groups (models) with replacement, then values within each drawn group:
    a model's pairs share its traces' speeds, so they are not independent of each other.
    """
    rng = np.random.default_rng(seed)
    groups = [np.asarray(g, dtype=np.float64) for g in groups]
    medians = np.empty(resamples)
    for i in range(resamples):
        drawn = rng.integers(0, len(groups), len(groups))
        medians[i] = np.median(np.concatenate(
            [groups[g][rng.integers(0, len(groups[g]), len(groups[g]))] for g in drawn]))
    tail = (1 - level) / 2
    return [float(np.quantile(medians, tail)), float(np.quantile(medians, 1 - tail))]


def _quartiles(values):
    if len(values) < 2:
        return [values[0], values[0]]
    quartiles = statistics.quantiles(values, n=4)
    return [quartiles[0], quartiles[2]]


def format_overhead(result):
    """Lines for stdout: each variant's speed with over its speed without, paired per model."""
    lines = [
        f"Diagnostics overhead ({result['config']}, {result['precision']}, "
        f"{result['instances']} models per variant x {result['rounds']} rounds x "
        f"{result['steps_per_measurement']} steps, each model with and without back to back; "
        "median paired ratio (bootstrap 90 % interval of that median) [quartiles of the "
        "pairs], ratio of median speeds, each model's median):",
    ]
    titles = {"alone": "diagnostics the only batch callbacks",
              "beside_sync": "beside a synchronous batch callback"}
    for setting in SETTINGS:
        lines.append(f"  {titles[setting]}:")
        for name, paired in result["paired_ratio"][setting].items():
            label = {IN_GRAPH: "in graph only, uf=1", HOOKS: "hooks only, uf=1",
                     A_A: "A/A, no statistics", GRADIENTS: "grad. norms only, uf=1"}.get(
                name, name.replace("_freq_", "_freq="))
            speeds = result["steps_per_second"][setting][name]
            low, high = result["paired_ratio_quartiles"][setting][name]
            below, above = result["paired_ratio_interval"][setting][name]
            lines.append(
                f"    {label:<20} {speeds['with']:7.1f} / {speeds['without']:7.1f} steps/s  "
                f"paired {paired:.3f} ({below:.3f}-{above:.3f}) [{low:.3f}, {high:.3f}]  "
                f"ratio {result['ratio_with_to_without'][setting][name]:.3f}  "
                f"models {_ratios(result['copy_ratios'][setting][name])}"
            )
    return "\n".join(lines)


def _ratios(values):
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"
