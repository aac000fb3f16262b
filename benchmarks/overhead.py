"""What the diagnostics callbacks cost in training speed.

Three copies of the same model and configuration, built from the same seed, train side by side
in one process: one without diagnostics, one with LearningRateLogger and GradientNormLogger at
update_freq=1, one at update_freq=100. After a warm-up epoch each (tracing and compiling), the
three take turns for `rounds` rounds of `steps` steps, so drifts in machine load touch all of
them alike; each variant's speed is the median over its rounds. Each round's clock starts after
its first step, so per-fit() set-up (writers opening, a retrace) does not count.
"""

import os
import statistics

import keras
import numpy as np

from benchmarks import runtime
from benchmarks.configs import CONFIGS
from benchmarks.training import EpochClock, build_model, compile_model, diagnostics_callbacks
from keras_momentum.optimizers import instrument

UPDATE_FREQS = (1, 100)


def measure_overhead(config, precision, dataset, *, batch_size, steps, rounds, log_dir, seed):
    """Returns steps/s without and with diagnostics, and their ratios, for results.json."""
    keras.backend.clear_session()
    samples = steps * batch_size
    x = np.resize(dataset.x_train, (samples, dataset.x_train.shape[1]))
    y = np.resize(dataset.y_train, (samples,))
    variants = {"without": None, **{f"update_freq_{freq}": freq for freq in UPDATE_FREQS}}
    models, callbacks = {}, {}
    with runtime.dtype_policy(precision):
        for name, freq in variants.items():
            keras.utils.set_random_seed(seed)
            optimizer = CONFIGS[config](steps, rounds + 1)
            models[name] = build_model()
            if freq is None:
                compile_model(models[name], optimizer)
                callbacks[name] = []
            else:
                compile_model(models[name], instrument(optimizer))
                callbacks[name] = diagnostics_callbacks(os.path.join(log_dir, name), freq)
        speeds = {name: [] for name in variants}
        for round_index in range(rounds + 1):
            for name, model in models.items():
                clock = EpochClock()
                model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
                          callbacks=[clock, *callbacks[name]])
                if round_index > 0:
                    # From the end of the first step: a callback may make fit() retrace.
                    seconds = clock.train_seconds[0] - clock.first_step_seconds[0]
                    speeds[name].append((steps - 1) / seconds)
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    return {
        "config": config,
        "precision": precision,
        "steps_per_measurement": steps,
        "rounds": rounds,
        "steps_per_second": medians,
        "steps_per_second_all": speeds,
        "ratio_with_to_without": {
            name: medians[name] / medians["without"] for name in variants if name != "without"
        },
    }


def format_overhead(result):
    """Lines for stdout: each update_freq's speed as a ratio to the speed without diagnostics."""
    base = result["steps_per_second"]["without"]
    lines = [
        f"Diagnostics overhead ({result['config']}, {result['precision']}, median of "
        f"{result['rounds']} x {result['steps_per_measurement']} steps, interleaved):",
        f"  without diagnostics      {base:8.1f} steps/s",
    ]
    for name, ratio in result["ratio_with_to_without"].items():
        speed = result["steps_per_second"][name]
        lines.append(
            f"  with, {name.replace('update_freq_', 'update_freq='):<18} {speed:8.1f} steps/s"
            f"  ratio {ratio:.3f}"
        )
    return "\n".join(lines)
